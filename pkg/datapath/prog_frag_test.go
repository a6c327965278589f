package datapath

// Services and IPv4 fragments (bpf/lib/frag.h): a UDP datagram longer than the pod MTU reaches
// the datapath as fragments, of which only the first carries the ports. Each fragment is
// translated to the same backend (and the backend's fragmented answer back to the frontend), and
// the outputs reassemble into a datagram whose UDP checksum is right for the new addresses.

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// fragmentIP splits the L4 datagram l4 as a sender with the pod MTU does: IPv4 packets (no
// Ethernet) with IP id id, each at most podMTU bytes, offsets in units of 8 bytes.
func fragmentIP(src, dst netip.Addr, proto uint8, id uint16, l4 []byte) [][]byte {
	chunk := (podMTU - 20) &^ 7
	var frags [][]byte
	for off := 0; off < len(l4); off += chunk {
		end := min(off+chunk, len(l4))
		h := ipHdr{src: src, dst: dst, proto: proto, id: id, mf: end < len(l4), fragOff: uint16(off / 8)}
		frags = append(frags, h.build(l4[off:end]))
	}
	return frags
}

// reassemble puts the IPv4 fragments back together as the receiver's kernel does, after checking
// each one's header checksum and that they agree on addresses, id and protocol.
func reassemble(t testing.TB, frags [][]byte) parsedIP {
	t.Helper()
	var whole parsedIP
	var data []byte
	for i, b := range frags {
		p := parseIP(t, b)
		id := binary.BigEndian.Uint16(p.hdr[4:])
		fo := binary.BigEndian.Uint16(p.hdr[6:])
		if i == 0 {
			whole = parsedIP{hdr: p.hdr, src: p.src, dst: p.dst, proto: p.proto}
		} else if p.src != whole.src || p.dst != whole.dst || p.proto != whole.proto ||
			id != binary.BigEndian.Uint16(whole.hdr[4:]) {
			t.Fatalf("fragment %d: %v -> %v proto %d id %d, not of the datagram %v -> %v", i, p.src, p.dst, p.proto, id, whole.src, whole.dst)
		}
		if off := int(fo&0x1fff) * 8; off != len(data) {
			t.Fatalf("fragment %d at offset %d, want %d", i, off, len(data))
		}
		if more := fo&0x2000 != 0; more != (i < len(frags)-1) {
			t.Fatalf("fragment %d: MF %v", i, more)
		}
		data = append(data, p.payload...)
	}
	whole.payload = data
	return whole
}

// runFrags runs each fragment (an Ethernet frame) through prog and returns the IPv4 packets
// it left behind, starting ipOff bytes into each output, after checking that every one was
// redirected.
func runFrags(t testing.TB, prog *ebpf.Program, frames [][]byte, ipOff int) [][]byte {
	t.Helper()
	var outs [][]byte
	for i, in := range frames {
		got, out := run(t, prog, in, nil)
		if got != tcActRedirect {
			t.Fatalf("fragment %d: verdict %d, want TC_ACT_REDIRECT", i, got)
		}
		outs = append(outs, out[ipOff:])
	}
	return outs
}

// udpDatagram is a UDP datagram of n payload bytes (a pattern, so that a misplaced fragment shows).
func udpDatagram(src, dst netip.Addr, sport, dport uint16, n int) []byte {
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	return udpSeg(src, dst, sport, dport, payload, true)
}

func podFrames(src, dst netip.Addr, id uint16, l4 []byte) [][]byte {
	var frames [][]byte
	for _, f := range fragmentIP(src, dst, protoUDP, id, l4) {
		frames = append(frames, ethFrame(podAHostMAC, podAMAC, ethPIPv4, f))
	}
	return frames
}

