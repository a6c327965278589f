package cli

import (
	"fmt"
	"io"
	"net/netip"

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
	return listSorted(m.Iterate, filter.addr, netip.Addr.Compare, e.endpointInfo)
}

func (e *env) endpointInfo(ip netip.Addr, ep endpoints.Endpoint) endpointInfo {
	return endpointInfo{
		IP: ip.String(), Ifindex: ep.Ifindex, Interface: e.ifNames.name(ep.Ifindex),
		PodMAC: maps.MAC(ep.PodMAC), HostMAC: maps.MAC(ep.HostMAC), Flags: ep.Flags,
	}
}
