package datapath

// The whole datapath on two nodes: each node is a network namespace with its own bpffs root, a
// loaded collection attached with this kernel's attach method (tcx links, or netlink TC before
// 6.6) to its underlay NIC, its collect_md VXLAN device and its pod's host veth, and maps filled
// as the agent and the CNI plugin fill them. A pod on each node (a namespace behind a veth,
// configured as the CNI plugin configures pods) talks to the other over UDP and TCP through
// VXLAN. The nodes have no route to any pod CIDR: only the programs can carry the packets.
// scripts/test-kernels.sh runs it on every kernel of the matrix.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// twoNode is one node of the two-node cluster: its namespace, datapath and pod.
type twoNode struct {
	netns             ns.NetNS
	root              string
	d                 *Datapath
	ip                netip.Addr
	podCIDR           netip.Prefix
	pod               netip.Addr
	podNetns          ns.NetNS
	eth0, vxlan, veth netlink.Link
	podMAC            net.HardwareAddr
}

func TestTwoNodesVXLAN(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode uint8
	}{{"native", 0 /* nodecfg.EncapNative */}, {"device", 1 /* nodecfg.EncapDevice */}} {
		t.Run(mode.name, func(t *testing.T) { testTwoNodesVXLAN(t, mode.mode) })
	}
}

// newTwoNodes builds two nodes (192.168.77.1 with pod 10.244.1.10, 192.168.77.2 with pod
// 10.244.2.20), their namespaces wired by one veth pair and set up, pins under bpffs/<prefix>1
// and <prefix>2; programming them is the caller's.
func newTwoNodes(t *testing.T, bpffs, prefix string) (n1, n2 *twoNode) {
	t.Helper()
	n1 = &twoNode{ip: netip.MustParseAddr("192.168.77.1"), podCIDR: netip.MustParsePrefix("10.244.1.0/24"),
		pod: netip.MustParseAddr("10.244.1.10"), root: filepath.Join(bpffs, prefix+"1", "edgeplane")}
	n2 = &twoNode{ip: netip.MustParseAddr("192.168.77.2"), podCIDR: netip.MustParsePrefix("10.244.2.0/24"),
		pod: netip.MustParseAddr("10.244.2.20"), root: filepath.Join(bpffs, prefix+"2", "edgeplane")}
	for _, n := range []*twoNode{n1, n2} {
		n.netns, n.podNetns = newNetns(t), newNetns(t)
	}
	wire(t, n1, n2)
	for _, n := range []*twoNode{n1, n2} {
		n.setUp(t)
	}
	return n1, n2
}

