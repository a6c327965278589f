package datapath

// ICMP errors the datapath sends about a packet it translated to a service backend quote what the
// client sent, the frontend (issue 12, item 1): the client's socket knows client -> frontend, and
// an error quoting the backend matches none, so its connect() timed out instead of failing and
// its path MTU toward the frontend never shrank.

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// TestPodEgressErrorsQuoteFrontend: a pod's packets to a ClusterIP whose backend is in a domain
// this node cannot reach, or too big for the overlay toward a remote backend, are answered with
// errors quoting the packet exactly as the pod sent it.
func TestPodEgressErrorsQuoteFrontend(t *testing.T) {
	t.Run("host unreachable", func(t *testing.T) {
		for _, proto := range []uint8{protoTCP, protoUDP} {
			coll := newCollection(t, loadPod)
			domainCluster(t, coll, siteAID)
			putSvc(t, coll, svcVIP, 80, proto, 7, 0, 0, backend{siteBPod, 8080})
			in := podSend(proto, podA, 40000, svcVIP, 80, tcpSYN)
			got, out := run(t, coll.Programs["pod_egress"], in, nil)
			if got != tcActRedirect {
				t.Fatalf("proto %d: verdict %d, want the ICMP answer redirected back to the pod", proto, got)
			}
			checkHostUnreach(t, out, in) // the quote is in's bytes: client -> frontend
			if d, s := metric(t, coll, dirPodEgress, dropreason.DomainUnreachable), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != 1 || s != 1 {
				t.Errorf("proto %d: DOMAIN_UNREACHABLE %d, ICMP_SENT %d; want 1 each", proto, d, s)
			}
		}
	})
	t.Run("fragmentation needed", func(t *testing.T) {
		payload := bytes.Repeat([]byte{0xcd}, podMTU)
		for name, in := range map[string][]byte{
			"UDP": podPacket(podA, svcVIP, udpSeg(podA, svcVIP, 40000, 80, payload, true), protoUDP, true),
			"TCP": podPacket(podA, svcVIP, tcpSeg(podA, svcVIP, 40000, 80, tcpACK, payload), protoTCP, true),
		} {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			proto := in[14+9]
			putSvc(t, coll, svcVIP, 80, proto, 7, 0, 0, backend{remotePod, 8080})
			got, out := run(t, coll.Programs["pod_egress"], in, nil)
			if got != tcActRedirect {
				t.Fatalf("%s: verdict %d, want the ICMP answer redirected back to the pod", name, got)
			}
			checkFragNeeded(t, out, in, podMTU) // the quote is in's bytes: client -> frontend
		}
	})
	// An untranslated packet's errors are unchanged: the quote is what the pod sent, to the pod.
	t.Run("not a service", func(t *testing.T) {
		coll := newCollection(t, loadPod)
		domainCluster(t, coll, siteAID)
		in := podSend(protoTCP, podA, 40000, siteBPod, 8080, tcpSYN)
		if got, out := run(t, coll.Programs["pod_egress"], in, nil); got != tcActRedirect {
			t.Fatalf("verdict %d", got)
		} else {
			checkHostUnreach(t, out, in)
		}
	})
}

// TestNodePortUnreachableDomainAnswers: an outside client's packet to a node port whose chosen
// backend is in a domain this node cannot reach (the moment before the agent leaves it out) is
// answered at once, out of the NIC, with host unreachable quoting the client's packet as sent (to
// the node port), instead of being dropped silently.
func TestNodePortUnreachableDomainAnswers(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		node := newCollection(t, loadNode)
		domainCluster(t, node, siteAID)
		putExtSvc(t, node, netip.Addr{}, nodePort, proto, 7, lbSvcNodePort, backend{siteBPod, 8080})
		in := clientSend(proto, nodeIP, nodePort, tcpSYN)
		got, out := run(t, node.Programs["node_ingress"], in, nil)
		if got != tcActRedirect {
			t.Fatalf("proto %d: verdict %d, want the ICMP answer redirected out of the NIC", proto, got)
		}
		checkHostUnreach(t, out, in)
		if d, s := metric(t, node, dirNodeIn, dropreason.DomainUnreachable), metric(t, node, dirNodeIn, dropreason.ICMPSent); d != 1 || s != 1 {
			t.Errorf("proto %d: DOMAIN_UNREACHABLE %d, ICMP_SENT %d; want 1 each", proto, d, s)
		}
	}
}

// TestNodePortTooBigAnswers: an outside client's packet with DF to a node port whose remote
// backend's overlay it does not fit is answered out of the NIC with "fragmentation needed" (the
// pod MTU), quoting the packet as the client sent it (to the node port); before, it was dropped
// without a word and a UDP client's path MTU discovery never learned. Without DF the drop stands.
func TestNodePortTooBigAnswers(t *testing.T) {
	payload := bytes.Repeat([]byte{0xab}, 1500-28)
	frame := func(df bool) []byte {
		l4 := udpSeg(outsideClient, nodeIP, 40000, nodePort, payload, true)
		return ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: outsideClient, dst: nodeIP, proto: protoUDP, df: df}.build(l4))
	}
	node := newCollection(t, loadNode)
	domainCluster(t, node, siteAID)
	putExtSvc(t, node, netip.Addr{}, nodePort, protoUDP, 7, lbSvcNodePort, backend{siteAPod, 8080})

	in := frame(true)
	got, out := run(t, node.Programs["node_ingress"], in, nil)
	if got != tcActRedirect {
		t.Fatalf("DF: verdict %d, want the ICMP answer redirected out of the NIC", got)
	}
	checkFragNeeded(t, out, in, podMTU)
	if d, s := metric(t, node, dirNodeIn, dropreason.PktTooBig), metric(t, node, dirNodeIn, dropreason.ICMPSent); d != 1 || s != 1 {
		t.Errorf("DF: PKT_TOO_BIG %d, ICMP_SENT %d; want 1 each", d, s)
	}

	if got, _ := run(t, node.Programs["node_ingress"], frame(false), nil); got != tcActShot {
		t.Errorf("no DF: verdict %d, want TC_ACT_SHOT", got)
	}
	if d, s := metric(t, node, dirNodeIn, dropreason.PktTooBig), metric(t, node, dirNodeIn, dropreason.ICMPSent); d != 2 || s != 1 {
		t.Errorf("no DF: PKT_TOO_BIG %d, ICMP_SENT %d; want 2, 1 (dropped, not answered)", d, s)
	}
}