// checkDatagram reassembles outs and checks the tuple, the UDP checksum over the whole datagram and
// the payload against the datagram sent.
func checkDatagram(t testing.TB, outs [][]byte, sent []byte, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) {
	t.Helper()
	whole := reassemble(t, outs)
	if len(whole.payload) != len(sent) {
		t.Fatalf("reassembled %d bytes, sent %d", len(whole.payload), len(sent))
	}
	checkL4Csum(t, whole)
	if gs, gd := ports(whole); whole.src != src || gs != sport || whole.dst != dst || gd != dport {
		t.Errorf("datagram %v:%d -> %v:%d, want %v:%d -> %v:%d", whole.src, gs, whole.dst, gd, src, sport, dst, dport)
	}
	if !bytes.Equal(whole.payload[8:], sent[8:]) {
		t.Errorf("payload changed")
	}
}

func TestServiceFragmentsForward(t *testing.T) {
	for _, tt := range []struct {
		name    string
		backend backend
		ipOff   int
	}{
		{"local backend", backend{podB, 8080}, 14},
		{"remote backend", backend{remotePod, 8080}, 14 + 50}, // in VXLAN toward its node
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			putSvc(t, coll, svcVIP, 80, protoUDP, 7, 0, 0, tt.backend)
			sent := udpDatagram(podA, svcVIP, 40000, 80, 2000)
			frames := podFrames(podA, svcVIP, 0x1234, sent)
			if len(frames) != 2 {
				t.Fatalf("%d fragments, want 2", len(frames))
			}
			outs := runFrags(t, coll.Programs["pod_egress"], frames, tt.ipOff)
			checkDatagram(t, outs, sent, podA, 40000, tt.backend.ip, tt.backend.port)
		})
	}
}

// A backend's fragmented answer: its fragments are all turned back into frontend -> client,
// wherever the backend is.
func TestServiceFragmentsReply(t *testing.T) {
	t.Run("local backend", func(t *testing.T) {
		coll := newCollection(t, loadPod)
		lbCluster(t, coll)
		putSvc(t, coll, svcVIP, 80, protoUDP, 1, 0, 0, backend{podB, 8080})
		prog := coll.Programs["pod_egress"]
		run(t, prog, podSend(protoUDP, podA, 40000, svcVIP, 80, 0), nil)

		sendAs(t, coll, podB)
		sent := udpDatagram(podB, podA, 8080, 40000, 2000)
		outs := runFrags(t, prog, podFrames(podB, podA, 0x4321, sent), 14)
		checkDatagram(t, outs, sent, svcVIP, 80, podA, 40000)
	})
	t.Run("remote backend, VXLAN decapsulated by node_ingress", func(t *testing.T) {
		pod := newCollection(t, loadPod)
		lbCluster(t, pod)
		putSvc(t, pod, svcVIP, 80, protoUDP, 1, 0, 0, backend{remotePod, 8080})
		run(t, pod.Programs["pod_egress"], podSend(protoUDP, podA, 40000, svcVIP, 80, 0), nil)
		node := newCollection(t, loadNode)
		lbCluster(t, node)
		copyCT(t, pod, node)

		sent := udpDatagram(remotePod, podA, 8080, 40000, 2000)
		var frames [][]byte
		for _, f := range fragmentIP(remotePod, podA, protoUDP, 0x5555, sent) {
			inner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, f)
			frames = append(frames, vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner))
		}
		outs := runFrags(t, node.Programs["node_ingress"], frames, 14)
		checkDatagram(t, outs, sent, svcVIP, 80, podA, 40000)
	})
}

// A client outside the cluster sends a fragmented datagram to a NodePort whose backend is local
// (node_ingress), and the backend's fragmented answer leaves with the frontend as its source
// (pod_egress, out of the NIC).
func TestNodePortFragmentsLocalBackend(t *testing.T) {
	node := newCollection(t, loadNode)
	lbCluster(t, node)
	putExtSvc(t, node, netip.Addr{}, nodePort, protoUDP, 7, lbSvcNodePort, backend{podB, 8080})
	sent := udpDatagram(outsideClient, nodeIP, 40000, nodePort, 2000)
	var frames [][]byte
	for _, f := range fragmentIP(outsideClient, nodeIP, protoUDP, 0x2468, sent) {
		frames = append(frames, ethFrame(underlayMAC, remoteNextHop, ethPIPv4, f))
	}
	outs := runFrags(t, node.Programs["node_ingress"], frames, 14)
	checkDatagram(t, outs, sent, outsideClient, 40000, podB, 8080)

	pod := newCollection(t, loadPod)
	lbCluster(t, pod)
	copyCT(t, node, pod)
	sendAs(t, pod, podB)
	answer := udpDatagram(podB, outsideClient, 8080, 40000, 2000)
	outs = runFrags(t, pod.Programs["pod_egress"], podFrames(podB, outsideClient, 0x1357, answer), 14)
	checkDatagram(t, outs, answer, nodeIP, nodePort, outsideClient, 40000)
}