func testTwoNodesVXLAN(t *testing.T, encapMode uint8) {
	n1, n2 := newTwoNodes(t, bpffstest.Mount(t), "n")
	for _, pair := range [][2]*twoNode{{n1, n2}, {n2, n1}} {
		pair[0].program(t, pair[1], encapMode)
	}

	// VXLAN on the wire: n2's NIC receives n1's pod's packets encapsulated (a packet tap sees
	// the frame before tc ingress decapsulates it).
	tap := tapVXLAN(t, n2, n1.pod, n2.pod)

	// UDP both ways: n2's pod echoes what n1's pod sends.
	echo := listenIn(t, n2.podNetns, func() (io.Closer, error) { return net.ListenPacket("udp4", ":7000") })
	go func() {
		c := echo.(net.PacketConn)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	const datagrams = 20
	got := 0
	if err := n1.podNetns.Do(func(ns.NetNS) error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(n2.pod, 7000).String())
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 2048)
		for i := range datagrams {
			msg := fmt.Sprintf("datagram %d", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				return fmt.Errorf("echo of %q: %w", msg, err)
			}
			if string(buf[:n]) == msg {
				got++
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("UDP %s -> %s: %v", n1.pod, n2.pod, err)
	}
	if got != datagrams {
		t.Errorf("UDP: %d of %d echoes came back", got, datagrams)
	}

	// TCP from n2's pod to n1's pod: a handshake and 1 MB each way, segments of the pod MTU.
	srv := listenIn(t, n1.podNetns, func() (io.Closer, error) { return net.Listen("tcp4", ":7001") })
	go func() {
		c, err := srv.(net.Listener).Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	const size = 1 << 20
	if err := n2.podNetns.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(n1.pod, 7001).String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(payload)
			c.(*net.TCPConn).CloseWrite()
			errc <- err
		}()
		back, err := io.ReadAll(c)
		if err != nil {
			return fmt.Errorf("reading the echo: %w", err)
		}
		if err := <-errc; err != nil {
			return fmt.Errorf("writing: %w", err)
		}
		if len(back) != size {
			return fmt.Errorf("echoed %d bytes, want %d", len(back), size)
		}
		for i := range back {
			if back[i] != payload[i] {
				return fmt.Errorf("echo differs at byte %d", i)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("TCP %s -> %s: %v", n2.pod, n1.pod, err)
	}

	if frames := tap.stop(); frames < datagrams {
		t.Errorf("n2's NIC saw %d VXLAN frames from %s to %s, want at least %d", frames, n1.pod, n2.pod, datagrams)
	}
	for _, n := range []*twoNode{n1, n2} {
		if fwd := datapathMetric(t, n.d, dirPodEgress, dropreason.Forwarded); fwd == 0 {
			t.Errorf("node %s: pod_egress forwarded nothing", n.ip)
		}
		for _, dir := range []int{dirPodEgress, dirOverlayIn, dirOverlayOut, dirNodeIn, dirNodeOut} {
			for r := range metricsReasons {
				reason := dropreason.Reason(r)
				if reason == dropreason.Forwarded || reason == dropreason.ICMPSent {
					continue
				}
				if v := datapathMetric(t, n.d, dir, reason); v != 0 {
					t.Errorf("node %s: direction %d counted %d drops %v", n.ip, dir, v, reason)
				}
			}
		}
	}
	for _, n := range []*twoNode{n1, n2} {
		if err := n.netns.Do(func(ns.NetNS) error { return Cleanup(n.root) }); err != nil {
			t.Error(err)
		}
	}
}

func newNetns(t *testing.T) ns.NetNS {
	t.Helper()
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		netns.Close()
		testutils.UnmountNS(netns)
	})
	// IPv4 only, as the CNI plugin leaves pods: the programs count IPv6 (router solicitations,
	// MLD reports of new interfaces) as UNSUPPORTED_L3 drops, which the test asserts are none.
	if err := netns.Do(func(ns.NetNS) error {
		for _, conf := range []string{"all", "default"} {
			err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/disable_ipv6", []byte("1"), 0o644)
			if err != nil && !errors.Is(err, os.ErrNotExist) { // a kernel without IPv6 has none
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("disabling IPv6: %v", err)
	}
	return netns
}

// wire connects the nodes' eth0 with a veth pair: their underlay segment.
func wire(t *testing.T, a, b *twoNode) {
	t.Helper()
	if err := a.netns.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("peer0")
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(peer, int(b.netns.Fd()))
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("peer0")
		if err != nil {
			return err
		}
		return netlink.LinkSetName(l, "eth0")
	}); err != nil {
		t.Fatal(err)
	}
}

// setUp gives the node its address, VXLAN device and pod (as netdev and the CNI plugin do).
func (n *twoNode) setUp(t *testing.T) {
	t.Helper()
	err := n.netns.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := addrUp(eth0, n.ip.String()+"/24"); err != nil {
			return err
		}
		vtep := net.HardwareAddr{0x0e, 0, 0, 0, 0, n.ip.As4()[3]}
		dev := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "edgeplane.1", MTU: podMTU, HardwareAddr: vtep},
			FlowBased: true, Port: vxlanPort}
		if err := netlink.LinkAdd(dev); err != nil {
			return fmt.Errorf("creating the vxlan device: %w", err)
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vethpod", MTU: podMTU}, PeerName: "eth0p"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		podSide, err := netlink.LinkByName("eth0p")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(podSide, int(n.podNetns.Fd())); err != nil {
			return err
		}
		for _, name := range []string{"edgeplane.1", "vethpod"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		if n.eth0, err = netlink.LinkByName("eth0"); err != nil {
			return err
		}
		if n.vxlan, err = netlink.LinkByName("edgeplane.1"); err != nil {
			return err
		}
		n.veth, err = netlink.LinkByName("vethpod")
		return err
	})
	if err != nil {
		t.Fatalf("node %s: %v", n.ip, err)
	}
	err = n.podNetns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0p")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(l, "eth0"); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: n.pod.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: cninode.GatewayIP.AsSlice(), HardwareAddr: n.veth.Attrs().HardwareAddr}); err != nil {
			return err
		}
		n.podMAC = l.Attrs().HardwareAddr
		return netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: cninode.GatewayIP.AsSlice(),
			Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Flags: int(netlink.FLAG_ONLINK)})
	})
	if err != nil {
		t.Fatalf("pod %s: %v", n.pod, err)
	}
}

