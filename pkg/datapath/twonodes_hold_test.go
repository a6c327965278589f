//go:build hold

package datapath

// A profiling aid, built only with -tags hold: the two-node topology of TestTwoNodesVXLAN (node
// namespaces wired by one veth pair, a pod behind a veth on each, real programs attached and the
// maps filled as the agent and the CNI plugin fill them) three times over, one pair per path, kept
// up until the file named by EDGEPLANE_HOLD is removed, so that a fixed-rate sender
// (tests/bench/udprate), perf and bpf_stats can be pointed at each path by hand:
//   vxlan  native VXLAN encapsulation in pod_egress, decapsulation in node_ingress
//   route  route mode: the pod's packet crosses the wire as it is (ROUTE_ENCAP_DIRECT)
//   route-fib  the same with the peer's next hop left unresolved in nodes_map, so that
//          pod_egress asks the kernel's FIB for it on every packet (direct_redirect_fib), as
//          until the agent has resolved it
//   floor  no program: the pods on bare veths, kernel routes and IPv4 forwarding on the nodes
//          (tests/bench vethfloor.go's wiring)
// The peers' next hops are resolved (NODE_NEXTHOP_VALID), as the agent leaves them. The file gets
// one line per path: name, client pod namespace, server pod namespace, server pod address, then
// the client node's namespace, the server node's and its address (node to node: the host traffic
// node_egress and node_ingress see on vxlan and route, none on floor).

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
)

func TestTwoNodesHold(t *testing.T) {
	file := os.Getenv("EDGEPLANE_HOLD")
	if file == "" {
		t.Skip("EDGEPLANE_HOLD names the file whose removal ends the hold")
	}
	bpffs := bpffstest.Mount(t)
	var lines []string
	for _, path := range []string{"vxlan", "route", "route-fib", "floor"} {
		n1, n2 := newTwoNodes(t, bpffs, path)
		for _, pair := range [][2]*twoNode{{n1, n2}, {n2, n1}} {
			switch path {
			case "floor":
				pair[0].floor(t, pair[1])
			default:
				pair[0].program(t, pair[1], 0)
				pair[0].resolvePeer(t, pair[1], path != "vxlan")
				if path == "route-fib" {
					var unresolved podNode
					copy(unresolved.VtepMac[:], pair[1].vxlanMAC(t))
					if err := pair[0].d.Map("nodes_map").Put(be32(pair[1].ip), unresolved); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		lines = append(lines, fmt.Sprintf("%s %s %s %s %s %s %s", path, filepath.Base(n1.podNetns.Path()),
			filepath.Base(n2.podNetns.Path()), n2.pod, filepath.Base(n1.netns.Path()),
			filepath.Base(n2.netns.Path()), n2.ip))
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("holding until %s is removed:\n%s", file, strings.Join(lines, "\n"))
	for {
		if _, err := os.Stat(file); os.IsNotExist(err) {
			return
		}
		time.Sleep(time.Second)
	}
}

// floor routes as tests/bench vethfloor.go does: the pod's /32 on its host veth with a permanent
// neighbour, the peer's pod CIDR via the peer node, IPv4 forwarding on.
func (n *twoNode) floor(t *testing.T, peer *twoNode) {
	t.Helper()
	err := n.netns.Do(func(ns.NetNS) error {
		for _, kv := range [][2]string{{"net/ipv4/ip_forward", "1"}, {"net/ipv4/conf/all/rp_filter", "0"},
			{"net/ipv4/conf/default/rp_filter", "0"}} {
			if err := os.WriteFile("/proc/sys/"+kv[0], []byte(kv[1]), 0o644); err != nil {
				return err
			}
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: n.veth.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: n.pod.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: n.veth.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: n.pod.AsSlice(), HardwareAddr: n.podMAC}); err != nil {
			return err
		}
		return netlink.RouteReplace(&netlink.Route{LinkIndex: n.eth0.Attrs().Index, Gw: peer.ip.AsSlice(),
			Dst: &net.IPNet{IP: peer.podCIDR.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}})
	})
	if err != nil {
		t.Fatalf("floor node %s: %v", n.ip, err)
	}
}
