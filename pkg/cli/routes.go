package cli

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/maps/routes"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// routeInfo is one routes_map entry (JSON schema in docs/cli.md).
type routeInfo struct {
	Prefix string `json:"prefix"`
	NodeIP string `json:"nodeIP"`
	// ThisNode: NodeIP is this node's own address (node_cfg_map, else node.json).
	ThisNode   bool     `json:"thisNode"`
	Encap      string   `json:"encap"`      // "vxlan", "direct" or "encap(<n>)"
	Domain     uint32   `json:"domain"`     // the owning node's network domain ID
	DomainName string   `json:"domainName"` // its name in domains_map; "" when unknown
	Flags      []string `json:"flags"`      // "local": this node's pod CIDR (deliver locally or drop)
	// The owning node's name and pool, from the name index (names/nodes.json): "" when unknown,
	// comma-separated when several nodes share the tunnel endpoint.
	NodeName string `json:"nodeName"`
	Pool     string `json:"pool"`
}

// nodeCell is the NODE column: the node's name, else "local" for this node's address, else "-".
func (r *routeInfo) nodeCell() string {
	switch {
	case r.NodeName != "":
		return r.NodeName
	case r.ThisNode:
		return "local"
	}
	return "-"
}

func newRoutesCommand(e *env) *cobra.Command {
	var filter ipFilter
	var domain domainFilter
	var byName nameFilter
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "List pod CIDR routes: prefix -> owning node and pool, encapsulation, domain",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			rs, err := e.listRoutes(&filter, &domain, &byName)
			if err != nil {
				return err
			}
			return e.print(rs, func(w io.Writer) {
				row(w, "PREFIX", "NODE-IP", "NODE", "POOL", "ENCAP", "DOMAIN", "FLAGS")
				for _, r := range rs {
					row(w, r.Prefix, r.NodeIP, r.nodeCell(), orDash(r.Pool), r.Encap, orID(r.DomainName, r.Domain), orDash(strings.Join(r.Flags, ",")))
				}
			})
		},
	}
	cmd.Flags().Var(&filter, "ip", ipFlagUsage+" (routes whose prefix overlaps it)")
	cmd.Flags().StringVar(&domain.name, "domain", "", domainFlagUsage)
	_ = cmd.RegisterFlagCompletionFunc("domain", e.completeDomains)
	byName.register(cmd, e, "routes")
	return cmd
}

func (e *env) listRoutes(filter *ipFilter, domain *domainFilter, byName *nameFilter) ([]routeInfo, error) {
	m, err := open(e, routes.MapName, routes.Open)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	domains, err := e.readDomainNames()
	if err != nil {
		return nil, err
	}
	self := e.localNodeIP()
	nodes := e.nodes()
	type described struct {
		info  routeInfo
		nodes []nameindex.Node
	}
	ds, err := listSorted(m.Iterate, filter.overlaps, comparePrefixes, func(p netip.Prefix, r routes.Route) described {
		return described{describeRoute(self, domains, nodes, p, r), nodes.routeNodes(p, r.NodeIP.Addr())}
	})
	if err != nil {
		return nil, err
	}
	inDomain := domain.matcher(domains)
	rs := make([]routeInfo, 0, len(ds))
	for _, d := range ds {
		if inDomain(d.info.Domain) && byName.match(d.nodes) {
			rs = append(rs, d.info)
		}
	}
	return rs, nil
}

// describeRoute decodes one routes_map entry; self is this node's IP (see localNodeIP).
func describeRoute(self netip.Addr, domains *domainNames, nodes *nodeIndex, p netip.Prefix, r routes.Route) routeInfo {
	info := routeInfo{
		Prefix: p.String(), NodeIP: r.NodeIP.String(),
		ThisNode: self.IsValid() && r.NodeIP.Addr() == self,
		Encap:    encapName(r.Encap), Domain: r.Domain, DomainName: domains.name(r.Domain),
		Flags: routeFlags(r.Flags),
	}
	info.NodeName, info.Pool = nodeCells(nodes.routeNodes(p, r.NodeIP.Addr()))
	return info
}

// comparePrefixes orders by address, then shorter prefixes first.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func encapName(encap uint8) string {
	switch encap {
	case routes.EncapVXLAN:
		return "vxlan"
	case routes.EncapDirect:
		return "direct"
	}
	return fmt.Sprintf("encap(%d)", encap)
}

func routeFlags(f uint8) []string {
	out := []string{}
	if f&routes.FlagLocal != 0 {
		out = append(out, "local")
	}
	if rest := f &^ routes.FlagLocal; rest != 0 {
		out = append(out, fmt.Sprintf("%#x", rest))
	}
	return out
}
