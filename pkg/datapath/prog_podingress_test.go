package datapath

// pod_ingress (bpf/pod.c): what the host stack sends into a pod through the host veth's TC egress.
// A pod's connection to a frontend whose backend is one of this node's own addresses (a
// host-network backend here: an agent, an ingress controller, the API server on a control-plane
// node) goes to the host stack translated by pod_egress; the host answers from its address along
// `podIP/32 dev <host veth>`, and pod_ingress gives the answer the frontend back as its source.

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

const dirPodIngress = 6

// nodeSecondIP is another of this node's addresses (a second address on its NIC).
var nodeSecondIP = netip.MustParseAddr("172.30.0.201")

// hostToPodA is a packet the host stack sends to pod A through its host veth: from the host veth's
// MAC to the pod's.
func hostToPodA(ip []byte) []byte { return ethFrame(podAMAC, podAHostMAC, ethPIPv4, ip) }

// connectToHostBackend makes pod A's connection podA:40000 -> svcVIP:vport with the backend be (an
// address of this node) through pod_egress, which must hand it to the host stack translated.
func connectToHostBackend(t *testing.T, coll *ebpf.Collection, proto uint8, vport uint16, be backend) {
	t.Helper()
	putSvc(t, coll, svcVIP, vport, proto, 7, 0, 0, be)
	got, out := run(t, coll.Programs["pod_egress"], podSend(proto, podA, 40000, svcVIP, vport, tcpSYN), nil)
	if got != tcActOK {
		t.Fatalf("pod_egress verdict %d, want TC_ACT_OK (to the host stack)", got)
	}
	checkTuple(t, out[14:], podA, 40000, be.ip, be.port)
}

func TestPodIngressHostBackendReply(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		for _, addr := range []netip.Addr{nodeIP, nodeSecondIP, overlayAddr} {
			t.Run(fmt.Sprintf("proto %d backend %v", proto, addr), func(t *testing.T) {
				coll := newCollection(t, loadPod)
				lbCluster(t, coll)
				be := backend{addr, 8080}
				connectToHostBackend(t, coll, proto, 80, be)

				prog := coll.Programs["pod_ingress"]
				fwdBefore := metric(t, coll, dirPodIngress, dropreason.Forwarded)
				in := hostToPodA(ipHdr{src: addr, dst: podA, proto: proto}.build(l4Seg(proto, addr, podA, 8080, 40000, tcpSYN|tcpACK, []byte("world"))))
				got, out := run(t, prog, in, nil)
				if got != tcActOK {
					t.Fatalf("verdict %d, want TC_ACT_OK (on into the pod)", got)
				}
				p := checkTuple(t, out[14:], svcVIP, 80, podA, 40000)
				if !bytes.Equal(p.payload[len(p.payload)-5:], []byte("world")) {
					t.Errorf("payload changed")
				}
				if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
					t.Errorf("MACs dst %x src %x changed", dst, src)
				}
				rev, _ := ctGet(t, coll, ctKey(addr, 8080, podA, 40000, proto, ctRev))
				fwd, _ := ctGet(t, coll, ctKey(podA, 40000, svcVIP, 80, proto, ctFwd))
				if rev.Flags&ctSeenReply == 0 || fwd.Flags&ctSeenReply == 0 {
					t.Errorf("SEEN_REPLY: REV flags %#x, FWD flags %#x; want it on both", rev.Flags, fwd.Flags)
				}
				if d := metric(t, coll, dirPodIngress, dropreason.Forwarded) - fwdBefore; d != 1 {
					t.Errorf("pod-ingress FORWARDED +%d, want +1", d)
				}

				// The host's other traffic to the pod is no reply: another port of the same
				// address, another client port, the pod's own port from a host client.
				for _, other := range [][]byte{
					l4Seg(proto, addr, podA, 8081, 40000, tcpSYN|tcpACK, []byte("other")),
					l4Seg(proto, addr, podA, 8080, 40001, tcpSYN|tcpACK, []byte("other")),
					l4Seg(proto, nodeIP, podA, 50000, 8080, tcpSYN, []byte("probe")),
				} {
					src := addr
					if bytes.Equal(other[len(other)-5:], []byte("probe")) {
						src = nodeIP
					}
					in := hostToPodA(ipHdr{src: src, dst: podA, proto: proto}.build(other))
					if got, out := run(t, prog, in, nil); got != tcActOK || !bytes.Equal(out[:len(in)], in) {
						t.Errorf("host packet %v -> %v: verdict %d, changed %v; want TC_ACT_OK untouched", src, podA, got, !bytes.Equal(out[:len(in)], in))
					}
				}
			})
		}
	}
}

