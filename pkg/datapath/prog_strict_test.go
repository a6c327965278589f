package datapath

// Strictness of the datapath about what it receives (issue 12, items 3-5): no ICMP error about an
// ICMP error or a later fragment; VXLAN decapsulated on the NIC only when the kernel's own receive
// path would have accepted the outer packet; host traffic into the overlay with a truncated L4
// header dropped; node_xdp leaving malformed frames to node_ingress, which counts them INVALID.

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// ---- item 3: "fragmentation needed" ----

func TestPodEgressNoFragNeededAboutICMPErrorsOrLaterFragments(t *testing.T) {
	payload := bytes.Repeat([]byte{0xcd}, podMTU)
	laterFragment := ethFrame(podAHostMAC, podAMAC, ethPIPv4, ipHdr{src: podA, dst: remotePod, proto: protoUDP, df: true, fragOff: 185}.build(payload))
	// Its first fragment, seen before it (a later fragment alone is left alone: lib/frag.h).
	firstFragment := ethFrame(podAHostMAC, podAMAC, ethPIPv4, ipHdr{src: podA, dst: remotePod, proto: protoUDP, mf: true}.build(udpSeg(podA, remotePod, 40000, 53, nil, false)))
	tests := []struct {
		name     string
		pkt      []byte
		answered bool
		first    []byte // sent before pkt
	}{
		{"ICMP destination unreachable", podPacket(podA, remotePod, icmpMsg(3, 3, [4]byte{}, payload), protoICMP, true), false, nil},
		{"ICMP time exceeded", podPacket(podA, remotePod, icmpMsg(11, 0, [4]byte{}, payload), protoICMP, true), false, nil},
		{"ICMP fragmentation needed", podPacket(podA, remotePod, icmpMsg(3, 4, [4]byte{0, 0, 0x05, 0xaa}, payload), protoICMP, true), false, nil},
		{"later fragment", laterFragment, false, firstFragment},
		// An echo request is no error: it is answered, as before.
		{"ICMP echo request", podPacket(podA, remotePod, icmpMsg(8, 0, echoRest(7, 1), payload), protoICMP, true), true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			coll := newCollection(t, loadPod)
			fillCluster(t, coll)
			if tt.first != nil {
				if got, _ := run(t, coll.Programs["pod_egress"], tt.first, nil); got != tcActRedirect {
					t.Fatalf("first fragment: verdict %d, want TC_ACT_REDIRECT", got)
				}
			}
			got, out := run(t, coll.Programs["pod_egress"], tt.pkt, nil)
			if tt.answered {
				if got != tcActRedirect {
					t.Fatalf("verdict %d, want TC_ACT_REDIRECT (the answer back into the pod)", got)
				}
				checkFragNeeded(t, out, tt.pkt, podMTU)
			} else if got != tcActShot {
				t.Fatalf("verdict %d, want TC_ACT_SHOT (dropped, not answered)", got)
			}
			sent := uint64(0)
			if tt.answered {
				sent = 1
			}
			if d, s := metric(t, coll, dirPodEgress, dropreason.PktTooBig), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != 1 || s != sent {
				t.Errorf("PKT_TOO_BIG %d, ICMP_SENT %d; want 1, %d", d, s, sent)
			}
		})
	}
}

// ---- item 4: the outer packet of VXLAN received on the NIC ----

// vxlanOuter describes a VXLAN frame from the remote node with the outer fields a test bends.
type vxlanOuter struct {
	dst        netip.Addr // outer destination; zero: the node IP
	udpCsum    bool       // a real outer UDP checksum instead of 0
	badUDPCsum bool       // a wrong non-zero outer UDP checksum
	badIPCsum  bool       // a wrong outer IPv4 header checksum
	udpLen     int        // the UDP length field; 0: the datagram's
	totLen     int        // the IPv4 total length; 0: the datagram's
	trailer    []byte     // bytes after the IPv4 datagram (Ethernet padding)
	vx         []byte     // the VXLAN header; nil: our VNI with the I flag
}

