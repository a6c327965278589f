package datapath

// The node's own connections (host processes, hostNetwork pods) to a frontend whose backend is one
// of the node's own addresses (bpf/overlay.c, HOST_HAIRPIN_IP): overlay_egress gives them the
// host-hairpin address as source and turns them around into the device's ingress, so the host
// stack takes them in as from outside; the host answers the hairpin address, which the agent routes
// into the device, and overlay_egress restores frontend -> overlay address and turns that around
// too. Before, overlay_egress sent them out of the underlay NIC toward the node's own address,
// and the connection timed out.

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/vishvananda/netlink"
)

const toHostMark = 0xed9e1c3b // bpf/lib/icmp.h ICMP_TO_HOST_MARK

// hostHairpinNetns is xdpNetns (the node IP and secondaryIP on eth0, otherDeviceIP on another
// device, forwarding on) with a default route, as a node has: the FIB says which addresses are the
// node's, and apiServer is reached through the gateway.
func hostHairpinNetns(t *testing.T) ns.NetNS {
	t.Helper()
	netns, nic := xdpNetns(t)
	if err := netns.Do(func(ns.NetNS) error {
		return netlink.RouteAdd(&netlink.Route{LinkIndex: nic, Gw: net.ParseIP("192.168.1.254")})
	}); err != nil {
		t.Fatal(err)
	}
	return netns
}

// runIn runs one packet through prog in netns (the FIB lookup is the calling thread's netns) with
// the skb's mark, and returns the verdict, the packet and the mark the program left.
func runIn(t *testing.T, netns ns.NetNS, prog *ebpf.Program, pkt []byte, mark uint32) (uint32, []byte, uint32) {
	t.Helper()
	var ctxOut skbCtx
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256), Context: skbCtx{Mark: mark}, ContextOut: &ctxOut}
	var got uint32
	if err := netns.Do(func(ns.NetNS) error {
		var err error
		got, err = prog.Run(opts)
		return err
	}); err != nil {
		t.Fatalf("test run: %v", err)
	}
	return got, opts.DataOut, ctxOut.Mark
}

// hostAnswer is the host stack's packet to the hairpin address, routed into edgeplane.1 (NOARP: the
// device's MAC on both sides).
func hostAnswer(ip []byte) []byte { return ethFrame(vtepMAC, vtepMAC, ethPIPv4, ip) }

// checkToHost checks a packet overlay_egress turned around into the device's ingress: redirected,
// marked for overlay_ingress, the device's MAC as destination, src:sport -> dst:dport with valid
// checksums and the payload kept.
func checkToHost(t *testing.T, verdict uint32, out []byte, mark uint32, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, payload []byte) {
	t.Helper()
	if verdict != tcActRedirect {
		t.Fatalf("verdict %d, want TC_ACT_REDIRECT (into the device's ingress)", verdict)
	}
	if mark != toHostMark {
		t.Errorf("mark %#x, want %#x (overlay_ingress lets it through)", mark, toHostMark)
	}
	if dst, _ := macs(out); dst != vtepMAC {
		t.Errorf("destination MAC %x, want the device's %x", dst, vtepMAC)
	}
	p := checkTuple(t, out[14:], src, sport, dst, dport)
	if !bytes.HasSuffix(p.payload, payload) {
		t.Errorf("payload changed: % x", p.payload)
	}
}

