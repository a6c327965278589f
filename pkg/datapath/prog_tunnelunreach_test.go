package datapath

// VXLAN from a node of a domain this node cannot reach (bpf/lib/tunnel_unreach.h): during a
// domain change, the receiving node may apply it before the sender; the sender's pod then gets
// "host unreachable" back through the tunnel instead of a silent drop (issue 12, item 2).

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// checkTunnelUnreach verifies that out is VXLAN to the site-b node carrying ICMP host unreachable
// from this node to the inner source of in (a VXLAN frame), quoting in's inner IP packet.
func checkTunnelUnreach(t *testing.T, out, in []byte) {
	t.Helper()
	outer := parseIP(t, out[14:])
	if outer.src != nodeIP || outer.dst != siteBNode || outer.proto != protoUDP {
		t.Fatalf("outer IP %v -> %v proto %d, want %v -> %v UDP", outer.src, outer.dst, outer.proto, nodeIP, siteBNode)
	}
	if _, dport := ports(outer); dport != vxlanPort {
		t.Errorf("outer UDP port %d, want %d", dport, vxlanPort)
	}
	udp := outer.payload
	if vx := udp[8:16]; binary.BigEndian.Uint32(vx[0:]) != 0x08000000 || binary.BigEndian.Uint32(vx[4:]) != vni<<8 {
		t.Errorf("VXLAN header % x", vx)
	}
	inner := udp[16:]
	if idst, isrc := macs(inner); idst != remoteVtepMAC || isrc != vtepMAC {
		t.Errorf("inner MACs dst %x src %x, want the VTEP MACs %x %x", idst, isrc, remoteVtepMAC, vtepMAC)
	}
	orig := parseIP(t, in[14+50:])
	ip := parseIP(t, inner[14:])
	if ip.proto != protoICMP || ip.src != nodeIP || ip.dst != orig.src {
		t.Fatalf("inner IP proto %d %v -> %v, want ICMP %v -> %v", ip.proto, ip.src, ip.dst, nodeIP, orig.src)
	}
	checkL4Csum(t, ip)
	if icmp := ip.payload; icmp[0] != 3 || icmp[1] != 1 {
		t.Errorf("ICMP type %d code %d, want 3/1 (host unreachable)", icmp[0], icmp[1])
	}
	want := make([]byte, icmpUnreachQuote)
	copy(want, in[14+50:])
	if quote := ip.payload[8:]; !bytes.Equal(quote, want) {
		t.Errorf("quote:\n got % x\nwant % x", quote, want)
	}
}

func TestNodeIngressTunnelUnreach(t *testing.T) {
	coll := newCollection(t, loadNode)
	domainCluster(t, coll, siteAID) // site-b is public
	prog := coll.Programs["node_ingress"]
	vx := vxlanHdr(0x08000000, vni)

	in := vxlanFrame(siteBNode, vxlanPort, vx, innerFrame(siteBPod, podA))
	got, out := run(t, prog, in, nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want the answer redirected back out of the NIC", got)
	}
	checkTunnelUnreach(t, out, in)
	if d, s := metric(t, coll, dirOverlayIn, dropreason.DomainUnreachable), metric(t, coll, dirOverlayIn, dropreason.ICMPSent); d != 1 || s != 1 {
		t.Errorf("DOMAIN_UNREACHABLE %d, ICMP_SENT %d; want 1 each", d, s)
	}

	// Not answered, only dropped: an ICMP error (RFC 1122), a non-first fragment, and VXLAN from
	// an address that is no node.
	icmpErr := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: siteBPod, dst: podA, proto: protoICMP}.build(
		icmpMsg(3, 3, [4]byte{}, make([]byte, 28))))
	fragment := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: siteBPod, dst: podA, proto: protoUDP, fragOff: 10}.build(make([]byte, 64)))
	for name, frame := range map[string][]byte{
		"ICMP error": vxlanFrame(siteBNode, vxlanPort, vx, icmpErr),
		"fragment":   vxlanFrame(siteBNode, vxlanPort, vx, fragment),
		"no node":    vxlanFrame(strangerIP, vxlanPort, vx, innerFrame(siteBPod, podA)),
	} {
		sent := metric(t, coll, dirOverlayIn, dropreason.ICMPSent)
		if got, _ := run(t, prog, frame, nil); got != tcActShot || metric(t, coll, dirOverlayIn, dropreason.ICMPSent) != sent {
			t.Errorf("%s: verdict %d, ICMP_SENT %d -> %d; want a silent drop", name, got, sent, metric(t, coll, dirOverlayIn, dropreason.ICMPSent))
		}
	}

	// A flood gets a bounded number of answers (a burst, then 1000 a second).
	const n = 2000
	answered := 0
	for range n {
		if got, _ := run(t, prog, in, nil); got == tcActRedirect {
			answered++
		}
	}
	if answered >= n || answered < 64 {
		t.Errorf("%d of %d flooded packets answered; want the burst (64) and the rate, not all", answered, n)
	}
	t.Logf("%d of %d flooded packets answered", answered, n)
}