func (o vxlanOuter) frame(inner []byte) []byte {
	dst := o.dst
	if !dst.IsValid() {
		dst = nodeIP
	}
	vx := o.vx
	if vx == nil {
		vx = vxlanHdr(0x08000000, vni)
	}
	udp := udpSeg(remoteNodeIP, dst, 54321, vxlanPort, append(bytes.Clone(vx), inner...), o.udpCsum || o.badUDPCsum)
	if o.badUDPCsum {
		c := binary.BigEndian.Uint16(udp[6:]) ^ 0x0101
		binary.BigEndian.PutUint16(udp[6:], c)
	}
	if o.udpLen != 0 {
		binary.BigEndian.PutUint16(udp[4:], uint16(o.udpLen))
	}
	ip := ipHdr{src: remoteNodeIP, dst: dst, proto: protoUDP, totLen: o.totLen}.build(udp)
	if o.badIPCsum {
		ip[10] ^= 0x10
	}
	return append(ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ip), o.trailer...)
}

// innerUDP is the remote pod's UDP packet to dst with n bytes of payload, in the peer's inner frame.
func innerUDP(dst netip.Addr, n int) []byte {
	l4 := udpSeg(remotePod, dst, 1234, 5678, bytes.Repeat([]byte{0x5a}, n), true)
	return ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: remotePod, dst: dst, proto: protoUDP}.build(l4))
}

// checkDelivered verifies that out is inner, decapsulated into pod A's frame (followed by any
// trailing bytes the outer frame had).
func checkDelivered(t *testing.T, out, inner []byte) {
	t.Helper()
	want := ethFrame(podAMAC, podAHostMAC, ethPIPv4, routed(inner, 14)[14:])
	if len(out) < len(want) || !bytes.Equal(out[:len(want)], want) {
		t.Fatalf("decapsulated frame\n got % x\nwant % x", out[:min(len(out), len(want))], want)
	}
}

func TestNodeIngressVXLANOuterChecks(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	prog := coll.Programs["node_ingress"]

	toPod := innerUDP(podA, 100)
	full := len(vxlanOuter{}.frame(toPod)) - 14 // the outer datagram's IPv4 length

	// The inner IPv4 header lies beyond the outer datagram, in what only the Ethernet frame
	// carries: the outer lengths say the datagram ends after the VXLAN header (or inside the
	// inner Ethernet header), the rest of the frame is padding.
	shortTot := func(n int) []byte {
		return vxlanOuter{totLen: 20 + n, udpLen: n}.frame(toPod)
	}
	// The outer datagram ends inside the inner packet, whose own length reaches into the padding.
	innerBeyond := vxlanOuter{totLen: full - 40, udpLen: full - 40 - 20}.frame(toPod)
	reservedVNI := vxlanHdr(0x08000000, vni)
	reservedVNI[7] = 0x01

	tests := []struct {
		name   string
		pkt    []byte
		want   uint32
		dir    int
		reason dropreason.Reason
	}{
		{"outer destination multicast", vxlanOuter{dst: netip.MustParseAddr("239.1.1.1")}.frame(toPod), tcActShot, dirOverlayIn, dropreason.VXLANNotUnicast},
		{"outer destination limited broadcast", vxlanOuter{dst: netip.MustParseAddr("255.255.255.255")}.frame(toPod), tcActShot, dirOverlayIn, dropreason.VXLANNotUnicast},
		{"outer IPv4 header checksum wrong", vxlanOuter{badIPCsum: true}.frame(toPod), tcActShot, dirOverlayIn, dropreason.BadChecksum},
		{"UDP length longer than the IPv4 datagram", vxlanOuter{udpLen: full - 20 + 4}.frame(toPod), tcActShot, dirOverlayIn, dropreason.Invalid},
		{"UDP length shorter than the IPv4 datagram", vxlanOuter{udpLen: full - 20 - 4}.frame(toPod), tcActShot, dirOverlayIn, dropreason.Invalid},
		{"IPv4 length ends after the VXLAN header", shortTot(8 + 8), tcActShot, dirOverlayIn, dropreason.Invalid},
		{"IPv4 length ends inside the inner Ethernet header", shortTot(8 + 8 + 6), tcActShot, dirOverlayIn, dropreason.Invalid},
		{"IPv4 length ends inside the inner IPv4 header", shortTot(8 + 8 + 14 + 10), tcActShot, dirOverlayIn, dropreason.Invalid},
		{"IPv4 length ends inside the inner packet", innerBeyond, tcActShot, dirOverlayIn, dropreason.Invalid},
		{"VXLAN reserved flag bits set", vxlanOuter{vx: vxlanHdr(0x08000001, vni)}.frame(toPod), tcActShot, dirOverlayIn, dropreason.Invalid},
		{"VXLAN reserved VNI bits set", vxlanOuter{vx: reservedVNI}.frame(toPod), tcActShot, dirOverlayIn, dropreason.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, coll, tt.dir, tt.reason)
			fwd := metric(t, coll, dirOverlayIn, dropreason.Forwarded)
			got, _ := run(t, prog, tt.pkt, nil)
			if got != tt.want {
				t.Fatalf("verdict %d, want %d", got, tt.want)
			}
			if after := metric(t, coll, tt.dir, tt.reason); after != before+1 {
				t.Errorf("counter dir %d %v: %d -> %d, want +1", tt.dir, tt.reason, before, after)
			}
			if n := metric(t, coll, dirOverlayIn, dropreason.Forwarded); n != fwd {
				t.Errorf("overlay-in FORWARDED %d -> %d: a bad frame was delivered", fwd, n)
			}
		})
	}
}

