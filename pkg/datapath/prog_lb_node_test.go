package datapath

// Services: a pod reaching itself through a frontend (hairpin), and the node's own connections to
// frontends (overlay_egress) with their replies.

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

func TestServiceHairpin(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		t.Run(fmt.Sprint("proto ", proto), func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			prog := coll.Programs["pod_egress"]
			putSvc(t, coll, svcVIP, 80, proto, 1, 0, 0, backend{podA, 8080})

			// Pod A reaches itself: from the hairpin address, into its own veth.
			got, out := run(t, prog, podSend(proto, podA, 40000, svcVIP, 80, tcpSYN), nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d", got)
			}
			if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
				t.Errorf("MACs dst %x src %x, want pod A's", dst, src)
			}
			checkTuple(t, out[14:], hairpinIP, 40000, podA, 8080)
			fwd, _ := ctGet(t, coll, ctKey(podA, 40000, svcVIP, 80, proto, ctFwd))
			rev, ok := ctGet(t, coll, ctKey(podA, 8080, hairpinIP, 40000, proto, ctRev))
			if fwd.Flags&ctHairpin == 0 || !ok || rev.Flags&ctHairpin == 0 {
				t.Errorf("FWD flags %#x, REV %+v (found %v): want HAIRPIN on both", fwd.Flags, rev, ok)
			}

			// Its answer goes to the hairpin address through its default route (the host veth).
			got, out = run(t, prog, podSend(proto, podA, 8080, hairpinIP, 40000, tcpSYN|tcpACK), nil)
			if got != tcActRedirect {
				t.Fatalf("reply: verdict %d", got)
			}
			if dst, _ := macs(out); dst != podAMAC {
				t.Errorf("reply MAC dst %x, want pod A's", dst)
			}
			checkTuple(t, out[14:], svcVIP, 80, podA, 40000)

			// Established: translated the same way again.
			_, out = run(t, prog, podSend(proto, podA, 40000, svcVIP, 80, tcpACK), nil)
			checkTuple(t, out[14:], hairpinIP, 40000, podA, 8080)

			// The hairpin address answers nothing else.
			drops := metric(t, coll, dirPodEgress, dropreason.UnknownEndpoint)
			if got, _ := run(t, prog, podSend(proto, podA, 8080, hairpinIP, 40001, tcpACK), nil); got != tcActShot ||
				metric(t, coll, dirPodEgress, dropreason.UnknownEndpoint) != drops+1 {
				t.Errorf("untracked packet to the hairpin address: verdict %d, not counted as UNKNOWN_ENDPOINT", got)
			}
		})
	}
}

// hostTo is the node's own packet to dst as routed into edgeplane.1 (source: the overlay
// address, the route's src).
func hostTo(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, proto uint8) []byte {
	return ethFrame(anyMAC, vtepMAC, ethPIPv4, ipHdr{src: src, dst: dst, proto: proto, df: true}.build(l4Seg(proto, src, dst, sport, dport, tcpSYN, []byte("hi"))))
}

