package cli

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/maps/routes"
)

// routeInfo is one routes_map entry (JSON schema in docs/cli.md).
type routeInfo struct {
	Prefix string `json:"prefix"`
	NodeIP string `json:"nodeIP"`
	// ThisNode: NodeIP is this node's own address (node_cfg_map, else node.json). Names of other
	// nodes are not in the maps.
	ThisNode   bool     `json:"thisNode"`
	Encap      string   `json:"encap"`      // "vxlan", "direct" or "encap(<n>)"
	Domain     uint32   `json:"domain"`     // the owning node's network domain ID
	DomainName string   `json:"domainName"` // its name in domains_map; "" when unknown
	Flags      []string `json:"flags"`      // "local": this node's pod CIDR (deliver locally or drop)
}

func newRoutesCommand(e *env) *cobra.Command {
	var filter ipFilter
	var domain domainFilter
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "List pod CIDR routes: prefix -> owning node, encapsulation, domain",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			rs, err := e.listRoutes(&filter, &domain)
			if err != nil {
				return err
			}
			return e.print(rs, func(w io.Writer) {
				row(w, "PREFIX", "NODE-IP", "NODE", "ENCAP", "DOMAIN", "FLAGS")
				for _, r := range rs {
					node := "-"
					if r.ThisNode {
						node = "local"
					}
					row(w, r.Prefix, r.NodeIP, node, r.Encap, orID(r.DomainName, r.Domain), orDash(strings.Join(r.Flags, ",")))
				}
			})
		},
	}
	cmd.Flags().Var(&filter, "ip", ipFlagUsage+" (routes whose prefix overlaps it)")
	cmd.Flags().StringVar(&domain.name, "domain", "", domainFlagUsage)
	_ = cmd.RegisterFlagCompletionFunc("domain", e.completeDomains)
	return cmd
}

func (e *env) listRoutes(filter *ipFilter, domain *domainFilter) ([]routeInfo, error) {
	m, err := open(e, routes.MapName, routes.Open)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	names, err := e.readDomainNames()
	if err != nil {
		return nil, err
	}
	self := e.localNodeIP()
	rs, err := listSorted(m.Iterate, filter.overlaps, comparePrefixes, func(p netip.Prefix, r routes.Route) routeInfo {
		return describeRoute(self, names, p, r)
	})
	if err != nil {
		return nil, err
	}
	inDomain := domain.matcher(names)
	return slices.DeleteFunc(rs, func(r routeInfo) bool { return !inDomain(r.Domain) }), nil
}

// describeRoute decodes one routes_map entry; self is this node's IP (see localNodeIP).
func describeRoute(self netip.Addr, names *domainNames, p netip.Prefix, r routes.Route) routeInfo {
	return routeInfo{
		Prefix: p.String(), NodeIP: r.NodeIP.String(),
		ThisNode: self.IsValid() && r.NodeIP.Addr() == self,
		Encap:    encapName(r.Encap), Domain: r.Domain, DomainName: names.name(r.Domain),
		Flags: routeFlags(r.Flags),
	}
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