// What the kernel accepts is still decapsulated on the NIC: outer UDP checksums (verified in
// software here: test_run's skb has no checksum state), odd lengths, datagrams longer than one
// bpf_csum_diff call sums, and Ethernet padding after the datagram (judged by the IPv4 length).
func TestNodeIngressVXLANOuterAccepted(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	prog := coll.Programs["node_ingress"]

	tests := []struct {
		name  string
		outer vxlanOuter
		inner []byte
	}{
		{"no UDP checksum", vxlanOuter{}, innerUDP(podA, 100)},
		{"UDP checksum", vxlanOuter{udpCsum: true}, innerUDP(podA, 100)},
		{"UDP checksum, odd length", vxlanOuter{udpCsum: true}, innerUDP(podA, 7)},
		{"UDP checksum, length not a multiple of 4", vxlanOuter{udpCsum: true}, innerUDP(podA, 2)},
		{"UDP checksum, 511-byte datagram", vxlanOuter{udpCsum: true}, innerUDP(podA, 511-8-8-14-20-8)},
		{"UDP checksum, 512-byte datagram", vxlanOuter{udpCsum: true}, innerUDP(podA, 512-8-8-14-20-8)},
		{"UDP checksum, 513-byte datagram", vxlanOuter{udpCsum: true}, innerUDP(podA, 513-8-8-14-20-8)},
		{"UDP checksum, full pod MTU", vxlanOuter{udpCsum: true}, innerUDP(podA, podMTU-28)},
		{"Ethernet padding after the datagram", vxlanOuter{trailer: make([]byte, 12)}, innerUDP(podA, 0)},
		{"trailing bytes after a checksummed datagram", vxlanOuter{udpCsum: true, trailer: []byte{1, 2, 3, 4, 5}}, innerUDP(podA, 33)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, coll, dirOverlayIn, dropreason.Forwarded)
			got, out := run(t, prog, tt.outer.frame(tt.inner), nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT (decapsulated to pod A)", got)
			}
			checkDelivered(t, out, tt.inner)
			if n := metric(t, coll, dirOverlayIn, dropreason.Forwarded); n != before+1 {
				t.Errorf("overlay-in FORWARDED %d -> %d, want +1", before, n)
			}
		})
	}
}

