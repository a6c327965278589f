package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/vishvananda/netlink"
)

// XDP verdicts (enum xdp_action).
const (
	xdpDrop = 1
	xdpPass = 2
)

const protoSCTP = 132

// lb.h: enum lb_scope and enum lb_svc_flags.
const (
	lbScopeExternal = 1

	lbSvcNodePort   = 1 << 1
	lbSvcClosed     = 1 << 2
	lbSvcExternalIP = 1 << 4
)

// Frontends of the XDP tests: NodePorts closed on this node (pool isolation) for each protocol, an
// open one, and a LoadBalancer IP with a closed and an open port.
var (
	lbIP = netip.MustParseAddr("203.0.113.10")

	closedTCP, closedUDP, closedSCTP, openTCP uint16 = 30080, 30053, 30132, 30081
)

// xdpMd is struct xdp_md; test_run takes data_end (= the packet's length), ingress_ifindex and
// rx_queue_index from it.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// runXDP feeds one packet to an XDP program; with ifindex != 0 it arrives on that device of the
// calling thread's netns (which the FIB lookup then uses), else on loopback.
func runXDP(t testing.TB, prog *ebpf.Program, pkt []byte, ifindex int) uint32 {
	t.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256)}
	if ifindex != 0 {
		// The test harness's limit, not node_xdp's: the arrival device is what the FIB lookup
		// of a node port to another local address needs, and test_run cannot say it before 5.15.
		if !kernelAtLeast(t, 5, 15) {
			t.Skip("BPF_PROG_TEST_RUN takes no xdp_md (ingress_ifindex) before Linux 5.15")
		}
		opts.Context = xdpMd{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(ifindex)}
	}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret
}

func putFrontend(t testing.TB, coll *ebpf.Collection, vip netip.Addr, port uint16, proto uint8, flags uint16) {
	t.Helper()
	var addr uint32
	if vip.IsValid() {
		addr = be32(vip)
	}
	put(t, coll, "lb_svc_map", xdpLbSvcKey{Vip: addr, Port: be16(port), Proto: proto, Scope: lbScopeExternal},
		xdpLbSvc{Id: uint32(port), Count: 1, Flags: flags})
}

// xdpCollection loads the xdp object with this node configured and the test frontends in place.
func xdpCollection(t testing.TB, opts ...cfgOpt) *ebpf.Collection {
	coll := newCollection(t, loadXdp)
	put(t, coll, "node_cfg_map", uint32(0), testNodeCfg(opts...))
	none := netip.Addr{}
	putFrontend(t, coll, none, closedTCP, protoTCP, lbSvcNodePort|lbSvcClosed)
	putFrontend(t, coll, none, closedUDP, protoUDP, lbSvcNodePort|lbSvcClosed)
	putFrontend(t, coll, none, closedSCTP, protoSCTP, lbSvcNodePort|lbSvcClosed)
	putFrontend(t, coll, none, openTCP, protoTCP, lbSvcNodePort)
	putFrontend(t, coll, lbIP, 80, protoTCP, lbSvcExternalIP|lbSvcClosed)
	putFrontend(t, coll, lbIP, closedTCP, protoTCP, lbSvcExternalIP)
	return coll
}

func sctpSeg(sport, dport uint16) []byte {
	b := make([]byte, 16) // common header + a chunk header
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return b
}

// from is a packet from a client on the underlay to dst.
func from(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	return ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: src, dst: dst, proto: proto}.build(l4))
}

func synTo(dst netip.Addr, port uint16) []byte {
	return from(strangerIP, dst, protoTCP, tcpSeg(strangerIP, dst, 40000, port, tcpSYN, nil))
}

func udpTo(dst netip.Addr, port uint16) []byte {
	return from(strangerIP, dst, protoUDP, udpSeg(strangerIP, dst, 40000, port, []byte("query"), true))
}

