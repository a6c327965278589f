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
	// The pod, from the name index (names/pods); "" when it has no entry for this endpoint.
	PodNamespace string `json:"podNamespace"`
	PodName      string `json:"podName"`
	ContainerID  string `json:"containerID"`
	PodInterface string `json:"podInterface"` // the interface inside the pod (CNI_IFNAME)
}

// pod is "namespace/name", or "" when unknown.
func (ep *endpointInfo) pod() string {
	if ep.PodNamespace == "" {
		return ep.PodName
	}
	return ep.PodNamespace + "/" + ep.PodName
}

func newEndpointsCommand(e *env) *cobra.Command {
	var filter ipFilter
	var byName nameFilter
	cmd := &cobra.Command{
		Use:     "endpoints",
		Aliases: []string{"endpoint", "ep"},
		Short:   "List local pod endpoints: pod IP and name, host veth, MACs",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			eps, err := e.listEndpoints(&filter, &byName)
			if err != nil {
				return err
			}
			return e.print(eps, func(w io.Writer) {
				row(w, "IP", "POD", "IFINDEX", "INTERFACE", "POD-MAC", "HOST-MAC", "FLAGS")
				for _, ep := range eps {
					row(w, ep.IP, orDash(ep.pod()), ep.Ifindex, orDash(ep.Interface), ep.PodMAC, ep.HostMAC, fmt.Sprintf("%#x", ep.Flags))
				}
			})
		},
	}
	cmd.Flags().Var(&filter, "ip", ipFlagUsage)
	byName.register(cmd, e, "endpoints (all or none: they are this node's)")
	return cmd
}

func (e *env) listEndpoints(filter *ipFilter, byName *nameFilter) ([]endpointInfo, error) {
	m, err := open(e, endpoints.MapName, endpoints.Open)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if byName.active() && !byName.match(e.nodes().selfNodes()) {
		return []endpointInfo{}, nil
	}
	return listSorted(m.Iterate, filter.addr, netip.Addr.Compare, e.endpointInfo)
}

func (e *env) endpointInfo(ip netip.Addr, ep endpoints.Endpoint) endpointInfo {
	info := endpointInfo{
		IP: ip.String(), Ifindex: ep.Ifindex, Interface: e.ifNames.name(ep.Ifindex),
		PodMAC: maps.MAC(ep.PodMAC), HostMAC: maps.MAC(ep.HostMAC), Flags: ep.Flags,
	}
	if p, ok := e.pods().pod(ip, info.Interface); ok {
		info.PodNamespace, info.PodName, info.ContainerID, info.PodInterface = p.Namespace, p.Name, p.ContainerID, p.Interface
	}
	return info
}