// VXLAN to another unicast address is not this node's to decapsulate: it goes to the kernel
// untouched, which forwards it (this node routes for others) or, when the address is another of
// its own, hands it to its VXLAN device, whose overlay_ingress checks the tunnel metadata.
func TestNodeIngressVXLANToAnotherAddressNotDecapsulated(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	in := vxlanOuter{dst: netip.MustParseAddr("192.168.1.77")}.frame(innerUDP(podA, 100))
	got, out := run(t, coll.Programs["node_ingress"], in, nil)
	if got != tcActOK || !bytes.Equal(out, in) {
		t.Fatalf("verdict %d (want TC_ACT_OK), packet changed %v", got, !bytes.Equal(out, in))
	}
	if n := metric(t, coll, dirOverlayIn, dropreason.Forwarded); n != 0 {
		t.Errorf("overlay-in FORWARDED %d, want 0 (not ours)", n)
	}
	if n := metric(t, coll, dirNodeIn, dropreason.Forwarded); n != 1 {
		t.Errorf("node-in FORWARDED %d, want 1", n)
	}
}

// A non-zero outer UDP checksum that the sum in BPF does not confirm is left whole to the kernel,
// never decapsulated here: BPF cannot tell a bad checksum from one a sender on the same host (a veth
// or virtio with checksum offload; a kernel VXLAN device such as Flannel's checksums its frames)
// left for the receiver to trust, partial in the outer field or, under local checksum offload, in
// the inner TCP header. The kernel drops a bad one and decapsulates the rest in its device. The
// first version dropped them all as BAD_CHECKSUM, which cut Flannel peers off in the lab.
func TestNodeIngressVXLANUnconfirmedChecksumLeftToKernel(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	partial := vxlanOuter{}.frame(innerUDP(podA, 100))
	ulen := len(partial) - 14 - 20
	// what udp_set_csum leaves for offload: the folded pseudo-header sum, not inverted
	binary.BigEndian.PutUint16(partial[14+20+6:], ^csum(nil, pseudoSum(remoteNodeIP, nodeIP, protoUDP, ulen)))
	for _, tt := range []struct {
		name string
		in   []byte
	}{
		{"partial (offloaded) outer checksum", partial},
		{"wrong outer checksum", vxlanOuter{badUDPCsum: true}.frame(innerUDP(podA, 100))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, out := run(t, coll.Programs["node_ingress"], tt.in, nil)
			if got != tcActOK || !bytes.Equal(out, tt.in) {
				t.Fatalf("verdict %d (want TC_ACT_OK), packet changed %v", got, !bytes.Equal(out, tt.in))
			}
			for _, r := range []dropreason.Reason{dropreason.BadChecksum, dropreason.Invalid} {
				if n := metric(t, coll, dirOverlayIn, r); n != 0 {
					t.Errorf("overlay-in %v %d, want 0", r, n)
				}
			}
		})
	}
}

// ---- item 4: host traffic into the overlay ----

func TestOverlayEgressTruncatedL4(t *testing.T) {
	coll := newCollection(t, loadOverlay)
	fillCluster(t, coll)
	prog := coll.Programs["overlay_egress"]
	src := netip.MustParseAddr("10.244.1.0")
	hostTo := func(proto uint8, l4 []byte) []byte {
		return ethFrame(anyMAC, vtepMAC, ethPIPv4, ipHdr{src: src, dst: remotePod, proto: proto}.build(l4))
	}
	tcp := tcpSeg(src, remotePod, 41000, 80, tcpSYN, nil)
	udp := udpSeg(src, remotePod, 41000, 53, nil, false)

	for _, tt := range []struct {
		name string
		pkt  []byte
	}{
		{"TCP header of 10 bytes", hostTo(protoTCP, tcp[:10])},
		{"TCP ports only", hostTo(protoTCP, tcp[:4])},
		{"UDP header of 6 bytes", hostTo(protoUDP, udp[:6])},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, coll, dirOverlayOut, dropreason.Invalid)
			if got, _ := run(t, prog, tt.pkt, nil); got != tcActShot {
				t.Fatalf("verdict %d, want TC_ACT_SHOT", got)
			}
			if n := metric(t, coll, dirOverlayOut, dropreason.Invalid); n != before+1 {
				t.Errorf("overlay-out INVALID %d -> %d, want +1", before, n)
			}
		})
	}
	// Whole headers still go through the tunnel.
	for _, pkt := range [][]byte{hostTo(protoTCP, tcp), hostTo(protoUDP, udp)} {
		if got, _ := run(t, prog, pkt, nil); got != tcActOK {
			t.Errorf("whole header: verdict %d, want TC_ACT_OK", got)
		}
	}
}