func TestNodeXDPVerdicts(t *testing.T) {
	coll := xdpCollection(t)
	prog := coll.Programs["node_xdp"]
	// A frontend claiming VXLAN's port must not take the overlay down.
	putFrontend(t, coll, netip.Addr{}, vxlanPort, protoUDP, lbSvcNodePort|lbSvcClosed)

	syn := synTo(nodeIP, closedTCP)
	withOptions := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: strangerIP, dst: nodeIP, proto: protoTCP,
		options: []byte{1, 1, 1, 0}}.build(tcpSeg(strangerIP, nodeIP, 40000, closedTCP, tcpSYN, nil)))
	firstFragment := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: strangerIP, dst: nodeIP, proto: protoUDP,
		mf: true}.build(udpSeg(strangerIP, nodeIP, 40000, closedUDP, make([]byte, 100), false)))
	laterFragment := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: strangerIP, dst: nodeIP, proto: protoUDP,
		fragOff: 10}.build(udpSeg(strangerIP, nodeIP, 40000, closedUDP, make([]byte, 100), false)))
	badIHL := append([]byte{}, syn...)
	badIHL[14] = 0x44
	ipv6 := ethFrame(underlayMAC, remoteNextHop, ethPIPv6, make([]byte, 60))
	arp := ethFrame(underlayMAC, remoteNextHop, ethPARP, make([]byte, 28))

	cases := []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"closed NodePort, TCP", syn, xdpDrop},
		{"closed NodePort, TCP ACK", from(strangerIP, nodeIP, protoTCP, tcpSeg(strangerIP, nodeIP, 40000, closedTCP, tcpACK, make([]byte, 100))), xdpDrop},
		{"closed NodePort, UDP", udpTo(nodeIP, closedUDP), xdpDrop},
		{"closed NodePort, SCTP", from(strangerIP, nodeIP, protoSCTP, sctpSeg(40000, closedSCTP)), xdpDrop},
		{"closed NodePort, IP options", withOptions, xdpDrop},
		{"closed NodePort, first fragment", firstFragment, xdpDrop},
		{"closed LoadBalancer IP", synTo(lbIP, 80), xdpDrop},
		{"open LoadBalancer IP on a closed NodePort's port", synTo(lbIP, closedTCP), xdpPass},
		{"open NodePort", synTo(nodeIP, openTCP), xdpPass},
		{"closed NodePort's port, other protocol", udpTo(nodeIP, closedTCP), xdpPass},
		{"LoadBalancer IP, no such port", synTo(lbIP, 443), xdpPass},
		{"host traffic", synTo(nodeIP, 22), xdpPass},
		{"VXLAN", vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), innerFrame(remotePod, podA)), xdpPass},
		{"later fragment", laterFragment, xdpPass},
		{"ICMP", from(strangerIP, nodeIP, protoICMP, icmpMsg(8, 0, echoRest(1, 1), nil)), xdpPass},
		{"ARP", arp, xdpPass},
		{"IPv6", ipv6, xdpPass},
		{"truncated: Ethernet only", syn[:14], xdpPass},
		{"truncated: IPv4 header", syn[:14+12], xdpPass},
		{"truncated: ports", syn[:14+20+2], xdpPass},
		{"IHL below 5", badIHL, xdpPass},
	}
	var drops, bytes uint64
	for _, c := range cases {
		if got := runXDP(t, prog, c.pkt, 0); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
		if c.want == xdpDrop {
			drops++
			bytes += uint64(len(c.pkt))
		}
	}
	if n := metric(t, coll, dirNodeXDP, dropreason.NodePortClosed); n != drops {
		t.Errorf("node-xdp NODEPORT_CLOSED counted %d packets, want %d", n, drops)
	}
	if n := metricBytes(t, coll, dirNodeXDP, dropreason.NodePortClosed); n != bytes {
		t.Errorf("node-xdp NODEPORT_CLOSED counted %d bytes, want %d", n, bytes)
	}
	if n := metric(t, coll, dirNodeXDP, dropreason.Forwarded); n != 0 {
		t.Errorf("node-xdp counted %d passed packets, want none (node_ingress counts them)", n)
	}
}

// A reply to a masqueraded pod connection whose node port has a closed NodePort's number (a
// NodePort range reaching into the masquerade ports) is not for the service.
func TestNodeXDPMasqueradeReplyPasses(t *testing.T) {
	coll := xdpCollection(t)
	const nodePort = 40080 // closed, and in the masquerade range 32768-60999
	putFrontend(t, coll, netip.Addr{}, nodePort, protoTCP, lbSvcNodePort|lbSvcClosed)
	put(t, coll, "nat_rev_map", xdpNatRevKey{RemoteIp: be32(internetIP), RemotePort: be16(443), NodePort: be16(nodePort), Proto: protoTCP},
		xdpNatRevVal{PodIp: be32(podA), PodPort: be16(40000)})
	reply := func(sport uint16) []byte {
		return from(internetIP, nodeIP, protoTCP, tcpSeg(internetIP, nodeIP, sport, nodePort, tcpSYN|tcpACK, nil))
	}
	if got := runXDP(t, coll.Programs["node_xdp"], reply(443), 0); got != xdpPass {
		t.Errorf("reply to a masqueraded connection: verdict %d, want XDP_PASS", got)
	}
	if got := runXDP(t, coll.Programs["node_xdp"], reply(444), 0); got != xdpDrop {
		t.Errorf("same port from another remote port: verdict %d, want XDP_DROP", got)
	}
}

func TestNodeXDPNotReadyPasses(t *testing.T) {
	coll := xdpCollection(t, func(c *podNodeCfg) { c.Flags = 0 })
	if got := runXDP(t, coll.Programs["node_xdp"], synTo(nodeIP, closedTCP), 0); got != xdpPass {
		t.Fatalf("verdict %d before the agent configured the node, want XDP_PASS", got)
	}
}

