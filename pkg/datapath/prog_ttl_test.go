package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// withTTL returns a copy of frame whose IPv4 header at ipOff has the TTL ttl (checksum fixed).
func withTTL(frame []byte, ipOff int, ttl uint8) []byte {
	out := bytes.Clone(frame)
	ip := out[ipOff:]
	ip[8] = ttl
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], csum(ip[:int(ip[0]&0xf)*4], 0))
	return out
}

// checkTimeExceeded verifies the IPv4 packet at b: ICMP "time exceeded in transit" from src to
// dst, quoting the first icmpUnreachQuote bytes of quoted (zero-padded).
func checkTimeExceeded(t *testing.T, b []byte, src, dst netip.Addr, quoted []byte) {
	t.Helper()
	ip := parseIP(t, b)
	if ip.proto != protoICMP || ip.src != src || ip.dst != dst {
		t.Fatalf("IP proto %d %v -> %v, want ICMP %v -> %v", ip.proto, ip.src, ip.dst, src, dst)
	}
	checkL4Csum(t, ip)
	if icmp := ip.payload; icmp[0] != 11 || icmp[1] != 0 {
		t.Errorf("ICMP type %d code %d, want 11/0 (time exceeded in transit)", icmp[0], icmp[1])
	}
	want := make([]byte, icmpUnreachQuote)
	copy(want, quoted)
	if quote := ip.payload[8:]; !bytes.Equal(quote[:min(len(quote), len(want))], want) {
		t.Errorf("quote:\n got % x\nwant % x", quote, want)
	}
}

// pod_egress is the sending node's hop: the TTL is judged before anything else is decided about
// the route (MTU), decremented on what it redirects (to a local pod, into the tunnel, onto the
// underlay in route mode), and a packet whose TTL ran out is answered with "time exceeded" from
// the node IP, quoting what the pod sent. What goes to the host stack is left to the kernel.
func TestPodEgressTTL(t *testing.T) {
	coll := newCollection(t, loadPod)
	fillCluster(t, coll)
	prog := coll.Programs["pod_egress"]

	for _, tt := range []struct {
		name string
		dst  netip.Addr
	}{{"remote pod", remotePod}, {"local pod", podB}} {
		t.Run(tt.name+", TTL 1: answered", func(t *testing.T) {
			in := withTTL(podSend(protoUDP, podA, 40000, tt.dst, 53, 0), 14, 1)
			drops, sent := metric(t, coll, dirPodEgress, dropreason.TTLExceeded), metric(t, coll, dirPodEgress, dropreason.ICMPSent)
			got, out := run(t, prog, in, nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT (the answer, back into the pod)", got)
			}
			if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
				t.Errorf("answer MACs dst %x src %x, want pod A's swapped", dst, src)
			}
			checkTimeExceeded(t, out[14:], nodeIP, podA, in[14:])
			if d, s := metric(t, coll, dirPodEgress, dropreason.TTLExceeded), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != drops+1 || s != sent+1 {
				t.Errorf("TTL_EXCEEDED %d -> %d, ICMP_SENT %d -> %d; want one each", drops, d, sent, s)
			}
		})
	}
	t.Run("remote pod, TTL 2: forwarded with TTL 1", func(t *testing.T) {
		in := withTTL(podSend(protoUDP, podA, 40000, remotePod, 53, 0), 14, 2)
		got, out := run(t, prog, in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkVXLAN(t, out, withTTL(in, 14, 1), true)
	})
	t.Run("remote pod, TTL 0: dropped, answered", func(t *testing.T) {
		in := withTTL(podSend(protoUDP, podA, 40000, remotePod, 53, 0), 14, 0)
		if got, out := run(t, prog, in, nil); got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT (the answer)", got)
		} else {
			checkTimeExceeded(t, out[14:], nodeIP, podA, in[14:])
		}
	})
	t.Run("outside the cluster, TTL 1: the host stack's", func(t *testing.T) {
		in := withTTL(podSend(protoUDP, podA, 40000, internetIP, 53, 0), 14, 1)
		got, out := run(t, prog, in, nil)
		if got != tcActOK || !bytes.Equal(out, in) {
			t.Fatalf("verdict %d (packet changed: %v), want TC_ACT_OK and the packet untouched", got, !bytes.Equal(out, in))
		}
	})
	t.Run("too big without DF, TTL 2: the host stack's, not decremented here", func(t *testing.T) {
		in := withTTL(podUDPNoDF(podA, remotePod, podMTU-20-8+1), 14, 2)
		got, out := run(t, prog, in, nil)
		if got != tcActOK || !bytes.Equal(out, in) {
			t.Fatalf("verdict %d (packet changed: %v), want TC_ACT_OK and the packet untouched", got, !bytes.Equal(out, in))
		}
	})
	t.Run("an ICMP error with TTL 1: dropped, not answered", func(t *testing.T) {
		in := withTTL(podPacket(podA, remotePod, icmpMsg(3, 3, [4]byte{}, make([]byte, 28)), protoICMP, true), 14, 1)
		drops, sent := metric(t, coll, dirPodEgress, dropreason.TTLExceeded), metric(t, coll, dirPodEgress, dropreason.ICMPSent)
		if got, _ := run(t, prog, in, nil); got != tcActShot {
			t.Fatalf("verdict %d, want TC_ACT_SHOT", got)
		}
		if d, s := metric(t, coll, dirPodEgress, dropreason.TTLExceeded), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != drops+1 || s != sent {
			t.Errorf("TTL_EXCEEDED %d -> %d, ICMP_SENT %d -> %d; want a drop without answer", drops, d, sent, s)
		}
	})
	t.Run("route mode, TTL 2: onto the underlay with TTL 1", func(t *testing.T) {
		putRoute(t, coll, "10.244.2.0/24", podRoute{NodeIp: be32(remoteNodeIP), Encap: 1 /* ROUTE_ENCAP_DIRECT */})
		defer putRoute(t, coll, "10.244.2.0/24", podRoute{NodeIp: be32(remoteNodeIP)})
		in := withTTL(podUDP(podA, remotePod, 100), 14, 2)
		got, out := run(t, prog, in, nil)
		if got != tcActRedirect || !bytes.Equal(out[12:], withTTL(in, 14, 1)[12:]) {
			t.Fatalf("verdict %d, packet % x; want TC_ACT_REDIRECT with TTL 1", got, out)
		}
	})
}

