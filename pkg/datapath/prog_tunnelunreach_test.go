package datapath

// VXLAN from a node of a domain this node cannot reach (bpf/lib/tunnel_unreach.h): during a
// domain change, the receiving node may apply it before the sender; the sender's pod then gets
// "host unreachable" back through the tunnel instead of a silent drop (issue 12, item 2).

import (
	"bytes"
	"encoding/binary"
	"testing"
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
	if d, s := metric(t, coll, dirOverlayIn, DropDomainUnreachable), metric(t, coll, dirOverlayIn, ReasonICMPSent); d != 1 || s != 1 {
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
		sent := metric(t, coll, dirOverlayIn, ReasonICMPSent)
		if got, _ := run(t, prog, frame, nil); got != tcActShot || metric(t, coll, dirOverlayIn, ReasonICMPSent) != sent {
			t.Errorf("%s: verdict %d, ICMP_SENT %d -> %d; want a silent drop", name, got, sent, metric(t, coll, dirOverlayIn, ReasonICMPSent))
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