func TestNodeXDPDropEvent(t *testing.T) {
	coll := xdpCollection(t)
	rd := eventReader(t, coll)
	setMonitor(t, coll, monitorDrops)
	pkt := udpTo(nodeIP, closedUDP)
	if got := runXDP(t, coll.Programs["node_xdp"], pkt, 0); got != xdpDrop {
		t.Fatalf("verdict %d", got)
	}
	ev, ok := nextEvent(t, rd)
	if !ok {
		t.Fatal("no event for an XDP drop with MONITOR_DROPS set")
	}
	tu := ev.Tuple
	switch {
	case ev.Type != eventDrop || dropreason.Reason(ev.Reason) != dropreason.NodePortClosed || ev.Dir != dirNodeXDP:
		t.Errorf("type %d reason %v dir %d, want drop NODEPORT_CLOSED node-xdp", ev.Type, dropreason.Reason(ev.Reason), ev.Dir)
	case ev.Ifindex != 1 || ev.Len != uint32(len(pkt)) || ev.Verdict != tcActShot:
		t.Errorf("ifindex %d len %d verdict %d, want 1 (loopback) %d %d", ev.Ifindex, ev.Len, ev.Verdict, len(pkt), tcActShot)
	case ev.Flags != eventFIPv4:
		t.Errorf("flags %#x, want IPV4 only", ev.Flags)
	case tu.Saddr != be32(strangerIP) || tu.Daddr != be32(nodeIP) || tu.Proto != protoUDP ||
		tu.Sport != be16(40000) || tu.Dport != be16(closedUDP):
		t.Errorf("tuple %+v", tu)
	}
	if runXDP(t, coll.Programs["node_xdp"], synTo(nodeIP, openTCP), 0) != xdpPass {
		t.Fatal("open NodePort dropped")
	}
	if ev, ok := nextEvent(t, rd); ok {
		t.Fatalf("event for a passed packet: %+v", ev)
	}
}

// Addresses of the node in xdpNetns besides the node IP.
var (
	secondaryIP   = netip.MustParseAddr("192.168.1.100") // on the NIC
	otherDeviceIP = netip.MustParseAddr("10.0.0.1")      // on another device
)

// xdpNetns is a netns for the FIB lookups: the node's NIC eth0 (node IP and secondaryIP), another
// device with otherDeviceIP, a route to the remote pod CIDR and forwarding on. It returns the
// NIC's ifindex.
func xdpNetns(t testing.TB) (ns.NetNS, int) {
	t.Helper()
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.Close()
		testutils.UnmountNS(netns)
	})
	var nic int
	err = netns.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		other := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "other0"}}
		for _, l := range []netlink.Link{veth, other} {
			if err := netlink.LinkAdd(l); err != nil {
				return err
			}
		}
		for name, addrs := range map[string][]string{"eth0": {nodeIP.String() + "/24", secondaryIP.String() + "/24"}, "other0": {otherDeviceIP.String() + "/32"}, "peer0": nil} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				addr, err := netlink.ParseAddr(a)
				if err != nil {
					return err
				}
				if err := netlink.AddrAdd(l, addr); err != nil {
					return err
				}
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
			if name == "eth0" {
				nic = l.Attrs().Index
			}
		}
		_, pods, _ := net.ParseCIDR("10.244.2.0/24")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: nic, Dst: pods, Gw: remoteNodeIP.AsSlice()}); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return netns, nic
}

// NodePort listens on every address of the node, which the program learns from the kernel's FIB
// for addresses other than the node IP.
func TestNodeXDPLocalAddresses(t *testing.T) {
	coll := xdpCollection(t)
	prog := coll.Programs["node_xdp"]
	netns, nic := xdpNetns(t)

	cases := []struct {
		name string
		dst  netip.Addr
		want uint32
	}{
		{"node IP", nodeIP, xdpDrop},
		{"another address of the NIC", secondaryIP, xdpDrop},
		{"an address of another device", otherDeviceIP, xdpDrop},
		{"the subnet's broadcast", netip.MustParseAddr("192.168.1.255"), xdpDrop},
		{"a remote pod routed through this node", remotePod, xdpPass},
		{"a neighbour on the underlay", strangerIP, xdpPass},
		{"multicast", netip.MustParseAddr("239.1.1.1"), xdpPass},
		{"limited broadcast", netip.MustParseAddr("255.255.255.255"), xdpPass},
	}
	run := func(forwarding string, check func(name string, got, want uint32)) {
		err := netns.Do(func(ns.NetNS) error {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/eth0/forwarding", []byte(forwarding), 0o644); err != nil {
				return err
			}
			for _, c := range cases {
				check(c.name, runXDP(t, prog, synTo(c.dst, closedTCP), nic), c.want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	run("1", func(name string, got, want uint32) {
		if got != want {
			t.Errorf("%s: verdict %d, want %d", name, got, want)
		}
	})
	// Without forwarding on the NIC the FIB helper answers nothing: only the node IP is known.
	run("0", func(name string, got, want uint32) {
		if name == "node IP" {
			want = xdpDrop
		} else {
			want = xdpPass
		}
		if got != want {
			t.Errorf("forwarding off, %s: verdict %d, want %d", name, got, want)
		}
	})
}