// Once its connection's entries are dead, the host's packet from the old tuple is no reply.
func TestPodIngressExpiredConnection(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		t.Run(fmt.Sprint("proto ", proto), func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			connectToHostBackend(t, coll, proto, 80, backend{nodeIP, 8080})
			ageCT(t, coll, ctKey(nodeIP, 8080, podA, 40000, proto, ctRev), 7*time.Hour)
			in := hostToPodA(ipHdr{src: nodeIP, dst: podA, proto: proto}.build(l4Seg(proto, nodeIP, podA, 8080, 40000, tcpACK, []byte("late!"))))
			if got, out := run(t, coll.Programs["pod_ingress"], in, nil); got != tcActOK || !bytes.Equal(out[:len(in)], in) {
				t.Errorf("verdict %d, changed %v; want TC_ACT_OK untouched", got, !bytes.Equal(out[:len(in)], in))
			}
		})
	}
}

// A UDP host backend that does not listen: the host's port unreachable quotes pod A's packet as the
// host got it (to the node's address); pod A's socket only knows the frontend.
func TestPodIngressHostPortUnreachable(t *testing.T) {
	for _, addr := range []netip.Addr{nodeIP, nodeSecondIP} {
		t.Run(fmt.Sprint("backend ", addr), func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			connectToHostBackend(t, coll, protoUDP, 53, backend{addr, 5353})
			got, out := run(t, coll.Programs["pod_ingress"], hostToPodA(portUnreach(addr, 5353, podA, 40000)), nil)
			if got != tcActOK {
				t.Fatalf("verdict %d, want TC_ACT_OK", got)
			}
			checkPortUnreachReply(t, out[14:])

			// An error about another of pod A's packets to the host is left alone.
			other := hostToPodA(portUnreach(addr, 5353, podA, 40001))
			if _, out := run(t, coll.Programs["pod_ingress"], other, nil); !bytes.Equal(out[:len(other)], other) {
				t.Errorf("unrelated ICMP error changed")
			}
		})
	}
}

// What is not IPv4 TCP/UDP/ICMP error passes as it is: ARP, IPv6 (neighbour discovery on the veth),
// echo replies, and everything when no service has any connection.
func TestPodIngressPassesOtherTraffic(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	echo := ipHdr{src: nodeIP, dst: podA, proto: protoICMP}.build(icmpMsg(0, 0, echoRest(7, 1), []byte("ping")))
	for name, in := range map[string][]byte{
		"arp":        ethFrame(podAMAC, podAHostMAC, ethPARP, make([]byte, 28)),
		"ipv6":       ethFrame(podAMAC, podAHostMAC, ethPIPv6, make([]byte, 48)),
		"echo reply": hostToPodA(echo),
		"tcp":        hostToPodA(ipHdr{src: nodeIP, dst: podA, proto: protoTCP}.build(tcpSeg(nodeIP, podA, 8080, 40000, tcpACK, []byte("x")))),
	} {
		if got, out := run(t, coll.Programs["pod_ingress"], in, nil); got != tcActOK || !bytes.Equal(out[:len(in)], in) {
			t.Errorf("%s: verdict %d, changed %v; want TC_ACT_OK untouched", name, got, !bytes.Equal(out[:len(in)], in))
		}
	}
}