func TestServiceFromNodeToOwnHostBackend(t *testing.T) {
	netns := hostHairpinNetns(t)
	for _, proto := range []uint8{protoTCP, protoUDP} {
		for _, addr := range []netip.Addr{nodeIP, secondaryIP, otherDeviceIP} {
			t.Run(fmt.Sprintf("proto %d backend %v", proto, addr), func(t *testing.T) {
				coll := newCollection(t, loadOverlay)
				lbCluster(t, coll, withMasquerade())
				egress := coll.Programs["overlay_egress"]
				putSvc(t, coll, svcVIP, 80, proto, 1, 0, 0, backend{addr, 8080})

				fwdBefore := metric(t, coll, dirOverlayOut, dropreason.Forwarded)
				in := ethFrame(anyMAC, vtepMAC, ethPIPv4, ipHdr{src: overlayAddr, dst: svcVIP, proto: proto, df: true}.build(
					l4Seg(proto, overlayAddr, svcVIP, 50000, 80, tcpSYN, []byte("hello"))))
				got, out, mark := runIn(t, netns, egress, in, 0)
				checkToHost(t, got, out, mark, HostHairpinIP, 50000, addr, 8080, []byte("hello"))
				if _, ok := ctGet(t, coll, ctKey(addr, 8080, overlayAddr, 50000, proto, ctRev)); !ok {
					t.Errorf("no REV entry %v:8080 -> %v:50000", addr, overlayAddr)
				}

				// The host answers the hairpin address from the backend's address.
				ans := hostAnswer(ipHdr{src: addr, dst: HostHairpinIP, proto: proto}.build(
					l4Seg(proto, addr, HostHairpinIP, 8080, 50000, tcpSYN|tcpACK, []byte("world"))))
				got, out, mark = runIn(t, netns, egress, ans, 0)
				checkToHost(t, got, out, mark, svcVIP, 80, overlayAddr, 50000, []byte("world"))
				rev, _ := ctGet(t, coll, ctKey(addr, 8080, overlayAddr, 50000, proto, ctRev))
				fwd, _ := ctGet(t, coll, ctKey(overlayAddr, 50000, svcVIP, 80, proto, ctFwd))
				if rev.Flags&ctSeenReply == 0 || fwd.Flags&ctSeenReply == 0 {
					t.Errorf("SEEN_REPLY: REV flags %#x, FWD flags %#x; want it on both", rev.Flags, fwd.Flags)
				}
				if d := metric(t, coll, dirOverlayOut, dropreason.Forwarded) - fwdBefore; d != 2 {
					t.Errorf("overlay-out FORWARDED +%d, want +2", d)
				}

				// overlay_ingress lets both through to the host stack, mark cleared, uncounted.
				inBefore := metric(t, coll, dirOverlayIn, dropreason.Forwarded)
				turned := bytes.Clone(out[:len(ans)])
				got, back, mark := runIn(t, netns, coll.Programs["overlay_ingress"], turned, toHostMark)
				if got != tcActOK || mark != 0 || !bytes.Equal(back[:len(turned)], turned) {
					t.Errorf("overlay_ingress: verdict %d, mark %#x, changed %v; want TC_ACT_OK, mark cleared, untouched",
						got, mark, !bytes.Equal(back[:len(turned)], turned))
				}
				if metric(t, coll, dirOverlayIn, dropreason.Forwarded) != inBefore {
					t.Errorf("overlay_ingress counted the turned-around packet")
				}

				// The host's other packets to the hairpin address answer no connection.
				drops := metric(t, coll, dirOverlayOut, dropreason.UnknownEndpoint)
				for _, other := range [][]byte{
					l4Seg(proto, addr, HostHairpinIP, 8081, 50000, tcpSYN|tcpACK, []byte("other")),
					l4Seg(proto, addr, HostHairpinIP, 8080, 50001, tcpSYN|tcpACK, []byte("other")),
				} {
					if got, _, _ := runIn(t, netns, egress, hostAnswer(ipHdr{src: addr, dst: HostHairpinIP, proto: proto}.build(other)), 0); got != tcActShot {
						t.Errorf("unrelated packet to the hairpin address: verdict %d, want TC_ACT_SHOT", got)
					}
				}
				echo := ipHdr{src: addr, dst: HostHairpinIP, proto: protoICMP}.build(icmpMsg(8, 0, echoRest(7, 1), []byte("ping")))
				if got, _, _ := runIn(t, netns, egress, hostAnswer(echo), 0); got != tcActShot {
					t.Errorf("echo request to the hairpin address: verdict %d, want TC_ACT_SHOT", got)
				}
				if d := metric(t, coll, dirOverlayOut, dropreason.UnknownEndpoint) - drops; d != 3 {
					t.Errorf("overlay-out UNKNOWN_ENDPOINT +%d, want +3", d)
				}
			})
		}
	}
}

// A socket bound to the node IP: the service's own hairpin (client = backend: source
// 169.254.42.1), then the gateway's translation to the overlay address, then the host hairpin;
// the answer is undone in the reverse order.
func TestServiceFromNodeIPToOwnHostBackend(t *testing.T) {
	netns := hostHairpinNetns(t)
	for _, proto := range []uint8{protoTCP, protoUDP} {
		t.Run(fmt.Sprint("proto ", proto), func(t *testing.T) {
			coll := newCollection(t, loadOverlay)
			lbCluster(t, coll, withMasquerade())
			egress := coll.Programs["overlay_egress"]
			putSvc(t, coll, svcVIP, 80, proto, 1, 0, 0, backend{nodeIP, 8080})

			in := ethFrame(anyMAC, vtepMAC, ethPIPv4, ipHdr{src: nodeIP, dst: svcVIP, proto: proto, df: true}.build(
				l4Seg(proto, nodeIP, svcVIP, 50010, 80, tcpSYN, []byte("hello"))))
			got, out, mark := runIn(t, netns, egress, in, 0)
			if got != tcActRedirect || mark != toHostMark {
				t.Fatalf("verdict %d mark %#x, want TC_ACT_REDIRECT into the ingress", got, mark)
			}
			p := parseIP(t, out[14:])
			checkL4Csum(t, p)
			sport, dport := ports(p)
			if p.src != HostHairpinIP || p.dst != nodeIP || dport != 8080 {
				t.Fatalf("packet %v:%d -> %v:%d, want %v -> %v:8080", p.src, sport, p.dst, dport, HostHairpinIP, nodeIP)
			}
			ans := hostAnswer(ipHdr{src: nodeIP, dst: HostHairpinIP, proto: proto}.build(
				l4Seg(proto, nodeIP, HostHairpinIP, 8080, sport, tcpSYN|tcpACK, []byte("world"))))
			got, out, mark = runIn(t, netns, egress, ans, 0)
			checkToHost(t, got, out, mark, svcVIP, 80, nodeIP, 50010, []byte("world"))
		})
	}
}