func TestServiceFromNode(t *testing.T) {
	coll := newCollection(t, loadOverlay)
	lbCluster(t, coll, withMasquerade())
	prog := coll.Programs["overlay_egress"]

	t.Run("remote backend: through the tunnel", func(t *testing.T) {
		putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{remotePod, 8080})
		got, out := run(t, prog, hostTo(overlayAddr, 50000, svcVIP, 80, protoTCP), nil)
		if got != tcActOK {
			t.Fatalf("verdict %d, want TC_ACT_OK (the device encapsulates)", got)
		}
		if dst, src := macs(out); dst != remoteVtepMAC || src != vtepMAC {
			t.Errorf("inner MACs dst %x src %x, want the VTEPs'", dst, src)
		}
		checkTuple(t, out[14:], overlayAddr, 50000, remotePod, 8080)
		if _, ok := ctGet(t, coll, ctKey(remotePod, 8080, overlayAddr, 50000, protoTCP, ctRev)); !ok {
			t.Errorf("no REV entry")
		}
	})
	t.Run("local backend: into the pod's veth", func(t *testing.T) {
		putSvc(t, coll, svcVIP, 81, protoUDP, 2, 0, 0, backend{podB, 8080})
		got, out := run(t, prog, hostTo(overlayAddr, 50000, svcVIP, 81, protoUDP), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		if dst, src := macs(out); dst != podBMAC || src != podBHostMAC {
			t.Errorf("MACs dst %x src %x, want pod B's", dst, src)
		}
		checkTuple(t, out[14:], overlayAddr, 50000, podB, 8080)
	})
	t.Run("local backend, client outside the cluster: the overlay address", func(t *testing.T) {
		got, out := run(t, prog, hostTo(nodeIP, 50001, svcVIP, 81, protoUDP), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		p := parseIP(t, out[14:])
		checkL4Csum(t, p)
		if _, dport := ports(p); p.src != overlayAddr || p.dst != podB || dport != 8080 {
			t.Errorf("packet %v -> %v:%d, want %v -> %v:8080", p.src, p.dst, dport, overlayAddr, podB)
		}
		if _, ok := ctGet(t, coll, ctKey(podB, 8080, nodeIP, 50001, protoUDP, ctRev)); !ok {
			t.Errorf("no REV entry for the client as it sent")
		}
	})
	t.Run("host-network backend: out of the underlay NIC", func(t *testing.T) {
		putSvc(t, coll, svcVIP, 443, protoTCP, 3, 0, 0, backend{apiServer, 6443})
		got, out := run(t, prog, hostTo(overlayAddr, 50002, svcVIP, 443, protoTCP), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkTuple(t, out[14:], overlayAddr, 50002, apiServer, 6443)
	})
	for _, tt := range []struct {
		name    string
		backend backend
		reason  dropreason.Reason
	}{
		{"backend pod gone", backend{netip.MustParseAddr("10.244.1.99"), 80}, dropreason.UnknownEndpoint},
		{"backend without a route", backend{netip.MustParseAddr("10.244.9.9"), 80}, dropreason.NoRoute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			putSvc(t, coll, svcVIP, 82, protoTCP, 4, 0, 0, tt.backend)
			before := metric(t, coll, dirOverlayOut, tt.reason)
			if got, _ := run(t, prog, hostTo(overlayAddr, 50003, svcVIP, 82, protoTCP), nil); got != tcActShot {
				t.Fatalf("verdict %d", got)
			}
			if metric(t, coll, dirOverlayOut, tt.reason) != before+1 {
				t.Errorf("%v not counted", tt.reason)
			}
			coll.Maps["lb_ct_map"].Delete(ctKey(overlayAddr, 50003, svcVIP, 82, protoTCP, ctFwd))
		})
	}
	// No backend: TestServiceFromNodeWithoutBackends (prog_gaps_test.go).
}

func TestServiceReplyToNode(t *testing.T) {
	overlay := newCollection(t, loadOverlay)
	lbCluster(t, overlay)
	putSvc(t, overlay, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	putSvc(t, overlay, svcVIP, 443, protoTCP, 2, 0, 0, backend{apiServer, 6443})
	run(t, overlay.Programs["overlay_egress"], hostTo(overlayAddr, 50000, svcVIP, 80, protoTCP), nil)
	run(t, overlay.Programs["overlay_egress"], hostTo(overlayAddr, 50001, svcVIP, 443, protoTCP), nil)

	t.Run("local backend: pod_egress to the host", func(t *testing.T) {
		pod := newCollection(t, loadPod)
		lbCluster(t, pod)
		copyCT(t, overlay, pod)
		sendAs(t, pod, podB)
		got, out := run(t, pod.Programs["pod_egress"], podSend(protoTCP, podB, 8080, overlayAddr, 50000, tcpSYN|tcpACK), nil)
		if got != tcActOK {
			t.Fatalf("verdict %d, want TC_ACT_OK (the host stack)", got)
		}
		checkTuple(t, out[14:], svcVIP, 80, overlayAddr, 50000)
		// Pods may talk to the node's overlay address like to its other addresses.
		in := podSend(protoUDP, podB, 1234, overlayAddr, 53, 0)
		if got, out := run(t, pod.Programs["pod_egress"], in, nil); got != tcActOK || !bytes.Equal(out[:len(in)], in) {
			t.Errorf("pod to the overlay address: verdict %d or changed", got)
		}
	})
	t.Run("host-network backend: node_ingress to the host", func(t *testing.T) {
		node := newCollection(t, loadNode)
		lbCluster(t, node)
		copyCT(t, overlay, node)
		// (The masquerade on the way out and back is node_egress/nat.h's, tested on its own.)
		in := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: apiServer, dst: overlayAddr, proto: protoTCP}.build(
			tcpSeg(apiServer, overlayAddr, 6443, 50001, tcpSYN|tcpACK, nil)))
		got, out := run(t, node.Programs["node_ingress"], in, nil)
		if got != tcActOK {
			t.Fatalf("verdict %d, want TC_ACT_OK", got)
		}
		checkTuple(t, out[14:], svcVIP, 443, overlayAddr, 50001)
	})
}
