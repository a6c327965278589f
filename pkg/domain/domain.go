// Package domain is edgeplane's model of an edge cluster's network domains: node pools (a node
// label), the domains they form, the connectivity between each pair of domains (public or
// private), the cloud gateway, and each domain's encapsulation (vxlan, or route mode with its BGP
// peers: routing.go). It is configured by a ConfigMap the agent watches; see docs/domains.md.
package domain

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/edgeplane/edgeplane/pkg/domainid"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const (
	// DefaultPoolLabel is OpenYurt's node pool label, the default of Config.PoolLabel.
	DefaultPoolLabel = "apps.openyurt.io/nodepool"
	// CloudGatewayLabel marks the cloud node that carries cloud hosts' traffic to edge pods.
	CloudGatewayLabel = "node-role.alibabacloud.com/cloud-gateway"
	// Default is the domain of nodes in no pool (domainid.Default in the maps).
	Default = "default"
	// ConfigKey is the ConfigMap key that holds the Config as YAML.
	ConfigKey = "config.yaml"
)

// Connectivity between two domains.
type Connectivity string

const (
	// Public: the domains reach each other only over the internet; no pod traffic crosses.
	Public Connectivity = "public"
	// Private: a private line (Express Connect, VPN) joins them; VXLAN crosses it.
	Private Connectivity = "private"
)

// Config is the ConfigMap's config.yaml.
type Config struct {
	// PoolLabel is the node label that names a node's pool (default apps.openyurt.io/nodepool).
	PoolLabel string `json:"poolLabel,omitempty"`
	// DefaultConnectivity applies to pairs of domains the table does not list (default public).
	DefaultConnectivity Connectivity `json:"defaultConnectivity,omitempty"`
	// Domains groups pools into one domain and sets a domain's encapsulation: domain name -> its
	// pools (a list) or a DomainSpec. A pool not listed is a domain of its own, named after the
	// pool.
	Domains Domains `json:"domains,omitempty"`
	// Connectivity is the per-pair table.
	Connectivity []Link `json:"connectivity,omitempty"`
}

// Link sets the connectivity between two domains (in both directions).
type Link struct {
	Domains []string     `json:"domains"`
	Mode    Connectivity `json:"mode"`
}

// Model is a validated Config, ready to answer questions. The zero value is not valid; use Parse or
// DefaultModel.
type Model struct {
	poolLabel   string
	defaultMode Connectivity
	poolDomain  map[string]string
	pairs       map[[2]string]Connectivity
	configured  []string // domain names the config mentions, sorted
	routing     map[string]routing
}

// DefaultModel is the model without a ConfigMap: every pool its own domain, all pairs public.
func DefaultModel() *Model {
	m, _ := New(Config{}) // cannot fail
	return m
}

// Parse reads and validates config.yaml. Unknown fields are errors: a typo must not silently turn
// a private line public.
func Parse(data []byte) (*Model, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", ConfigKey, err)
	}
	m, err := New(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ConfigKey, err)
	}
	return m, nil
}

// New validates c.
func New(c Config) (*Model, error) {
	m := &Model{
		poolLabel:   c.PoolLabel,
		defaultMode: c.DefaultConnectivity,
		poolDomain:  map[string]string{},
		pairs:       map[[2]string]Connectivity{},
		routing:     map[string]routing{},
	}
	if m.poolLabel == "" {
		m.poolLabel = DefaultPoolLabel
	}
	if m.defaultMode == "" {
		m.defaultMode = Public
	}
	var errs []error
	if msgs := validation.IsQualifiedName(m.poolLabel); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("poolLabel %q: %s", m.poolLabel, strings.Join(msgs, "; ")))
	}
	if err := checkMode(m.defaultMode); err != nil {
		errs = append(errs, fmt.Errorf("defaultConnectivity: %w", err))
	}
	seen := map[string]bool{}
	mention := func(name string) {
		if !seen[name] {
			seen[name] = true
			m.configured = append(m.configured, name)
		}
	}
	for _, name := range sortedKeys(c.Domains) {
		if err := checkName(name); err != nil {
			errs = append(errs, fmt.Errorf("domains: %w", err))
			continue
		}
		mention(name)
		spec := c.Domains[name]
		if r, err := newRouting(spec); err != nil {
			errs = append(errs, prefixed("domains."+name+": ", err)...)
		} else if r.encap != VXLAN {
			m.routing[name] = r
		}
		for _, pool := range spec.Pools {
			if msgs := validation.IsValidLabelValue(pool); len(msgs) > 0 || pool == "" {
				errs = append(errs, fmt.Errorf("domains.%s: pool %q is not a label value", name, pool))
				continue
			}
			if other, dup := m.poolDomain[pool]; dup && other != name {
				errs = append(errs, fmt.Errorf("domains: pool %q is in both %s and %s", pool, other, name))
				continue
			}
			m.poolDomain[pool] = name
		}
	}
	for i, l := range c.Connectivity {
		if len(l.Domains) != 2 || l.Domains[0] == l.Domains[1] {
			errs = append(errs, fmt.Errorf("connectivity[%d]: domains must name two different domains, got %q", i, l.Domains))
			continue
		}
		if err := checkMode(l.Mode); err != nil {
			errs = append(errs, fmt.Errorf("connectivity[%d]: %w", i, err))
			continue
		}
		bad := false
		for _, name := range l.Domains {
			if err := checkName(name); err != nil {
				errs = append(errs, fmt.Errorf("connectivity[%d]: %w", i, err))
				bad = true
			}
		}
		if bad {
			continue
		}
		k := pairKey(l.Domains[0], l.Domains[1])
		if prev, dup := m.pairs[k]; dup && prev != l.Mode {
			errs = append(errs, fmt.Errorf("connectivity[%d]: %s <-> %s is both %s and %s", i, k[0], k[1], prev, l.Mode))
			continue
		}
		m.pairs[k] = l.Mode
		mention(k[0])
		mention(k[1])
	}
	if err := checkIDs(m.configured); err != nil {
		errs = append(errs, err)
	}
	slices.Sort(m.configured)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