// synAck is the server's answer in a handshake the client (port 40000) started with the ISN
// 4999: SYN-ACK acknowledging 5000.
func synAck(server, client netip.Addr) []byte {
	seg := tcpSeg(server, client, 8080, 40000, tcpSYN|tcpACK, nil)
	binary.BigEndian.PutUint32(seg[8:], 5000)
	binary.BigEndian.PutUint16(seg[16:], 0)
	binary.BigEndian.PutUint16(seg[16:], csum(seg, pseudoSum(server, client, protoTCP, len(seg))))
	return seg
}

// checkSynAckAnswer verifies that ip (an IPv4 packet) is ICMP host unreachable from this node to
// client quoting the SYN client sent to server: what the client's socket matches the error with.
func checkSynAckAnswer(t *testing.T, ip parsedIP, client, server netip.Addr) {
	t.Helper()
	if ip.proto != protoICMP || ip.src != nodeIP || ip.dst != client {
		t.Fatalf("IP proto %d %v -> %v, want ICMP %v -> %v", ip.proto, ip.src, ip.dst, nodeIP, client)
	}
	checkL4Csum(t, ip)
	if icmp := ip.payload; icmp[0] != 3 || icmp[1] != 1 {
		t.Errorf("ICMP type %d code %d, want 3/1 (host unreachable)", icmp[0], icmp[1])
	}
	q := parseIP(t, ip.payload[8:])
	if q.proto != protoTCP || q.src != client || q.dst != server {
		t.Fatalf("quoted IP proto %d %v -> %v, want TCP %v -> %v", q.proto, q.src, q.dst, client, server)
	}
	sport, dport := ports(q)
	seq := binary.BigEndian.Uint32(q.payload[4:])
	if sport != 40000 || dport != 8080 || seq != 4999 || q.payload[13] != tcpSYN {
		t.Errorf("quoted TCP %d -> %d seq %d flags %#x, want the client's SYN 40000 -> 8080 seq 4999", sport, dport, seq, q.payload[13])
	}
}

// A SYN-ACK from a node of an unreachable domain to a local pod: the server's node has not
// applied the change, this (the client's) node has, after its pod's SYN left. The client is told,
// not the server: its connect() fails at once instead of after its SYN's retransmission.
func TestNodeIngressTunnelUnreachSynAck(t *testing.T) {
	coll := newCollection(t, loadNode)
	domainCluster(t, coll, siteAID)
	inner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: siteBPod, dst: podA, proto: protoTCP}.build(synAck(siteBPod, podA)))
	got, out := run(t, coll.Programs["node_ingress"], vxlanFrame(siteBNode, vxlanPort, vxlanHdr(0x08000000, vni), inner), nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want the answer redirected to the client pod", got)
	}
	if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
		t.Errorf("MACs dst %x src %x, want the pod's %x from its gateway %x", dst, src, podAMAC, podAHostMAC)
	}
	checkSynAckAnswer(t, parseIP(t, out[14:]), podA, siteBPod)
	if d, s := metric(t, coll, dirOverlayIn, dropreason.DomainUnreachable), metric(t, coll, dirOverlayIn, dropreason.ICMPSent); d != 1 || s != 1 {
		t.Errorf("DOMAIN_UNREACHABLE %d, ICMP_SENT %d; want 1 each", d, s)
	}
}

