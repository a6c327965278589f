package datapath

// Services: replies of local and remote backends reverse-translated on their way to the pod,
// and ICMP errors about a translated packet quoting what the client sent.

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestServiceReplyLocalBackend(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		t.Run(fmt.Sprint("proto ", proto), func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			putSvc(t, coll, svcVIP, 80, proto, 1, 0, 0, backend{podB, 8080})
			prog := coll.Programs["pod_egress"]
			run(t, prog, podSend(proto, podA, 40000, svcVIP, 80, tcpSYN), nil)

			sendAs(t, coll, podB)
			got, out := run(t, prog, podSend(proto, podB, 8080, podA, 40000, tcpSYN|tcpACK), nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
			}
			if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
				t.Errorf("MACs dst %x src %x, want pod A's", dst, src)
			}
			checkTuple(t, out[14:], svcVIP, 80, podA, 40000)
			rev, _ := ctGet(t, coll, ctKey(podB, 8080, podA, 40000, proto, ctRev))
			fwd, _ := ctGet(t, coll, ctKey(podA, 40000, svcVIP, 80, proto, ctFwd))
			if rev.Flags&ctSeenReply == 0 || fwd.Flags&ctSeenReply == 0 {
				t.Errorf("SEEN_REPLY: REV flags %#x, FWD flags %#x; want it on both", rev.Flags, fwd.Flags)
			}
			// Pod B's own traffic to pod A from another port is no reply: untouched.
			in := podSend(proto, podB, 8081, podA, 40000, tcpSYN)
			if _, out := run(t, prog, in, nil); !bytes.Equal(out[14:len(in)], routed(in, 14)[14:]) {
				t.Errorf("non-reply packet changed beyond the hop's TTL")
			}
		})
	}
}

func TestServiceReplyRemoteBackend(t *testing.T) {
	pod := newCollection(t, loadPod)
	lbCluster(t, pod)
	putSvc(t, pod, svcVIP, 80, protoTCP, 1, 0, 0, backend{remotePod, 8080})
	run(t, pod.Programs["pod_egress"], podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), nil)

	node := newCollection(t, loadNode)
	lbCluster(t, node)
	copyCT(t, pod, node)
	reply := func() []byte {
		l4 := tcpSeg(remotePod, podA, 8080, 40000, tcpSYN|tcpACK, nil)
		return ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: remotePod, dst: podA, proto: protoTCP}.build(l4))
	}()

	t.Run("VXLAN decapsulated by node_ingress", func(t *testing.T) {
		in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), reply)
		got, out := run(t, node.Programs["node_ingress"], in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
			t.Errorf("MACs dst %x src %x, want pod A's", dst, src)
		}
		checkTuple(t, out[14:], svcVIP, 80, podA, 40000)
	})
	t.Run("direct routing through node_ingress", func(t *testing.T) {
		in := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, reply[14:])
		got, out := run(t, node.Programs["node_ingress"], in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkTuple(t, out[14:], svcVIP, 80, podA, 40000)
	})
	t.Run("expired: not translated", func(t *testing.T) {
		ageCT(t, node, ctKey(remotePod, 8080, podA, 40000, protoTCP, ctRev), 7*time.Hour)
		in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), reply)
		if _, out := run(t, node.Programs["node_ingress"], in, nil); !bytes.Equal(out[14:14+len(reply)-14], routed(reply, 14)[14:]) {
			t.Errorf("reply of an expired connection translated")
		}
	})
}

// portUnreach is the ICMP error a backend's kernel sends when nothing listens on the port the
// client's (translated) UDP packet went to: from the backend to the client, quoting that packet.
func portUnreach(backend netip.Addr, bport uint16, client netip.Addr, cport uint16) []byte {
	quoted := ipHdr{src: client, dst: backend, proto: protoUDP}.build(udpSeg(client, backend, cport, bport, []byte("query"), true))
	return ipHdr{src: backend, dst: client, proto: protoICMP}.build(icmpMsg(3, 3, [4]byte{}, quoted))
}

// checkPortUnreachReply verifies an ICMP port unreachable about the client's packet to the
// frontend, from the frontend.
func checkPortUnreachReply(t *testing.T, b []byte) {
	t.Helper()
	p := parseIP(t, b)
	checkL4Csum(t, p)
	if p.proto != protoICMP || p.src != svcVIP || p.dst != podA {
		t.Errorf("error %v -> %v proto %d, want %v -> %v ICMP", p.src, p.dst, p.proto, svcVIP, podA)
	}
	q := parseIP(t, p.payload[8:]) // checks the quoted header's checksum
	if sport, dport := ports(q); q.src != podA || sport != 40000 || q.dst != svcVIP || dport != 53 {
		t.Errorf("quote %v:%d -> %v:%d, want %v:40000 -> %v:53", q.src, sport, q.dst, dport, podA, svcVIP)
	}
}

func TestServiceICMPErrorReply(t *testing.T) {
	t.Run("remote backend, through VXLAN", func(t *testing.T) {
		pod := newCollection(t, loadPod)
		lbCluster(t, pod)
		putSvc(t, pod, svcVIP, 53, protoUDP, 1, 0, 0, backend{remotePod, 5353})
		run(t, pod.Programs["pod_egress"], podSend(protoUDP, podA, 40000, svcVIP, 53, 0), nil)
		node := newCollection(t, loadNode)
		lbCluster(t, node)
		copyCT(t, pod, node)

		inner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, portUnreach(remotePod, 5353, podA, 40000))
		got, out := run(t, node.Programs["node_ingress"], vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkPortUnreachReply(t, out[14:])

		// An error about another packet to that pod is left alone.
		other := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, portUnreach(remotePod, 5353, podA, 40001))
		_, out = run(t, node.Programs["node_ingress"], vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), other), nil)
		if !bytes.Equal(out[14:len(other)], routed(other, 14)[14:]) {
			t.Errorf("unrelated ICMP error changed beyond the hop's TTL")
		}
	})
	t.Run("local backend", func(t *testing.T) {
		coll := newCollection(t, loadPod)
		lbCluster(t, coll)
		putSvc(t, coll, svcVIP, 53, protoUDP, 1, 0, 0, backend{podB, 5353})
		run(t, coll.Programs["pod_egress"], podSend(protoUDP, podA, 40000, svcVIP, 53, 0), nil)
		sendAs(t, coll, podB)
		in := ethFrame(podBHostMAC, podBMAC, ethPIPv4, portUnreach(podB, 5353, podA, 40000))
		got, out := run(t, coll.Programs["pod_egress"], in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkPortUnreachReply(t, out[14:])
	})
}