// program loads and attaches the datapath and fills its maps for a cluster of n and peer: what
// the agent writes (node_cfg_map, routes_map, nodes_map) and the CNI plugin (endpoints_map).
// The peer's next hop is left unresolved, so the native encapsulation resolves it through the
// kernel (bpf_redirect_neigh), as on a node whose agent has not learned it yet.
func (n *twoNode) program(t *testing.T, peer *twoNode, encapMode uint8) {
	t.Helper()
	n.d = mustLoad(t, n.root)
	cfg := podNodeCfg{
		NodeIp:          be32(n.ip),
		PodCidr:         be32(n.podCIDR.Addr()),
		PodMask:         be32(netip.MustParseAddr("255.255.255.0")),
		ClusterCidr:     be32(netip.MustParseAddr("10.244.0.0")),
		ClusterMask:     be32(netip.MustParseAddr("255.255.0.0")),
		UnderlayIfindex: uint32(n.eth0.Attrs().Index),
		VxlanIfindex:    uint32(n.vxlan.Attrs().Index),
		Vni:             vni,
		Mtu:             podMTU,
		Flags:           1, // NODE_CFG_READY
		EncapMode:       encapMode,
	}
	copy(cfg.VtepMac[:], n.vxlan.Attrs().HardwareAddr)
	copy(cfg.UnderlayMac[:], n.eth0.Attrs().HardwareAddr)
	ep := podEndpoint{Ifindex: uint32(n.veth.Attrs().Index)}
	copy(ep.PodMac[:], n.podMAC)
	copy(ep.HostMac[:], n.veth.Attrs().HardwareAddr)
	var remote podNode
	copy(remote.VtepMac[:], peer.vxlanMAC(t))
	for _, w := range []struct {
		m    string
		k, v any
	}{
		{"node_cfg_map", uint32(0), cfg},
		{"endpoints_map", be32(n.pod), ep},
		{"routes_map", podRouteKey{Prefixlen: 24, Addr: be32(n.podCIDR.Addr())}, podRoute{NodeIp: be32(n.ip), Flags: 1 /* ROUTE_LOCAL */}},
		{"routes_map", podRouteKey{Prefixlen: 24, Addr: be32(peer.podCIDR.Addr())}, podRoute{NodeIp: be32(peer.ip)}},
		{"nodes_map", be32(peer.ip), remote},
	} {
		if err := n.d.Map(w.m).Put(w.k, w.v); err != nil {
			t.Fatalf("node %s: %s: %v", n.ip, w.m, err)
		}
	}
	err := n.netns.Do(func(ns.NetNS) error {
		if err := n.d.AttachUnderlay(n.eth0.Attrs().Index); err != nil {
			return fmt.Errorf("attaching to the underlay: %w", err)
		}
		if err := n.d.AttachOverlayDevice(n.vxlan.Attrs().Index); err != nil {
			return fmt.Errorf("attaching to the vxlan device: %w", err)
		}
		if err := AttachPod(n.root, "vethpod", n.veth.Attrs().Index); err != nil {
			return fmt.Errorf("attaching to the pod's veth: %w", err)
		}
		return CheckPod(n.root, "vethpod", n.veth.Attrs().Index)
	})
	if err != nil {
		t.Fatalf("node %s: %v", n.ip, err)
	}
}

// vxlanMAC is the node's VTEP MAC (set before program runs on its peer).
func (n *twoNode) vxlanMAC(t *testing.T) net.HardwareAddr {
	t.Helper()
	if n.vxlan == nil {
		t.Fatalf("node %s has no vxlan device yet", n.ip)
	}
	return n.vxlan.Attrs().HardwareAddr
}

