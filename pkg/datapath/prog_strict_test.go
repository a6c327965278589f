package datapath

// Strictness of the datapath about what it receives (issue 12, items 3-5): no ICMP error about an
// ICMP error or a later fragment; VXLAN decapsulated on the NIC only when the kernel's own receive
// path would have accepted the outer packet; host traffic into the overlay with a truncated L4
// header dropped; node_xdp leaving malformed frames to node_ingress, which counts them INVALID.

import (
	"bytes"
	"net/netip"
	"testing"
)

// ---- item 3: "fragmentation needed" ----

func TestPodEgressNoFragNeededAboutICMPErrorsOrLaterFragments(t *testing.T) {
	payload := bytes.Repeat([]byte{0xcd}, podMTU)
	laterFragment := ethFrame(podAHostMAC, podAMAC, ethPIPv4, ipHdr{src: podA, dst: remotePod, proto: protoUDP, df: true, fragOff: 185}.build(payload))
	tests := []struct {
		name     string
		pkt      []byte
		answered bool
	}{
		{"ICMP destination unreachable", podPacket(podA, remotePod, icmpMsg(3, 3, [4]byte{}, payload), protoICMP, true), false},
		{"ICMP time exceeded", podPacket(podA, remotePod, icmpMsg(11, 0, [4]byte{}, payload), protoICMP, true), false},
		{"ICMP fragmentation needed", podPacket(podA, remotePod, icmpMsg(3, 4, [4]byte{0, 0, 0x05, 0xaa}, payload), protoICMP, true), false},
		{"later fragment", laterFragment, false},
		// An echo request is no error: it is answered, as before.
		{"ICMP echo request", podPacket(podA, remotePod, icmpMsg(8, 0, echoRest(7, 1), payload), protoICMP, true), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			coll := newCollection(t, loadPod)
			fillCluster(t, coll)
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
			if d, s := metric(t, coll, dirPodEgress, DropPktTooBig), metric(t, coll, dirPodEgress, ReasonICMPSent); d != 1 || s != sent {
				t.Errorf("PKT_TOO_BIG %d, ICMP_SENT %d; want 1, %d", d, s, sent)
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
			before := metric(t, coll, dirOverlayOut, DropInvalid)
			if got, _ := run(t, prog, tt.pkt, nil); got != tcActShot {
				t.Fatalf("verdict %d, want TC_ACT_SHOT", got)
			}
			if n := metric(t, coll, dirOverlayOut, DropInvalid); n != before+1 {
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
			before := metric(t, node, dirNodeIn, DropInvalid)
			if got, _ := run(t, node.Programs["node_ingress"], c.pkt, nil); got != tcActShot {
				t.Errorf("node_ingress: verdict %d, want TC_ACT_SHOT", got)
			}
			if n := metric(t, node, dirNodeIn, DropInvalid); n != before+1 {
				t.Errorf("node-in INVALID %d -> %d, want +1", before, n)
			}
		})
	}
	if n := metric(t, xdp, dirNodeXDP, DropNodePortClosed); n != 0 {
		t.Errorf("node-xdp NODEPORT_CLOSED %d, want 0", n)
	}
	if n := metric(t, node, dirNodeIn, DropNodePortClosed); n != 0 {
		t.Errorf("node-in NODEPORT_CLOSED %d, want 0", n)
	}
	// Padding after a whole header is Ethernet's, not a malformed frame: still closed.
	padded := frame(protoTCP, syn, 0, 6)
	if got := runXDP(t, xdp.Programs["node_xdp"], padded, 0); got != xdpDrop {
		t.Errorf("padded SYN: node_xdp verdict %d, want XDP_DROP", got)
	}
	if got, _ := run(t, node.Programs["node_ingress"], padded, nil); got != tcActShot || metric(t, node, dirNodeIn, DropNodePortClosed) != 1 {
		t.Errorf("padded SYN: node_ingress verdict %d, NODEPORT_CLOSED %d; want a drop counted as NODEPORT_CLOSED", got, metric(t, node, dirNodeIn, DropNodePortClosed))
	}
}
