package cli

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/nodes"
)

// nodeInfo is one nodes_map entry (JSON schema in docs/cli.md).
type nodeInfo struct {
	IP           string   `json:"ip"` // tunnel endpoint (underlay) address
	VtepMAC      string   `json:"vtepMAC"`
	NexthopMAC   string   `json:"nexthopMAC"`   // meaningful only when nexthopValid
	NexthopValid bool     `json:"nexthopValid"` // false: the kernel resolves the next hop
	Domain       uint32   `json:"domain"`       // the node's network domain ID
	DomainName   string   `json:"domainName"`   // its name in domains_map; "" when unknown
	Flags        []string `json:"flags"`
	// The node's name and pool, from the name index (names/nodes.json): "" when unknown,
	// comma-separated when several nodes share the tunnel endpoint.
	NodeName string `json:"nodeName"`
	Pool     string `json:"pool"`
}

func newNodesCommand(e *env) *cobra.Command {
	var filter ipFilter
	var domain domainFilter
	var byName nameFilter
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List cluster nodes by tunnel endpoint: name, pool, VTEP MAC, next-hop MAC, domain",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			ns, err := e.listNodes(&filter, &domain, &byName)
			if err != nil {
				return err
			}
			return e.print(ns, func(w io.Writer) {
				row(w, "IP", "NODE", "POOL", "VTEP-MAC", "NEXTHOP-MAC", "DOMAIN", "FLAGS")
				for _, n := range ns {
					row(w, n.IP, orDash(n.NodeName), orDash(n.Pool), n.VtepMAC, nexthopCell(n), orID(n.DomainName, n.Domain), orDash(strings.Join(n.Flags, ",")))
				}
			})
		},
	}
	cmd.Flags().Var(&filter, "ip", ipFlagUsage)
	cmd.Flags().StringVar(&domain.name, "domain", "", domainFlagUsage)
	_ = cmd.RegisterFlagCompletionFunc("domain", e.completeDomains)
	byName.register(cmd, e, "nodes")
	return cmd
}

func nexthopCell(n nodeInfo) string {
	if !n.NexthopValid {
		return "(kernel)"
	}
	return n.NexthopMAC
}

func (e *env) listNodes(filter *ipFilter, domain *domainFilter, byName *nameFilter) ([]nodeInfo, error) {
	m, err := open(e, nodes.MapName, nodes.Open)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	domains, err := e.readDomainNames()
	if err != nil {
		return nil, err
	}
	index := e.nodes()
	ns, err := listSorted(m.Iterate, filter.addr, netip.Addr.Compare, func(ip netip.Addr, n nodes.Node) nodeInfo {
		return describeNode(domains, index, ip, n)
	})
	if err != nil {
		return nil, err
	}
	inDomain := domain.matcher(domains)
	return slices.DeleteFunc(ns, func(n nodeInfo) bool {
		return !inDomain(n.Domain) || !byName.match(index.ipNodes(netip.MustParseAddr(n.IP)))
	}), nil
}

func describeNode(domains *domainNames, index *nodeIndex, ip netip.Addr, n nodes.Node) nodeInfo {
	info := nodeInfo{
		IP: ip.String(), VtepMAC: maps.MAC(n.VtepMAC), NexthopMAC: maps.MAC(n.NexthopMAC),
		NexthopValid: n.Flags&nodes.FlagNexthopValid != 0, Domain: n.Domain, DomainName: domains.name(n.Domain),
		Flags: nodeFlags(n.Flags),
	}
	info.NodeName, info.Pool = nodeCells(index.ipNodes(ip))
	return info
}

func nodeFlags(f uint32) []string {
	out := []string{}
	if f&nodes.FlagNexthopValid != 0 {
		out = append(out, "nexthop-valid")
	}
	if rest := f &^ nodes.FlagNexthopValid; rest != 0 {
		out = append(out, fmt.Sprintf("%#x", rest))
	}
	return out
}
