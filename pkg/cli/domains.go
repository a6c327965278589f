package cli

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/domainid"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
)

// Connectivity of a domain as seen from this node, in domain_reachable()'s terms (bpf/lib/domains.h).
const (
	connLocal   = "local"   // this node's own domain (node_cfg_map): always reachable, no lookup
	connPrivate = "private" // a private line joins it to this node's domain (DOMAIN_REACHABLE)
	connPublic  = "public"  // not reachable: pod_egress drops DOMAIN_UNREACHABLE (also when not in the map)
)

// warnIsolatedGateway is the domains verb's warning for a cloud gateway nothing can reach.
const warnIsolatedGateway = "cloud gateway without a private line: it cannot carry cloud hosts' traffic to edge pods"

// domainsResult is the domains verb's output (JSON schema in docs/cli.md).
type domainsResult struct {
	Ready    bool            `json:"ready"` // node_cfg_map written by the agent
	Node     *nodeDomainInfo `json:"node"`  // null when not ready
	Warnings []string        `json:"warnings"`
	Domains  []domainInfo    `json:"domains"`
}

// nodeDomainInfo is this node's side of the domains: node_cfg_map's domain fields.
type nodeDomainInfo struct {
	Domain       uint32 `json:"domain"`
	DomainName   string `json:"domainName"`   // "" when domains_map has no name for it
	CloudGateway bool   `json:"cloudGateway"` // this node is its domain's cloud gateway
	// GatewayIP is its domain's cloud gateway when that is another node: the agent routes the pod
	// CIDRs of other reachable domains through it in the kernel (host traffic only).
	GatewayIP string `json:"gatewayIP"`
}

// domainInfo is one domains_map entry.
type domainInfo struct {
	ID           uint32   `json:"id"`
	Name         string   `json:"name"`
	ThisNode     bool     `json:"thisNode"`     // node_cfg_map's domain
	Reachable    bool     `json:"reachable"`    // this node's pods may reach its pods
	Connectivity string   `json:"connectivity"` // connLocal, connPrivate or connPublic
	Flags        []string `json:"flags"`        // as the agent wrote them: "reachable", "local"
}

func newDomainsCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "domains",
		Aliases: []string{"domain"},
		Short:   "List network domains and whether this node's pods can reach them",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			res, err := e.listDomains()
			if err != nil {
				return err
			}
			return e.print(res, func(w io.Writer) { domainsTable(w, res) })
		},
	}
}