// Fragmented traffic that is no service's (pod to pod) still passes unchanged.
func TestFragmentsNotAService(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	sent := udpDatagram(podA, podB, 40000, 9000, 2000)
	frames := podFrames(podA, podB, 0x99, sent)
	outs := runFrags(t, coll.Programs["pod_egress"], frames, 14)
	for i, out := range outs {
		if !bytes.Equal(out[:len(frames[i])-14], routed(frames[i], 14)[14:]) {
			t.Errorf("fragment %d changed beyond the hop's TTL", i)
		}
	}
}

// A later fragment whose first fragment was not seen (reordered ahead of it, or its entry
// evicted) has no ports: it is left alone, as before fragments were tracked (most such fragments
// are no Service's: the node's own traffic, a peer's fragmented VXLAN), not dropped. Later ICMP
// fragments (no ports involved) pass.
func TestServiceFragmentWithoutFirst(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 80, protoUDP, 7, 0, 0, backend{remotePod, 8080})
	prog := coll.Programs["pod_egress"]
	sent := udpDatagram(podA, svcVIP, 40000, 80, 2000)
	frames := podFrames(podA, svcVIP, 0x777, sent)

	if got, out := run(t, prog, frames[1], nil); got != tcActOK || !bytes.Equal(out[:len(frames[1])], frames[1]) {
		t.Errorf("later fragment alone: verdict %d (want TC_ACT_OK), changed %v; want it left alone", got, !bytes.Equal(out[:len(frames[1])], frames[1]))
	}
	// The same datagram in order afterwards goes through whole.
	outs := runFrags(t, prog, frames, 14+50)
	checkDatagram(t, outs, sent, podA, 40000, remotePod, 8080)

	icmp := icmpMsg(8, 0, echoRest(1, 1), bytes.Repeat([]byte{1}, 2000))
	later := fragmentIP(podA, remotePod, protoICMP, 0x888, icmp)[1]
	in := ethFrame(podAHostMAC, podAMAC, ethPIPv4, later)
	if got, _ := run(t, prog, in, nil); got != tcActRedirect {
		t.Errorf("later ICMP fragment: verdict %d, want TC_ACT_REDIRECT", got)
	}
}

// The fragments of two datagrams of one flow interleaved: each later fragment follows its own
// first (keyed by IP id), and all go to the connection's backend.
func TestServiceFragmentsInterleaved(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 80, protoUDP, 7, 0, 0, backend{podB, 8080}, backend{remotePod, 8080})
	prog := coll.Programs["pod_egress"]
	a := udpDatagram(podA, svcVIP, 40000, 80, 2000)
	b := udpDatagram(podA, svcVIP, 40000, 80, 1800)
	fa, fb := podFrames(podA, svcVIP, 1, a), podFrames(podA, svcVIP, 2, b)

	got, out := run(t, prog, fa[0], nil)
	if got != tcActRedirect {
		t.Fatalf("first fragment: verdict %d", got)
	}
	be := ctBackend(t, coll, podA, 40000, protoUDP)
	off := 14
	if be.ip == remotePod {
		off = 14 + 50
	}
	outs := runFrags(t, prog, [][]byte{fb[0], fa[1], fb[1]}, off)
	checkDatagram(t, [][]byte{out[off:], outs[1]}, a, podA, 40000, be.ip, be.port)
	checkDatagram(t, [][]byte{outs[0], outs[2]}, b, podA, 40000, be.ip, be.port)
}
