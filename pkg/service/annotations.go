package service

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// Labels and annotations the model reads.
const (
	// ProxyNameLabel hands a Service to another proxy (as kube-proxy, edgeplane leaves it alone),
	// unless its value is ProxyName.
	ProxyNameLabel = "service.kubernetes.io/service-proxy-name"
	// ProxyName is the value of ProxyNameLabel that edgeplane takes as its own.
	ProxyName = "edgeplane"
	// TopologyAnnotation is OpenYurt's service topology: TopologyHostname, TopologyNodePool or
	// TopologyZone (an alias of TopologyNodePool).
	TopologyAnnotation = "openyurt.io/topologyKeys"
	TopologyHostname   = "kubernetes.io/hostname"
	TopologyNodePool   = "openyurt.io/nodepool"
	TopologyZone       = "kubernetes.io/zone"
	// ListenAnnotation is OpenYurt's NodePort isolation: which pools' nodes listen on the
	// Service's node ports (ParseListen).
	ListenAnnotation = "nodeport.openyurt.io/listen"
	// ZoneLabel is the well-known zone label of nodes (trafficDistribution).
	ZoneLabel = api.LabelTopologyZone
)

// Topology restricts the endpoints a node may use to those near it (TopologyAnnotation).
type Topology int

const (
	TopologyNone Topology = iota // every endpoint
	TopologyNode                 // endpoints on this node
	TopologyPool                 // endpoints on nodes of this node's pool
)

func (t Topology) String() string {
	switch t {
	case TopologyNone:
		return "none"
	case TopologyNode:
		return "node"
	case TopologyPool:
		return "pool"
	}
	return fmt.Sprintf("topology(%d)", int(t))
}

// TopologyOf reads the Service's TopologyAnnotation: absent or empty is TopologyNone; a value
// other than the three OpenYurt knows is an error (OpenYurt ignores it; edgeplane says so).
func TopologyOf(svc *api.Service) (Topology, error) {
	v, ok := svc.Annotations[TopologyAnnotation]
	if !ok {
		return TopologyNone, nil
	}
	switch strings.TrimSpace(v) {
	case "":
		return TopologyNone, nil
	case TopologyHostname:
		return TopologyNode, nil
	case TopologyNodePool, TopologyZone:
		return TopologyPool, nil
	}
	return TopologyNone, fmt.Errorf("annotation %s=%q: want %s (same node), %s or %s (same node pool)",
		TopologyAnnotation, v, TopologyHostname, TopologyNodePool, TopologyZone)
}

// Listen is a parsed ListenAnnotation: which node pools listen on a Service's node ports. The
// zero value is "no annotation": every node listens.
type Listen struct {
	set   bool            // the annotation is present
	all   bool            // "*" enables pools the list does not name
	pools map[string]bool // named pools: enabled or disabled, by first mention
}

// ListenEverywhere and ListenNowhere are the two rules that do not depend on the pool: every
// node listens, or only nodes in no pool do.
var (
	ListenEverywhere = Listen{set: true, all: true}
	ListenNowhere    = Listen{set: true}
)

// Listening says whether a node of pool (empty: in no pool) listens.
//
// The grammar (ParseListen) is OpenYurt's: "pool" enables a pool, "-pool" disables it, "*"
// enables every pool; the first mention of a name wins, and a pool named explicitly is decided by
// that mention wherever "*" stands; pools not listed are disabled. Nodes in no pool listen as in
// plain Kubernetes, whatever the annotation says.
func (l Listen) Listening(pool string) bool {
	if !l.set || pool == "" {
		return true
	}
	if enabled, named := l.pools[pool]; named {
		return enabled
	}
	return l.all
}

// Set reports whether the Service carries the annotation.
func (l Listen) Set() bool { return l.set }

func (l Listen) String() string {
	if !l.set {
		return "<all nodes>"
	}
	var items []string
	if l.all {
		items = append(items, "*")
	}
	for _, p := range sortedKeys(l.pools) {
		if l.pools[p] {
			items = append(items, p)
		} else {
			items = append(items, "-"+p)
		}
	}
	return strings.Join(items, ",")
}

// Equal reports whether two rules decide every pool alike.
func (l Listen) Equal(o Listen) bool {
	if l.set != o.set || l.all != o.all || len(l.pools) != len(o.pools) {
		return false
	}
	for p, e := range l.pools {
		if oe, ok := o.pools[p]; !ok || oe != e {
			return false
		}
	}
	return true
}

// ListenOf reads the Service's ListenAnnotation (absent: every node listens). It applies only to
// NodePort and LoadBalancer Services; Frontends ignores it on others.
func ListenOf(svc *api.Service) (Listen, error) {
	v, ok := svc.Annotations[ListenAnnotation]
	if !ok {
		return Listen{}, nil
	}
	l, err := ParseListen(v)
	if err != nil {
		return ListenNowhere, fmt.Errorf("annotation %s=%q: %w", ListenAnnotation, v, err)
	}
	return l, nil
}

// ParseListen parses a ListenAnnotation value:
//
//	value = "" | item *("," item)
//	item  = [spaces] ["-"] (pool | "*") [spaces]
//
// where pool is a label value (the pool label's value: at most 63 characters, alphanumerics, '-',
// '_', '.', starting and ending with an alphanumeric). The empty value lists no pool: no pool
// listens (OpenYurt's reading). An empty item ("a,,b", "a,", only spaces) is an error, as is any
// other character: a typo must not silently open or close a node port.
func ParseListen(value string) (Listen, error) {
	l := Listen{set: true, pools: map[string]bool{}}
	if value == "" {
		return l, nil
	}
	allSeen := false
	for i, raw := range strings.Split(value, ",") {
		item := strings.TrimSpace(raw)
		name, disabled := strings.CutPrefix(item, "-")
		switch {
		case item == "":
			return ListenNowhere, fmt.Errorf("item %d is empty", i+1)
		case name == "":
			return ListenNowhere, fmt.Errorf("item %d %q names no pool", i+1, item)
		case name == "*":
			if !allSeen {
				allSeen, l.all = true, !disabled
			}
		default:
			if len(validation.IsValidLabelValue(name)) > 0 {
				return ListenNowhere, fmt.Errorf("item %d %q: %q is not a node pool name (a label value: at most 63 characters, alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)", i+1, item, name)
			}
			if _, seen := l.pools[name]; !seen {
				l.pools[name] = !disabled
			}
		}
	}
	return l, nil
}

// Policy is what a Service's OpenYurt annotations ask of this node, once read; the reconciler
// decides what applies when an annotation does not parse (the last valid value).
type Policy struct {
	Topology Topology
	Listen   Listen
}

// Ignored says why edgeplane does not program a Service at all, if it does not: it belongs to
// another proxy (ProxyNameLabel present, even empty, as kube-proxy reads it, and not ProxyName),
// it is an ExternalName, or it is headless.
func Ignored(svc *api.Service) (string, bool) {
	if name, ok := svc.Labels[ProxyNameLabel]; ok && name != ProxyName {
		return fmt.Sprintf("label %s=%q hands it to another proxy", ProxyNameLabel, name), true
	}
	switch {
	case svc.Spec.Type == api.ServiceTypeExternalName:
		return "an ExternalName Service is a DNS name", true
	case svc.Spec.ClusterIP == api.ClusterIPNone:
		return "a headless Service has no virtual IP", true
	}
	return "", false
}