// listenIn opens a listener in netns, closed when the test ends.
func listenIn(t *testing.T, netns ns.NetNS, listen func() (io.Closer, error)) io.Closer {
	t.Helper()
	var l io.Closer
	if err := netns.Do(func(ns.NetNS) (err error) {
		l, err = listen()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// datapathMetric sums a per-CPU counter of a loaded datapath's metrics_map.
func datapathMetric(t *testing.T, d *Datapath, dir int, reason dropreason.Reason) uint64 {
	t.Helper()
	var per []xdpMetric
	if err := d.Map("metrics_map").Lookup(uint32(dir*metricsReasons+int(reason)), &per); err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, m := range per {
		sum += m.Packets
	}
	return sum
}

// packetTap reads the frames an interface receives (an AF_PACKET socket; the interface's own
// transmissions left out) and hands each to onFrame until stopped.
type packetTap struct {
	fd       int
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// startTap opens the tap in netns on ifindex; bufSize is what onFrame gets of a frame, whose
// whole length it gets too when flags has MSG_TRUNC.
func startTap(t *testing.T, netns ns.NetNS, ifindex, bufSize, flags int, onFrame func(frame []byte, n int)) *packetTap {
	t.Helper()
	tap := &packetTap{quit: make(chan struct{}), done: make(chan struct{})}
	ethPAll := int(be16(unix.ETH_P_ALL)) // network byte order
	if err := netns.Do(func(ns.NetNS) (err error) {
		if tap.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, ethPAll); err != nil {
			return err
		}
		return unix.Bind(tap.fd, &unix.SockaddrLinklayer{Protocol: uint16(ethPAll), Ifindex: ifindex})
	}); err != nil {
		t.Fatalf("packet socket on interface %d: %v", ifindex, err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(tap.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(tap.done)
		buf := make([]byte, bufSize)
		for {
			select {
			case <-tap.quit:
				return
			default:
			}
			n, from, err := unix.Recvfrom(tap.fd, buf, flags)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			onFrame(buf[:min(n, len(buf))], n)
		}
	}()
	t.Cleanup(tap.stop)
	return tap
}

// stop ends the capture.
func (tap *packetTap) stop() {
	tap.stopOnce.Do(func() {
		close(tap.quit)
		<-tap.done
		unix.Close(tap.fd)
	})
}

// vxlanTap counts the VXLAN frames between two pods a node's NIC receives.
type vxlanTap struct {
	tap    *packetTap
	frames atomic.Int64
}

// stop ends the capture and returns the frames counted.
func (vt *vxlanTap) stop() int {
	vt.tap.stop()
	return int(vt.frames.Load())
}

// resolvePeer writes the peer's next hop (its eth0 MAC) into nodes_map, and with direct its
// route as route mode's.
func (n *twoNode) resolvePeer(t *testing.T, peer *twoNode, direct bool) {
	t.Helper()
	var remote podNode
	copy(remote.VtepMac[:], peer.vxlanMAC(t))
	copy(remote.NexthopMac[:], peer.eth0.Attrs().HardwareAddr)
	remote.Flags = 1 // NODE_NEXTHOP_VALID
	if err := n.d.Map("nodes_map").Put(be32(peer.ip), remote); err != nil {
		t.Fatal(err)
	}
	if !direct {
		return
	}
	if err := n.d.Map("routes_map").Put(podRouteKey{Prefixlen: 24, Addr: be32(peer.podCIDR.Addr())},
		podRoute{NodeIp: be32(peer.ip), Encap: 1 /* ROUTE_ENCAP_DIRECT */}); err != nil {
		t.Fatal(err)
	}
}

// tapVXLAN starts a vxlanTap on n's eth0 for frames from src to dst.
func tapVXLAN(t *testing.T, n *twoNode, src, dst netip.Addr) *vxlanTap {
	t.Helper()
	vt := &vxlanTap{}
	vt.tap = startTap(t, n.netns, n.eth0.Attrs().Index, 4096, 0, func(frame []byte, _ int) {
		if isVXLANBetween(frame, src, dst) {
			vt.frames.Add(1)
		}
	})
	return vt
}

// isVXLANBetween tells whether frame is Ethernet/IPv4/UDP to port 8472/VXLAN/Ethernet/IPv4 from
// src to dst.
func isVXLANBetween(frame []byte, src, dst netip.Addr) bool {
	if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:]) != ethPIPv4 {
		return false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != protoUDP || len(ip) < ihl+8+8+14+20 {
		return false
	}
	udp := ip[ihl:]
	if binary.BigEndian.Uint16(udp[2:]) != vxlanPort {
		return false
	}
	inner := udp[8+8:]
	if binary.BigEndian.Uint16(inner[12:]) != ethPIPv4 {
		return false
	}
	innerIP := inner[14:]
	return netip.AddrFrom4([4]byte(innerIP[12:16])) == src && netip.AddrFrom4([4]byte(innerIP[16:20])) == dst
}