// ---- item 5: node_xdp and malformed frames ----

// A malformed TCP/UDP frame to a closed NodePort is not node_xdp's to judge: it passes, and
// node_ingress behind it drops it as INVALID, as it does with every malformed frame.
func TestNodeXDPMalformedToClosedNodePortIsInvalid(t *testing.T) {
	xdp := xdpCollection(t)
	node := newCollection(t, loadNode)
	lbCluster(t, node)
	putExtSvc(t, node, netip.Addr{}, closedTCP, protoTCP, 1, lbSvcNodePort|lbSvcClosed)
	putExtSvc(t, node, netip.Addr{}, closedUDP, protoUDP, 2, lbSvcNodePort|lbSvcClosed)

	syn := tcpSeg(strangerIP, nodeIP, 40000, closedTCP, tcpSYN, nil)
	udp := udpSeg(strangerIP, nodeIP, 40000, closedUDP, []byte("query"), true)
	frame := func(proto uint8, l4 []byte, totLen int, trailer int) []byte {
		ip := ipHdr{src: strangerIP, dst: nodeIP, proto: proto, totLen: totLen}.build(l4)
		return append(ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ip), make([]byte, trailer)...)
	}
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"TCP ports only", frame(protoTCP, syn[:4], 0, 0)},
		{"TCP header of 12 bytes", frame(protoTCP, syn[:12], 0, 0)},
		// The frame has a whole TCP header, but the IPv4 length says 8 bytes of it are
		// padding after the datagram.
		{"TCP header ends in the padding", frame(protoTCP, syn, 20+12, 0)},
		{"UDP ports only", frame(protoUDP, udp[:4], 0, 0)},
		{"UDP header ends in the padding", frame(protoUDP, udp[:8], 20+4, 0)},
		{"IPv4 length beyond the frame", frame(protoTCP, syn, 20+20+30, 0)},
		{"IPv4 length shorter than its header", frame(protoTCP, syn, 16, 0)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := runXDP(t, xdp.Programs["node_xdp"], c.pkt, 0); got != xdpPass {
				t.Errorf("node_xdp: verdict %d, want XDP_PASS", got)
			}
			before := metric(t, node, dirNodeIn, dropreason.Invalid)
			if got, _ := run(t, node.Programs["node_ingress"], c.pkt, nil); got != tcActShot {
				t.Errorf("node_ingress: verdict %d, want TC_ACT_SHOT", got)
			}
			if n := metric(t, node, dirNodeIn, dropreason.Invalid); n != before+1 {
				t.Errorf("node-in INVALID %d -> %d, want +1", before, n)
			}
		})
	}
	if n := metric(t, xdp, dirNodeXDP, dropreason.NodePortClosed); n != 0 {
		t.Errorf("node-xdp NODEPORT_CLOSED %d, want 0", n)
	}
	if n := metric(t, node, dirNodeIn, dropreason.NodePortClosed); n != 0 {
		t.Errorf("node-in NODEPORT_CLOSED %d, want 0", n)
	}
	// Padding after a whole header is Ethernet's, not a malformed frame: still closed.
	padded := frame(protoTCP, syn, 0, 6)
	if got := runXDP(t, xdp.Programs["node_xdp"], padded, 0); got != xdpDrop {
		t.Errorf("padded SYN: node_xdp verdict %d, want XDP_DROP", got)
	}
	if got, _ := run(t, node.Programs["node_ingress"], padded, nil); got != tcActShot || metric(t, node, dirNodeIn, dropreason.NodePortClosed) != 1 {
		t.Errorf("padded SYN: node_ingress verdict %d, NODEPORT_CLOSED %d; want a drop counted as NODEPORT_CLOSED", got, metric(t, node, dirNodeIn, dropreason.NodePortClosed))
	}
}
