package cli

import (
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
)

// endpointInfo is one endpoints_map entry (JSON schema in docs/cli.md).
type endpointInfo struct {
	IP        string `json:"ip"`
	Ifindex   uint32 `json:"ifindex"`
	Interface string `json:"interface"` // host-side veth; "" when no such ifindex in this netns
	PodMAC    string `json:"podMAC"`
	HostMAC   string `json:"hostMAC"`
	Flags     uint32 `json:"flags"`
}

func newEndpointsCommand(e *env) *cobra.Command {
	var filter ipFilter
	cmd := &cobra.Command{
		Use:     "endpoints",
		Aliases: []string{"endpoint", "ep"},
		Short:   "List local pod endpoints: pod IP, host veth, MACs",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			eps, err := e.listEndpoints(&filter)
			if err != nil {
				return err
			}
			return e.print(eps, func(w io.Writer) {
				row(w, "IP", "IFINDEX", "INTERFACE", "POD-MAC", "HOST-MAC", "FLAGS")
				for _, ep := range eps {
					row(w, ep.IP, ep.Ifindex, orDash(ep.Interface), ep.PodMAC, ep.HostMAC, fmt.Sprintf("%#x", ep.Flags))
				}
			})
		},
	}
	cmd.Flags().Var(&filter, "ip", ipFlagUsage)
	return cmd
}

func (e *env) listEndpoints(filter *ipFilter) ([]endpointInfo, error) {
	m, err := open(e, endpoints.MapName, endpoints.Open)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	type entry struct {
		ip netip.Addr
		ep endpoints.Endpoint
	}
	var entries []entry
	if err := m.Iterate(func(ip netip.Addr, ep endpoints.Endpoint) bool {
		if filter.addr(ip) {
			entries = append(entries, entry{ip, ep})
		}
		return true
	}); err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b entry) int { return a.ip.Compare(b.ip) })
	out := make([]endpointInfo, 0, len(entries))
	for _, en := range entries {
		out = append(out, e.endpointInfo(en.ip, en.ep))
	}
	return out, nil
}

func (e *env) endpointInfo(ip netip.Addr, ep endpoints.Endpoint) endpointInfo {
	return endpointInfo{
		IP: ip.String(), Ifindex: ep.Ifindex, Interface: e.ifNames.name(ep.Ifindex),
		PodMAC: maps.MAC(ep.PodMAC), HostMAC: maps.MAC(ep.HostMAC), Flags: ep.Flags,
	}
}