// A local server's SYN-ACK toward an unreachable domain: this node applied the change after the
// client's SYN got in; the client's node has not yet, so it still takes VXLAN from here. The
// client gets the answer through the tunnel.
func TestPodEgressTunnelUnreachSynAck(t *testing.T) {
	coll := newCollection(t, loadPod)
	domainCluster(t, coll, siteAID)
	got, out := run(t, coll.Programs["pod_egress"], podPacket(podA, siteBPod, synAck(podA, siteBPod), protoTCP, true), nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want the answer tunnelled to the client's node", got)
	}
	outer := parseIP(t, out[14:])
	if outer.src != nodeIP || outer.dst != siteBNode || outer.proto != protoUDP {
		t.Fatalf("outer IP %v -> %v proto %d, want %v -> %v UDP", outer.src, outer.dst, outer.proto, nodeIP, siteBNode)
	}
	if _, dport := ports(outer); dport != vxlanPort {
		t.Errorf("outer UDP port %d, want %d", dport, vxlanPort)
	}
	inner := outer.payload[16:]
	if idst, isrc := macs(inner); idst != remoteVtepMAC || isrc != vtepMAC {
		t.Errorf("inner MACs dst %x src %x, want the VTEP MACs %x %x", idst, isrc, remoteVtepMAC, vtepMAC)
	}
	checkSynAckAnswer(t, parseIP(t, inner[14:]), siteBPod, podA)
	if d, s := metric(t, coll, dirPodEgress, dropreason.DomainUnreachable), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != 1 || s != 1 {
		t.Errorf("DOMAIN_UNREACHABLE %d, ICMP_SENT %d; want 1 each", d, s)
	}
}

// The answer itself, arriving at the client's node: the server's node (site-b) applied a change,
// dropped this node's pod's packet and answered through the tunnel, and this node applied the
// same change in between. The answer (ICMP host unreachable from the peer node's own address,
// outer and inner, to a local pod) is what the pod needs to fail at once instead of after a
// retransmission: it is delivered, while anything else from that node stays dropped.
func TestNodeIngressTunnelUnreachAnswerDelivered(t *testing.T) {
	coll := newCollection(t, loadNode)
	domainCluster(t, coll, siteAID) // site-b is public
	prog := coll.Programs["node_ingress"]
	vx := vxlanHdr(0x08000000, vni)
	syn := ipHdr{src: podA, dst: siteBPod, proto: protoTCP}.build(tcpSeg(podA, siteBPod, 40000, 8080, tcpSYN, nil))
	answerTo := func(src, dst netip.Addr, typ, code byte) []byte {
		return vxlanFrame(siteBNode, vxlanPort, vx, ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4,
			ipHdr{src: src, dst: dst, proto: protoICMP}.build(icmpMsg(typ, code, [4]byte{}, syn[:28]))))
	}
	answer := func(src netip.Addr, typ, code byte) []byte { return answerTo(src, podA, typ, code) }

	got, out := run(t, prog, answer(siteBNode, 3, 1), nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want the peer's answer delivered to the pod", got)
	}
	if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
		t.Errorf("MACs dst %x src %x, want the pod's %x from its gateway %x", dst, src, podAMAC, podAHostMAC)
	}
	ip := parseIP(t, out[14:])
	if ip.proto != protoICMP || ip.src != siteBNode || ip.dst != podA || ip.payload[0] != 3 || ip.payload[1] != 1 {
		t.Errorf("delivered IP proto %d %v -> %v ICMP %d/%d, want host unreachable %v -> %v",
			ip.proto, ip.src, ip.dst, ip.payload[0], ip.payload[1], siteBNode, podA)
	}
	if d := metric(t, coll, dirOverlayIn, dropreason.DomainUnreachable); d != 0 {
		t.Errorf("DOMAIN_UNREACHABLE %d, want 0: the answer is not a drop", d)
	}

	// The same answer to this node's own connection (its overlay address) or to a cloud host it
	// carries as the cloud gateway: left to the kernel's VXLAN device, which routes it.
	for name, dst := range map[string]netip.Addr{"the overlay address": overlayAddr, "a host outside the cluster": strangerIP} {
		if got, _ := run(t, prog, answerTo(siteBNode, dst, 3, 1), nil); got != tcActOK {
			t.Errorf("answer to %s: verdict %d, want it to the kernel (%d)", name, got, tcActOK)
		}
	}

	// Only that answer: another error from the node, one from its pod, or one to a remote pod
	// is dropped.
	for name, frame := range map[string][]byte{
		"port unreachable from the node":   answer(siteBNode, 3, 3),
		"host unreachable from a pod":      answer(siteBPod, 3, 1),
		"host unreachable to a remote pod": answerTo(siteBNode, siteBPod, 3, 1),
	} {
		if got, _ := run(t, prog, frame, nil); got != tcActShot {
			t.Errorf("%s: verdict %d, want a drop", name, got)
		}
	}
}
