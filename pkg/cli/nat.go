package cli

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/nat"
)

// natInfo is one masqueraded flow (JSON schema in docs/cli.md): nat_fwd_map's entry joined with
// the nat_rev_map entry it claimed, or a reverse entry whose forward half is gone.
type natInfo struct {
	Proto      string `json:"proto"` // "tcp", "udp", "icmp" or "proto(<n>)"
	PodIP      string `json:"podIP"`
	PodPort    uint16 `json:"podPort"` // ICMP echo: the pod's identifier
	RemoteIP   string `json:"remoteIP"`
	RemotePort uint16 `json:"remotePort"` // ICMP echo: 0
	NodePort   uint16 `json:"nodePort"`   // the source port (ICMP: identifier) after masquerade
	// State: "ok" (both halves agree), "no-reverse" (LRU evicted nat_rev_map's half: the next
	// packet re-claims it), "reverse-mismatch" (the node port now maps to another pod flow) or
	// "no-forward" (only nat_rev_map's half is left).
	State string `json:"state"`
}

func newNATCommand(e *env) *cobra.Command {
	var filter ipFilter
	cmd := &cobra.Command{
		Use:     "nat",
		Aliases: []string{"masquerade"},
		Short:   "List masqueraded flows (nat_fwd_map joined with nat_rev_map)",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			flows, err := e.listNAT(&filter)
			if err != nil {
				return err
			}
			return e.print(flows, func(w io.Writer) {
				row(w, "PROTO", "POD", "REMOTE", "NODE-PORT", "STATE")
				for _, f := range flows {
					row(w, f.Proto, hostPort(f.PodIP, f.PodPort), hostPort(f.RemoteIP, f.RemotePort), f.NodePort, f.State)
				}
			})
		},
	}
	cmd.Flags().Var(&filter, "ip", ipFlagUsage+" (pod or remote address)")
	return cmd
}

func hostPort(ip string, port uint16) string { return fmt.Sprintf("%s:%d", ip, port) }

func (e *env) listNAT(filter *ipFilter) ([]natInfo, error) {
	fwdMap, err := open(e, nat.FwdMapName, nat.OpenFwdReadOnly)
	if err != nil {
		return nil, err
	}
	defer fwdMap.Close()
	revMap, err := open(e, nat.RevMapName, nat.OpenRevReadOnly)
	if err != nil {
		return nil, err
	}
	defer revMap.Close()

	rev := make(map[nat.RevKey]nat.RevValue)
	if err := revMap.Iterate(func(k nat.RevKey, v nat.RevValue) bool { rev[k] = v; return true }); err != nil {
		return nil, err
	}

	flows := []natInfo{}
	claimed := make(map[nat.RevKey]bool)
	if err := fwdMap.Iterate(func(fk nat.FwdKey, fv nat.FwdValue) bool {
		k := fk.RevKey(fv)
		state := "ok"
		if v, ok := rev[k]; !ok {
			state = "no-reverse"
		} else if v.PodIP != fk.PodIP || v.PodPort != fk.PodPort {
			state = "reverse-mismatch"
		} else {
			claimed[k] = true
		}
		flows = append(flows, natFlow(fk.Proto, fk.PodIP, fk.PodPort, fk.RemoteIP, fk.RemotePort, fv.NodePort, state))
		return true
	}); err != nil {
		return nil, err
	}
	for k, v := range rev {
		if !claimed[k] {
			flows = append(flows, natFlow(k.Proto, v.PodIP, v.PodPort, k.RemoteIP, k.RemotePort, k.NodePort, "no-forward"))
		}
	}
	flows = slices.DeleteFunc(flows, func(f natInfo) bool {
		return !filter.addr(netip.MustParseAddr(f.PodIP)) && !filter.addr(netip.MustParseAddr(f.RemoteIP))
	})
	slices.SortFunc(flows, func(a, b natInfo) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto),
			netip.MustParseAddr(a.PodIP).Compare(netip.MustParseAddr(b.PodIP)), cmp.Compare(a.PodPort, b.PodPort),
			netip.MustParseAddr(a.RemoteIP).Compare(netip.MustParseAddr(b.RemoteIP)), cmp.Compare(a.RemotePort, b.RemotePort),
			cmp.Compare(a.NodePort, b.NodePort), cmp.Compare(a.State, b.State))
	})
	return flows, nil
}

func natFlow(proto nat.Proto, podIP maps.IPv4, podPort nat.Port, remoteIP maps.IPv4, remotePort, nodePort nat.Port, state string) natInfo {
	return natInfo{
		Proto: proto.String(), PodIP: podIP.String(), PodPort: podPort.Uint16(),
		RemoteIP: remoteIP.String(), RemotePort: remotePort.Uint16(), NodePort: nodePort.Uint16(), State: state,
	}
}
