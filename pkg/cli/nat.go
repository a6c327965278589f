package cli

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/maps"
)

// Map names of the masquerade state (bpf/lib/nat.h). Only node_egress writes them, so pkg/maps
// has no package for them; the mirrors below are the CLI's, checked against the BTF in a test.
const (
	natFwdMapName = "nat_fwd_map"
	natRevMapName = "nat_rev_map"
)

// bePort is a C __be16 port (or ICMP echo identifier).
type bePort [2]byte

func (p bePort) value() uint16 { return binary.BigEndian.Uint16(p[:]) }

// natFwdKey mirrors struct nat_fwd_key.
type natFwdKey struct {
	PodIP      maps.IPv4
	RemoteIP   maps.IPv4
	PodPort    bePort
	RemotePort bePort
	Proto      uint8
	Pad        [3]uint8
}

// natFwdVal mirrors struct nat_fwd_val.
type natFwdVal struct {
	NodePort bePort
	Pad      uint16
}

// natRevKey mirrors struct nat_rev_key.
type natRevKey struct {
	RemoteIP   maps.IPv4
	RemotePort bePort
	NodePort   bePort
	Proto      uint8
	Pad        [3]uint8
}

// natRevVal mirrors struct nat_rev_val.
type natRevVal struct {
	PodIP   maps.IPv4
	PodPort bePort
	Pad     uint16
}

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

func (e *env) openRaw(name string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(maps.PinPath(e.root, name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, e.pinError(name, err)
	}
	return m, nil
}

func (e *env) listNAT(filter *ipFilter) ([]natInfo, error) {
	fwdMap, err := e.openRaw(natFwdMapName)
	if err != nil {
		return nil, err
	}
	defer fwdMap.Close()
	revMap, err := e.openRaw(natRevMapName)
	if err != nil {
		return nil, err
	}
	defer revMap.Close()

	rev := make(map[natRevKey]natRevVal)
	var rk natRevKey
	var rv natRevVal
	it := revMap.Iterate()
	for it.Next(&rk, &rv) {
		rev[rk] = rv
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating %s: %w", natRevMapName, err)
	}

	flows := []natInfo{}
	claimed := make(map[natRevKey]bool)
	var fk natFwdKey
	var fv natFwdVal
	it = fwdMap.Iterate()
	for it.Next(&fk, &fv) {
		k := natRevKey{RemoteIP: fk.RemoteIP, RemotePort: fk.RemotePort, NodePort: fv.NodePort, Proto: fk.Proto}
		state := "ok"
		if v, ok := rev[k]; !ok {
			state = "no-reverse"
		} else if v.PodIP != fk.PodIP || v.PodPort != fk.PodPort {
			state = "reverse-mismatch"
		} else {
			claimed[k] = true
		}
		flows = append(flows, natFlow(fk.Proto, fk.PodIP, fk.PodPort, fk.RemoteIP, fk.RemotePort, fv.NodePort, state))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating %s: %w", natFwdMapName, err)
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

func natFlow(proto uint8, podIP maps.IPv4, podPort bePort, remoteIP maps.IPv4, remotePort, nodePort bePort, state string) natInfo {
	return natInfo{
		Proto: protoName(proto), PodIP: podIP.String(), PodPort: podPort.value(),
		RemoteIP: remoteIP.String(), RemotePort: remotePort.value(), NodePort: nodePort.value(), State: state,
	}
}

func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", p)
}
