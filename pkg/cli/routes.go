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
	ThisNode bool     `json:"thisNode"`
	Encap    string   `json:"encap"` // "vxlan", "direct" or "encap(<n>)"
	Domain   uint32   `json:"domain"`
	Flags    []string `json:"flags"` // "local": this node's pod CIDR (deliver locally or drop)
}

func newRoutesCommand(e *env) *cobra.Command {
	var filter ipFilter
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "List pod CIDR routes: prefix -> owning node, encapsulation, domain",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			rs, err := e.listRoutes(&filter)
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
					row(w, r.Prefix, r.NodeIP, node, r.Encap, r.Domain, orDash(strings.Join(r.Flags, ",")))
				}
			})
		},
	}
	cmd.Flags().Var(&filter, "ip", ipFlagUsage+" (routes whose prefix overlaps it)")
	return cmd
}

func (e *env) listRoutes(filter *ipFilter) ([]routeInfo, error) {
	m, err := open(e, routes.MapName, routes.Open)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	type entry struct {
		prefix netip.Prefix
		route  routes.Route
	}
	var entries []entry
	if err := m.Iterate(func(p netip.Prefix, r routes.Route) bool {
		if filter.overlaps(p) {
			entries = append(entries, entry{p, r})
		}
		return true
	}); err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
			return c
		}
		return a.prefix.Bits() - b.prefix.Bits()
	})
	self := e.localNodeIP()
	out := make([]routeInfo, 0, len(entries))
	for _, en := range entries {
		out = append(out, routeInfo{
			Prefix: en.prefix.String(), NodeIP: en.route.NodeIP.String(),
			ThisNode: self.IsValid() && en.route.NodeIP.Addr() == self,
			Encap:    encapName(en.route.Encap), Domain: en.route.Domain, Flags: routeFlags(en.route.Flags),
		})
	}
	return out, nil
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