func (e *env) listDomains() (*domainsResult, error) {
	m, err := open(e, domainsmap.MapName, domainsmap.OpenReadOnly)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	all, err := m.List()
	if err != nil {
		return nil, err
	}
	cfg, err := e.readNodeCfg()
	if err != nil {
		return nil, err
	}
	names := &domainNames{byID: all, pinned: true}
	res := &domainsResult{Ready: cfg.Flags&nodecfg.FlagReady != 0, Warnings: []string{}, Domains: []domainInfo{}}
	if res.Ready {
		res.Node = &nodeDomainInfo{Domain: cfg.Domain, DomainName: names.name(cfg.Domain),
			CloudGateway: cfg.Flags&nodecfg.FlagGateway != 0}
		if cfg.GatewayIP != (maps.IPv4{}) {
			res.Node.GatewayIP = cfg.GatewayIP.String()
		}
	}
	privateLine := false
	for id, d := range all {
		info := describeDomain(res.Node, id, d)
		privateLine = privateLine || info.Connectivity == connPrivate
		res.Domains = append(res.Domains, info)
	}
	slices.SortFunc(res.Domains, func(a, b domainInfo) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	if res.Node != nil && res.Node.CloudGateway && !privateLine {
		res.Warnings = append(res.Warnings, warnIsolatedGateway)
	}
	return res, nil
}

// describeDomain decides connectivity as domain_reachable() does; before the agent has written
// node_cfg_map (node nil) the map's own local flag tells which domain is this node's.
func describeDomain(node *nodeDomainInfo, id uint32, d domainsmap.Domain) domainInfo {
	info := domainInfo{ID: id, Name: d.NameString(), Flags: domainFlags(d.Flags)}
	if node != nil {
		info.ThisNode = id == node.Domain
	} else {
		info.ThisNode = d.Local()
	}
	switch {
	case info.ThisNode:
		info.Connectivity = connLocal
	case d.Reachable():
		info.Connectivity = connPrivate
	default:
		info.Connectivity = connPublic
	}
	info.Reachable = info.Connectivity != connPublic
	return info
}

func domainsTable(w io.Writer, res *domainsResult) {
	if n := res.Node; n == nil {
		row(w, "state", "NOT READY: the agent has not programmed this node (node_cfg_map)")
	} else {
		row(w, "node domain", domainCell(n.DomainName, n.Domain))
		switch {
		case n.CloudGateway:
			row(w, "cloud gateway", "this node: cloud hosts' traffic to other domains' pods enters the overlay here")
		case n.GatewayIP != "":
			row(w, "cloud gateway", n.GatewayIP+": this node's host traffic to other domains' pods is routed through it")
		default:
			row(w, "cloud gateway", "none in this domain")
		}
	}
	for _, warning := range res.Warnings {
		row(w, "warning", warning)
	}
	fmt.Fprintln(w)
	row(w, "ID", "NAME", "CONNECTIVITY", "FLAGS")
	for _, d := range res.Domains {
		row(w, domainIDString(d.ID), orDash(d.Name), d.Connectivity, orDash(strings.Join(d.Flags, ",")))
	}
}

// domainCell is "name (0x...)", or the bare hex ID when the name is unknown.
func domainCell(name string, id uint32) string {
	if name == "" {
		return domainIDString(id)
	}
	return fmt.Sprintf("%s (%s)", name, domainIDString(id))
}

// domainIDString is how tables show a domain ID: fixed-width hex, as it is an FNV-1a hash.
func domainIDString(id uint32) string { return fmt.Sprintf("0x%08x", id) }

func domainFlags(f uint32) []string {
	out := []string{}
	if f&domainsmap.FlagReachable != 0 {
		out = append(out, "reachable")
	}
	if f&domainsmap.FlagLocal != 0 {
		out = append(out, "local")
	}
	if rest := f &^ (domainsmap.FlagReachable | domainsmap.FlagLocal); rest != 0 {
		out = append(out, fmt.Sprintf("%#x", rest))
	}
	return out
}

// domainNames resolves the domain IDs that routes, nodes and node_cfg_map carry to the names the
// agent stored in domains_map.
type domainNames struct {
	byID   map[uint32]domainsmap.Domain
	pinned bool // false: no domains_map, an agent older than network domains
}

// readDomainNames reads domains_map; a map that is not pinned leaves every domain unnamed, so
// verbs that only decorate IDs with names keep working against an older agent.
func (e *env) readDomainNames() (*domainNames, error) {
	m, err := domainsmap.OpenReadOnly(e.root)
	if errors.Is(err, fs.ErrNotExist) {
		return &domainNames{}, nil
	}
	if err != nil {
		return nil, e.pinError(domainsmap.MapName, err)
	}
	defer m.Close()
	all, err := m.List()
	if err != nil {
		return nil, err
	}
	return &domainNames{byID: all, pinned: true}, nil
}

// name is domain id's stored name, "" when domains_map has none.
func (n *domainNames) name(id uint32) string { return n.byID[id].NameString() }

// label is how tables show domain id: its name, else its hex ID.
func (n *domainNames) label(id uint32) string { return orID(n.name(id), id) }

// orID shows a domain by name, or by its hex ID when the name is unknown.
func orID(name string, id uint32) string {
	if name == "" {
		return domainIDString(id)
	}
	return name
}

// defaultDomainName is pkg/domain.Default, the name of domain ID 0 (nodes in no pool). Not
// imported from there: pkg/domain brings the Kubernetes API types into this binary.
const defaultDomainName = "default"

// domainFilter is --domain: a domain name as domains and the DOMAIN columns show it ("" matches
// everything).
type domainFilter struct{ name string }

// matcher returns whether a domain ID is the one the filter names: a domains_map entry of that
// name, the ID every node derives from the name (so filtering works for domains the map does not
// name, or without the map), or a hex ID as the tables show unnamed domains.
func (f *domainFilter) matcher(names *domainNames) func(uint32) bool {
	if f.name == "" {
		return func(uint32) bool { return true }
	}
	want := map[uint32]bool{}
	for id, d := range names.byID {
		if d.NameString() == f.name {
			want[id] = true
		}
	}
	switch hex, ok := strings.CutPrefix(f.name, "0x"); {
	case ok:
		if id, err := strconv.ParseUint(hex, 16, 32); err == nil {
			want[uint32(id)] = true
		}
	case f.name == defaultDomainName:
		want[domainid.Default] = true
	default:
		want[domainid.Of(f.name)] = true
	}
	return func(id uint32) bool { return want[id] }
}

const domainFlagUsage = "only entries of this network domain (a name as 'edgeplanectl domains' lists it, or a hex ID)"

// completeDomains offers the names in domains_map for --domain.
func (e *env) completeDomains(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	var out []string
	if names, err := e.readDomainNames(); err == nil {
		for _, d := range names.byID {
			if name := d.NameString(); name != "" {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}
