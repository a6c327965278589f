package datapath

// Strictness of the datapath about what it receives (issue 12, items 3-5): no ICMP error about an
// ICMP error or a later fragment; VXLAN decapsulated on the NIC only when the kernel's own receive
// path would have accepted the outer packet; host traffic into the overlay with a truncated L4
// header dropped; node_xdp leaving malformed frames to node_ingress, which counts them INVALID.

import (
	"bytes"
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
