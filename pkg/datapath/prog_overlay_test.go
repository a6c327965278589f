package datapath

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

func TestOverlayIngressWithoutTunnelMetadata(t *testing.T) {
	coll := newCollection(t, loadOverlay)
	fillCluster(t, coll)
	// test_run cannot attach tunnel metadata to the skb, so only the fail-closed side is
	// reachable here: a packet on the VXLAN device that did not come out of a tunnel has no known
	// source. (The accepting side needs a real collect_md device: the lab covers it.)
	in := innerFrame(remotePod, podA)
	if got, _ := run(t, coll.Programs["overlay_ingress"], in, nil); got != tcActShot {
		t.Fatalf("verdict %d, want TC_ACT_SHOT", got)
	}
	if n := metric(t, coll, dirOverlayIn, dropreason.UnknownTunnelSource); n != 1 {
		t.Errorf("UNKNOWN_TUNNEL_SOURCE counted %d, want 1", n)
	}
}

func TestOverlayEgress(t *testing.T) {
	coll := newCollection(t, loadOverlay)
	fillCluster(t, coll)
	prog := coll.Programs["overlay_egress"]
	// Host traffic routed into edgeplane.1: the kernel gave it the device's MAC and whatever
	// destination; we address it to the peer's VTEP and set the tunnel key.
	hostTo := func(dst netip.Addr) []byte {
		return ethFrame(anyMAC, vtepMAC, ethPIPv4, ipHdr{src: netip.MustParseAddr("10.244.1.0"), dst: dst, proto: protoUDP}.build(udpSeg(nodeIP, dst, 1, 2, nil, false)))
	}

	in := hostTo(remotePod)
	got, out := run(t, prog, in, nil)
	if got != tcActOK {
		t.Fatalf("verdict %d, want TC_ACT_OK", got)
	}
	dst, src := macs(out)
	if dst != remoteVtepMAC || src != vtepMAC || !bytes.Equal(out[12:], in[12:]) {
		t.Errorf("MACs dst %x src %x (want %x %x), or packet changed", dst, src, remoteVtepMAC, vtepMAC)
	}
	if n := metric(t, coll, dirOverlayOut, dropreason.Forwarded); n != 1 {
		t.Errorf("forwarded %d, want 1", n)
	}

	putRoute(t, coll, "10.244.3.0/24", podRoute{NodeIp: be32(netip.MustParseAddr("192.168.1.3"))})
	for _, tt := range []struct {
		name   string
		pkt    []byte
		reason dropreason.Reason
	}{
		{"no route", hostTo(netip.MustParseAddr("10.244.9.9")), dropreason.NoRoute},
		{"our own pod CIDR", hostTo(netip.MustParseAddr("10.244.1.99")), dropreason.NoRoute},
		{"route to an unknown node", hostTo(netip.MustParseAddr("10.244.3.3")), dropreason.UnknownNode},
		{"not IPv4", ethFrame(anyMAC, vtepMAC, ethPIPv6, make([]byte, 60)), dropreason.UnsupportedL3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, coll, dirOverlayOut, tt.reason)
			if got, _ := run(t, prog, tt.pkt, nil); got != tcActShot {
				t.Fatalf("verdict %d, want TC_ACT_SHOT", got)
			}
			if after := metric(t, coll, dirOverlayOut, tt.reason); after != before+1 {
				t.Errorf("%v: %d -> %d", tt.reason, before, after)
			}
		})
	}
}

// What the kernel routes into edgeplane.1 for a peer of this node's route-mode domain (the node's
// own traffic, and what it forwards: a packet a gateway sent here for a pod this node does not
// own) is not tunnelled: it leaves the underlay NIC unencapsulated toward the next hop to the
// owning node, unchanged (the host already decremented the TTL of what it forwarded), as a pod's
// packet on a direct route does.
func TestOverlayEgressDirectRoute(t *testing.T) {
	coll := newCollection(t, loadOverlay)
	fillCluster(t, coll)
	putRoute(t, coll, "10.244.2.0/24", podRoute{NodeIp: be32(remoteNodeIP), Encap: 1 /* ROUTE_ENCAP_DIRECT */})
	in := ethFrame(anyMAC, vtepMAC, ethPIPv4, ipHdr{src: podA, dst: remotePod, proto: protoUDP}.build(udpSeg(podA, remotePod, 1, 2, nil, false)))
	got, out := run(t, coll.Programs["overlay_egress"], in, nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want TC_ACT_REDIRECT (out of the underlay NIC)", got)
	}
	dst, src := macs(out)
	if dst != remoteNextHop || src != underlayMAC || !bytes.Equal(out[12:], in[12:]) {
		t.Errorf("MACs dst %x src %x (want the next hop %x from the NIC %x), or packet changed", dst, src, remoteNextHop, underlayMAC)
	}
	if n := metric(t, coll, dirOverlayOut, dropreason.Forwarded); n != 1 {
		t.Errorf("forwarded %d, want 1", n)
	}
}