// A pod's packet translated to a remote backend whose TTL runs out is answered quoting what the
// pod sent: the frontend, not the backend.
func TestPodEgressTTLQuotesFrontend(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{remotePod, 8080})
	in := withTTL(podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), 14, 1)
	got, out := run(t, coll.Programs["pod_egress"], in, nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want TC_ACT_REDIRECT (the answer)", got)
	}
	checkTimeExceeded(t, out[14:], nodeIP, podA, in[14:])
}

// node_ingress is the receiving node's hop: VXLAN to a local pod is delivered with the inner TTL
// decremented; one whose TTL runs out is answered through the tunnel to the sending node ("time
// exceeded" from this node's IP to the remote pod); the same for a packet routed to a local pod
// without encapsulation (route mode), answered out of the NIC.
func TestNodeIngressTTL(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	prog := coll.Programs["node_ingress"]
	vx := vxlanHdr(0x08000000, vni)

	t.Run("VXLAN, TTL 2: delivered with TTL 1", func(t *testing.T) {
		inner := withTTL(innerFrame(remotePod, podA), 14, 2)
		got, out := run(t, prog, vxlanFrame(remoteNodeIP, vxlanPort, vx, inner), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkDelivered(t, out, withTTL(inner, 14, 2)) // checkDelivered expects one hop: TTL 1
	})
	t.Run("VXLAN, TTL 1: answered through the tunnel", func(t *testing.T) {
		inner := withTTL(innerFrame(remotePod, podA), 14, 1)
		drops, sent := metric(t, coll, dirOverlayIn, dropreason.TTLExceeded), metric(t, coll, dirOverlayIn, dropreason.ICMPSent)
		got, out := run(t, prog, vxlanFrame(remoteNodeIP, vxlanPort, vx, inner), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT (the answer, back out of the NIC)", got)
		}
		outer := parseIP(t, out[14:])
		if outer.src != nodeIP || outer.dst != remoteNodeIP || outer.proto != protoUDP {
			t.Fatalf("outer IP %v -> %v proto %d, want %v -> %v UDP", outer.src, outer.dst, outer.proto, nodeIP, remoteNodeIP)
		}
		if _, dport := ports(outer); dport != vxlanPort {
			t.Errorf("outer UDP port %d, want %d", dport, vxlanPort)
		}
		checkTimeExceeded(t, outer.payload[16+14:], nodeIP, remotePod, inner[14:])
		if d, s := metric(t, coll, dirOverlayIn, dropreason.TTLExceeded), metric(t, coll, dirOverlayIn, dropreason.ICMPSent); d != drops+1 || s != sent+1 {
			t.Errorf("TTL_EXCEEDED %d -> %d, ICMP_SENT %d -> %d; want one each", drops, d, sent, s)
		}
	})
	t.Run("routed without encapsulation, TTL 1: answered out of the NIC", func(t *testing.T) {
		in := withTTL(ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: remotePod, dst: podA, proto: protoUDP}.build(
			udpSeg(remotePod, podA, 1234, 5678, []byte("payload"), true))), 14, 1)
		drops := metric(t, coll, dirNodeIn, dropreason.TTLExceeded)
		got, out := run(t, prog, in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT (the answer)", got)
		}
		if dst, src := macs(out); dst != remoteNextHop || src != underlayMAC {
			t.Errorf("answer MACs dst %x src %x, want the frame's swapped", dst, src)
		}
		checkTimeExceeded(t, out[14:], nodeIP, remotePod, in[14:])
		if d := metric(t, coll, dirNodeIn, dropreason.TTLExceeded); d != drops+1 {
			t.Errorf("TTL_EXCEEDED %d -> %d, want one", drops, d)
		}
	})
	t.Run("routed without encapsulation, TTL 2: delivered with TTL 1", func(t *testing.T) {
		in := withTTL(ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: remotePod, dst: podA, proto: protoUDP}.build(
			udpSeg(remotePod, podA, 1234, 5678, []byte("payload"), true))), 14, 2)
		got, out := run(t, prog, in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		if want := ethFrame(podAMAC, podAHostMAC, ethPIPv4, withTTL(in, 14, 1)[14:]); !bytes.Equal(out, want) {
			t.Errorf("delivered\n got % x\nwant % x", out, want)
		}
	})
}