func checkMode(c Connectivity) error {
	if c != Public && c != Private {
		return fmt.Errorf("connectivity %q: want %q or %q", c, Public, Private)
	}
	return nil
}

// checkName accepts what a pool name may be (domains are often named after a pool) and what fits
// the datapath's name field.
func checkName(name string) error {
	if msgs := validation.IsValidLabelValue(name); len(msgs) > 0 || name == "" {
		return fmt.Errorf("domain name %q is not a label value (at most 63 characters, alphanumerics, '-', '_', '.')", name)
	}
	return nil
}

// checkIDs refuses names whose datapath IDs collide (FNV-1a; unlikely, but then two domains would
// be one to the programs).
func checkIDs(names []string) error {
	byID := map[uint32]string{}
	for _, n := range names {
		id := ID(n)
		if other, ok := byID[id]; ok && other != n {
			return fmt.Errorf("domains %q and %q have the same datapath ID %#x: rename one", other, n, id)
		}
		byID[id] = n
	}
	return nil
}

// CheckIDs is checkIDs for names found at run time (pools appear with nodes).
func CheckIDs(names []string) error { return checkIDs(names) }

func pairKey(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// ID is the ID every node gives the domain name in the datapath (pkg/domainid): domainid.Default
// for the Default domain (or ""), else domainid.Of(name), never domainid.Default. checkIDs refuses
// two names with the same ID.
func ID(name string) uint32 {
	if name == Default {
		return domainid.Default
	}
	return domainid.Of(name)
}

// PoolLabel is the label key that names a node's pool.
func (m *Model) PoolLabel() string { return m.poolLabel }

// DefaultConnectivity is the connectivity of pairs the table does not list.
func (m *Model) DefaultConnectivity() Connectivity { return m.defaultMode }

// Configured are the domain names the configuration mentions, sorted.
func (m *Model) Configured() []string { return slices.Clone(m.configured) }

// PoolOf is the pool of a node with these labels, if it is in one.
func (m *Model) PoolOf(nodeLabels labels.Labels) (string, bool) {
	pool := nodeLabels.Get(m.poolLabel)
	return pool, pool != ""
}

// DomainOfPool is the domain a pool belongs to: its group, else the pool itself; "" -> Default.
func (m *Model) DomainOfPool(pool string) string {
	if pool == "" {
		return Default
	}
	if d, ok := m.poolDomain[pool]; ok {
		return d
	}
	return pool
}

// DomainOf is the domain of a node with these labels.
func (m *Model) DomainOf(nodeLabels labels.Labels) string {
	pool, _ := m.PoolOf(nodeLabels)
	return m.DomainOfPool(pool)
}

// Between is the connectivity between domains a and b; a domain reaches itself.
func (m *Model) Between(a, b string) Connectivity {
	if a == b {
		return Private
	}
	if c, ok := m.pairs[pairKey(a, b)]; ok {
		return c
	}
	return m.defaultMode
}

// Reachable reports whether pods in domain a and pods in domain b reach each other.
func (m *Model) Reachable(a, b string) bool { return m.Between(a, b) == Private }

// IsGateway reports whether a node with these labels carries the cloud gateway label.
func IsGateway(nodeLabels labels.Labels) bool {
	return nodeLabels.Has(CloudGatewayLabel)
}

// Equal reports whether two models answer every question alike.
func (m *Model) Equal(o *Model) bool {
	if m == nil || o == nil {
		return m == o
	}
	return m.poolLabel == o.poolLabel && m.defaultMode == o.defaultMode &&
		maps.Equal(m.poolDomain, o.poolDomain) && maps.Equal(m.pairs, o.pairs) &&
		maps.EqualFunc(m.routing, o.routing, routing.equal)
}