// A UDP host backend that does not listen: the host's port unreachable to the hairpin address
// quotes the packet as the host got it; the node's socket only knows the frontend.
func TestServiceFromNodeOwnHostPortUnreachable(t *testing.T) {
	netns := hostHairpinNetns(t)
	coll := newCollection(t, loadOverlay)
	lbCluster(t, coll)
	egress := coll.Programs["overlay_egress"]
	putSvc(t, coll, svcVIP, 53, protoUDP, 1, 0, 0, backend{nodeIP, 5353})
	if got, _, _ := runIn(t, netns, egress, hostTo(overlayAddr, 40000, svcVIP, 53, protoUDP), 0); got != tcActRedirect {
		t.Fatalf("forward verdict %d", got)
	}
	got, out, mark := runIn(t, netns, egress, hostAnswer(portUnreach(nodeIP, 5353, HostHairpinIP, 40000)), 0)
	if got != tcActRedirect || mark != toHostMark {
		t.Fatalf("verdict %d mark %#x, want TC_ACT_REDIRECT into the ingress", got, mark)
	}
	p := parseIP(t, out[14:])
	checkL4Csum(t, p)
	if p.proto != protoICMP || p.src != svcVIP || p.dst != overlayAddr {
		t.Errorf("error %v -> %v proto %d, want %v -> %v ICMP", p.src, p.dst, p.proto, svcVIP, overlayAddr)
	}
	q := parseIP(t, p.payload[8:]) // checks the quoted header's checksum
	if sport, dport := ports(q); q.src != overlayAddr || sport != 40000 || q.dst != svcVIP || dport != 53 {
		t.Errorf("quote %v:%d -> %v:%d, want %v:40000 -> %v:53", q.src, sport, q.dst, dport, overlayAddr, svcVIP)
	}

	// An error about another of the node's packets is no answer.
	if got, _, _ := runIn(t, netns, egress, hostAnswer(portUnreach(nodeIP, 5353, HostHairpinIP, 40001)), 0); got != tcActShot {
		t.Errorf("unrelated ICMP error: verdict %d, want TC_ACT_SHOT", got)
	}
}

// The paths that existed stay as they were: a host-network backend elsewhere leaves through the
// NIC from the overlay address (masqueraded there), unmarked; a local pod backend goes to its veth;
// a port of a non-frontend address outside the cluster leaves untranslated through the NIC even
// when the address is the node's.
func TestServiceFromNodeOtherBackendsUnchanged(t *testing.T) {
	netns := hostHairpinNetns(t)
	coll := newCollection(t, loadOverlay)
	lbCluster(t, coll, withMasquerade())
	egress := coll.Programs["overlay_egress"]
	putSvc(t, coll, svcVIP, 443, protoTCP, 1, 0, 0, backend{apiServer, 6443})
	putSvc(t, coll, svcVIP, 80, protoTCP, 2, 0, 0, backend{podB, 8080})

	got, out, mark := runIn(t, netns, egress, hostTo(overlayAddr, 50000, svcVIP, 443, protoTCP), 0)
	if got != tcActRedirect || mark != 0 {
		t.Fatalf("remote host backend: verdict %d mark %#x, want TC_ACT_REDIRECT unmarked (the NIC)", got, mark)
	}
	checkTuple(t, out[14:], overlayAddr, 50000, apiServer, 6443)

	got, out, mark = runIn(t, netns, egress, hostTo(overlayAddr, 50001, svcVIP, 80, protoTCP), 0)
	if got != tcActRedirect || mark != 0 {
		t.Fatalf("local pod backend: verdict %d mark %#x, want TC_ACT_REDIRECT unmarked (its veth)", got, mark)
	}
	if dst, _ := macs(out); dst != podBMAC {
		t.Errorf("destination MAC %x, want pod B's", dst)
	}
	checkTuple(t, out[14:], overlayAddr, 50001, podB, 8080)

	in := hostTo(overlayAddr, 50002, secondaryIP, 9999, protoTCP)
	got, out, mark = runIn(t, netns, egress, in, 0)
	if got != tcActRedirect || mark != 0 || !bytes.Equal(out[:len(in)], in) {
		t.Errorf("no frontend: verdict %d mark %#x changed %v, want TC_ACT_REDIRECT (the NIC), untouched", got, mark, !bytes.Equal(out[:len(in)], in))
	}
}
