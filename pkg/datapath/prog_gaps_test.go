package datapath

// Services gaps closed after the first NodePort work: ICMP errors of a remote backend toward an
// outside client (node_ingress, lib/lb_xlate.h's lb_rev_overlay), pods reaching node ports
// (pod_egress, pod_nodeport).

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// icmpAbout is an ICMP error (typ, code, rest) from src to dst quoting the UDP or TCP packet
// qsrc:qsport -> qdst:qdport as its sender sent it.
func icmpAbout(src, dst netip.Addr, typ, code uint8, rest [4]byte, proto uint8, qsrc netip.Addr, qsport uint16, qdst netip.Addr, qdport uint16) []byte {
	quoted := ipHdr{src: qsrc, dst: qdst, proto: proto, df: true}.build(l4Seg(proto, qsrc, qdst, qsport, qdport, tcpACK, []byte("query")))
	return ipHdr{src: src, dst: dst, proto: protoICMP}.build(icmpMsg(typ, code, rest, quoted))
}

// checkErrorToClient verifies an ICMP error leaving toward the outside client: from src, valid
// checksums (outer, ICMP, quoted IPv4), quoting the client's own packet to the node port.
func checkErrorToClient(t *testing.T, b []byte, src netip.Addr, typ, code uint8) {
	t.Helper()
	p := parseIP(t, b)
	checkL4Csum(t, p)
	if p.proto != protoICMP || p.src != src || p.dst != outsideClient {
		t.Errorf("error %v -> %v proto %d, want %v -> %v ICMP", p.src, p.dst, p.proto, src, outsideClient)
	}
	if p.payload[0] != typ || p.payload[1] != code {
		t.Errorf("ICMP type %d code %d, want %d %d", p.payload[0], p.payload[1], typ, code)
	}
	q := parseIP(t, p.payload[8:])
	if sport, dport := ports(q); q.src != outsideClient || sport != 40000 || q.dst != nodeIP || dport != nodePort {
		t.Errorf("quote %v:%d -> %v:%d, want %v:40000 -> %v:%d", q.src, sport, q.dst, dport, outsideClient, nodeIP, nodePort)
	}
}

// A remote backend's ICMP errors about an outside client's packet come back through the tunnel (or
// direct routing) to the overlay address, quoting overlay address -> backend. They must leave
// through the NIC as errors about client -> node port: both translations undone in the quote and
// in the outer header. Before, only TCP/UDP replies were recognized; the errors went to the host,
// which dropped them as martians (their source is the node IP), and the client timed out.
func TestNodePortRemoteBackendICMPErrors(t *testing.T) {
	mtuRest := [4]byte{0, 0, 0x05, 0x78} // next-hop MTU 1400
	for _, proto := range []uint8{protoUDP, protoTCP} {
		for _, tt := range []struct {
			name       string
			from       netip.Addr // the error's source
			typ, code  uint8
			rest       [4]byte
			wantSource netip.Addr // after translation
		}{
			{"port unreachable from the backend", remotePod, 3, 3, [4]byte{}, nodeIP},
			{"fragmentation needed from the backend's node", remoteNodeIP, 3, 4, mtuRest, remoteNodeIP},
			{"time exceeded from a router", strangerIP, 11, 0, [4]byte{}, strangerIP},
		} {
			t.Run(fmt.Sprintf("proto %d %s", proto, tt.name), func(t *testing.T) {
				node := newCollection(t, loadNode)
				lbCluster(t, node)
				putExtSvc(t, node, netip.Addr{}, nodePort, proto, 7, lbSvcNodePort, backend{remotePod, 5353})
				prog := node.Programs["node_ingress"]
				if got, _ := run(t, prog, clientSend(proto, nodeIP, nodePort, tcpSYN), nil); got != tcActRedirect {
					t.Fatalf("client's packet: verdict %d", got)
				}
				// The client's packet left as overlay:40000 -> backend (the first port tried is
				// the client's own, TestNodePortRemoteBackend checks it).
				icmp := icmpAbout(tt.from, overlayAddr, tt.typ, tt.code, tt.rest, proto, overlayAddr, 40000, remotePod, 5353)
				inner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, icmp)
				t.Run("through VXLAN", func(t *testing.T) {
					before := metric(t, node, dirOverlayIn, dropreason.Forwarded)
					got, out := run(t, prog, vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner), nil)
					if got != tcActRedirect {
						t.Fatalf("verdict %d, want TC_ACT_REDIRECT (out of the NIC)", got)
					}
					checkErrorToClient(t, out[14:], tt.wantSource, tt.typ, tt.code)
					if tt.code == 4 && !bytes.Equal(out[14+20+4:14+20+8], mtuRest[:]) {
						t.Errorf("next-hop MTU changed: % x", out[14+20+4:14+20+8])
					}
					if n := metric(t, node, dirOverlayIn, dropreason.Forwarded); n != before+1 {
						t.Errorf("overlay-in forwarded %d -> %d, want +1", before, n)
					}
				})
				t.Run("by direct routing", func(t *testing.T) {
					got, out := run(t, prog, ethFrame(underlayMAC, remoteNextHop, ethPIPv4, icmp), nil)
					if got != tcActRedirect {
						t.Fatalf("verdict %d, want TC_ACT_REDIRECT (out of the NIC)", got)
					}
					checkErrorToClient(t, out[14:], tt.wantSource, tt.typ, tt.code)
				})
			})
		}
	}

	// Errors that are about nothing the node translated for an outside client keep their way to
	// the kernel device (and from there to the host), untouched.
	node := newCollection(t, loadNode)
	lbCluster(t, node)
	putExtSvc(t, node, netip.Addr{}, nodePort, protoUDP, 7, lbSvcNodePort, backend{remotePod, 5353})
	run(t, node.Programs["node_ingress"], clientSend(protoUDP, nodeIP, nodePort, 0), nil)
	for _, tt := range []struct {
		name string
		icmp []byte
	}{
		{"another overlay port", icmpAbout(remotePod, overlayAddr, 3, 3, [4]byte{}, protoUDP, overlayAddr, 40001, remotePod, 5353)},
		{"another backend port", icmpAbout(remotePod, overlayAddr, 3, 3, [4]byte{}, protoUDP, overlayAddr, 40000, remotePod, 5354)},
		{"a quote not from the overlay address", icmpAbout(remotePod, overlayAddr, 3, 3, [4]byte{}, protoUDP, nodeIP, 40000, remotePod, 5353)},
		{"an echo reply", ipHdr{src: remotePod, dst: overlayAddr, proto: protoICMP}.build(icmpMsg(0, 0, echoRest(40000, 1), nil))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, tt.icmp))
			if got, out := run(t, node.Programs["node_ingress"], in, nil); got != tcActOK || !bytes.Equal(out[:len(in)], in) {
				t.Errorf("verdict %d (want TC_ACT_OK), changed %v", got, !bytes.Equal(out[:len(in)], in))
			}
		})
	}
}

// A GRO aggregate of a remote backend's replies that bpf_skb_adjust_room cannot decapsulate on this
// kernel goes to the kernel VXLAN device untouched; overlay_ingress then undoes both translations
// with the same lb_rev_overlay as above and sends it out of the NIC (test_run cannot give a packet
// tunnel metadata, so that program's side is the lab's: tests/services, the bulk download).
func TestNodePortRemoteBackendAggregateToDevice(t *testing.T) {
	node := newCollection(t, loadNode)
	lbCluster(t, node)
	putExtSvc(t, node, netip.Addr{}, nodePort, protoTCP, 7, lbSvcNodePort, backend{remotePod, 8080})
	prog := node.Programs["node_ingress"]
	run(t, prog, clientSend(protoTCP, nodeIP, nodePort, tcpSYN), nil)
	l4 := tcpSeg(remotePod, overlayAddr, 8080, 40000, tcpACK, bytes.Repeat([]byte{1}, 2800))
	inner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: remotePod, dst: overlayAddr, proto: protoTCP}.build(l4))
	in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner)
	got, out := run(t, prog, in, &skbCtx{GSOSegs: 2, GSOSize: 1400})
	if got == tcActOK && bytes.Equal(out[:len(in)], in) {
		return // this kernel: the device decapsulates
	}
	// A kernel with BPF_F_ADJ_ROOM_DECAP_L4_UDP decapsulates it here like any reply.
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want TC_ACT_OK untouched (to the device) or TC_ACT_REDIRECT (decapsulated)", got)
	}
	checkTuple(t, out[14:], nodeIP, nodePort, outsideClient, 40000)
}

// podToNode is pod A's TCP (flags) or UDP packet to dst:dport.
func podToNode(proto uint8, dst netip.Addr, dport uint16, sport uint16) []byte {
	return podSend(proto, podA, sport, dst, dport, tcpSYN)
}

// Pods reaching node ports: this node's addresses get this node's NodePort frontend, translated as
// a ClusterIP connection (the pod's address kept, no EXTERNAL flag), closed ones stay closed; other
// nodes' addresses are left to the host and that node.
func TestPodToNodePort(t *testing.T) {
	netns, _ := xdpNetns(t) // the FIB that says which addresses are this node's
	// run in netns: the FIB lookup is the calling thread's netns (each subtest is a goroutine).
	run := func(t testing.TB, prog *ebpf.Program, pkt []byte, ctx *skbCtx) (got uint32, out []byte) {
		t.Helper()
		if err := netns.Do(func(ns.NetNS) error {
			got, out = run(t, prog, pkt, ctx)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got, out
	}
	for _, proto := range []uint8{protoTCP, protoUDP} {
		pod := newCollection(t, loadPod)
		lbCluster(t, pod)
		putExtSvc(t, pod, netip.Addr{}, nodePort, proto, 7, lbSvcNodePort, backend{remotePod, 8080})
		putExtSvc(t, pod, netip.Addr{}, nodePort+1, proto, 8, lbSvcNodePort, backend{podB, 8080})
		putExtSvc(t, pod, netip.Addr{}, nodePort+2, proto, 9, lbSvcNodePort|lbSvcClosed)
		putExtSvc(t, pod, netip.Addr{}, nodePort+3, proto, 10, lbSvcNodePort)
		putExtSvc(t, pod, lbIP, 80, proto, 11, lbSvcExternalIP, backend{podB, 8080}) // EXTERNAL only
		prog := pod.Programs["pod_egress"]
		sport := uint16(40000)
		for _, dst := range []netip.Addr{nodeIP, secondaryIP, otherDeviceIP} {
			t.Run(fmt.Sprintf("proto %d: %v, remote backend", proto, dst), func(t *testing.T) {
				sport++
				got, out := run(t, prog, podToNode(proto, dst, nodePort, sport), nil)
				if got != tcActRedirect {
					t.Fatalf("verdict %d, want TC_ACT_REDIRECT (VXLAN)", got)
				}
				out = out[:len(podToNode(proto, dst, nodePort, sport))+50]
				checkVXLAN(t, out, append(bytes.Clone(out[:14]), out[14+50:]...), true)
				checkTuple(t, out[14+50:], podA, sport, remotePod, 8080)
				fwd, ok := ctGet(t, pod, ctKey(podA, sport, dst, nodePort, proto, ctFwd))
				if !ok || addrOf(fwd.Addr) != remotePod || fwd.Flags&ctExternal != 0 {
					t.Errorf("FWD entry %+v (found %v), want the backend, not EXTERNAL", fwd, ok)
				}
			})
		}
		t.Run(fmt.Sprintf("proto %d: local backend and its reply", proto), func(t *testing.T) {
			got, out := run(t, prog, podToNode(proto, nodeIP, nodePort+1, 41000), nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT (pod B)", got)
			}
			checkTuple(t, out[14:], podA, 41000, podB, 8080)
			sendAs(t, pod, podB)
			defer sendAs(t, pod, podA)
			got, out = run(t, prog, podSend(proto, podB, 8080, podA, 41000, tcpSYN|tcpACK), nil)
			if got != tcActRedirect {
				t.Fatalf("reply: verdict %d, want TC_ACT_REDIRECT (pod A)", got)
			}
			checkTuple(t, out[14:], nodeIP, nodePort+1, podA, 41000)
		})
		t.Run(fmt.Sprintf("proto %d: closed node port", proto), func(t *testing.T) {
			before := metric(t, pod, dirPodEgress, dropreason.NodePortClosed)
			if got, _ := run(t, prog, podToNode(proto, nodeIP, nodePort+2, 41001), nil); got != tcActShot {
				t.Fatalf("verdict %d, want TC_ACT_SHOT", got)
			}
			if n := metric(t, pod, dirPodEgress, dropreason.NodePortClosed); n != before+1 {
				t.Errorf("NODEPORT_CLOSED %d -> %d, want +1", before, n)
			}
		})
		t.Run(fmt.Sprintf("proto %d: node port without backends", proto), func(t *testing.T) {
			in := podToNode(proto, nodeIP, nodePort+3, 41002)
			got, out := run(t, prog, in, nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want the port unreachable redirected back into the pod", got)
			}
			checkPortUnreachFrom(t, out, in, nodeIP)
		})
		for _, tt := range []struct {
			name string
			pkt  []byte
		}{
			{"another node's address", podToNode(proto, remoteNodeIP, nodePort, 41003)},
			{"a host on the underlay", podToNode(proto, strangerIP, nodePort, 41004)},
			{"the node IP, not a node port", podToNode(proto, nodeIP, 22, 41005)},
			{"an EXTERNAL-only frontend address", podToNode(proto, lbIP, 80, 41006)},
		} {
			t.Run(fmt.Sprintf("proto %d: %s: to the host, untouched", proto, tt.name), func(t *testing.T) {
				if got, out := run(t, prog, tt.pkt, nil); got != tcActOK || !bytes.Equal(out[:len(tt.pkt)], tt.pkt) {
					t.Errorf("verdict %d (want TC_ACT_OK), changed %v", got, !bytes.Equal(out[:len(tt.pkt)], tt.pkt))
				}
			})
		}
	}
}

// checkPortUnreachFrom verifies the ICMP port unreachable pod_egress answered in (about in) with,
// from src.
func checkPortUnreachFrom(t *testing.T, out, in []byte, src netip.Addr) {
	t.Helper()
	p := parseIP(t, out[14:])
	checkL4Csum(t, p)
	if p.proto != protoICMP || p.src != src || p.dst != podA || p.payload[0] != 3 || p.payload[1] != 3 {
		t.Errorf("answer %v -> %v proto %d type %d code %d, want port unreachable %v -> %v", p.src, p.dst, p.proto, p.payload[0], p.payload[1], src, podA)
	}
	if q := p.payload[8:]; !bytes.HasPrefix(in[14:], q[:28]) {
		t.Errorf("quote % x is not the pod's packet", q[:28])
	}
}

// The node's own traffic to an externalIP or LoadBalancer IP, routed into edgeplane.1 by the agent:
// a frontend port is translated with the address's INTERNAL frontend like a ClusterIP; another
// port of that address leaves through the underlay NIC untouched (masqueraded there), as it would
// have without the route.
func TestNodeToExternalIP(t *testing.T) {
	coll := newCollection(t, loadOverlay)
	lbCluster(t, coll, withMasquerade())
	putSvc(t, coll, lbIP, 80, protoTCP, 1, lbSvcExternalIP, 0, backend{remotePod, 8080})
	putSvc(t, coll, lbIP, 443, protoTCP, 2, lbSvcExternalIP, 0, backend{podB, 8443})
	prog := coll.Programs["overlay_egress"]

	got, out := run(t, prog, hostTo(overlayAddr, 50000, lbIP, 80, protoTCP), nil)
	if got != tcActOK {
		t.Fatalf("remote backend: verdict %d, want TC_ACT_OK (the device encapsulates)", got)
	}
	if dst, _ := macs(out); dst != remoteVtepMAC {
		t.Errorf("inner destination MAC %x, want the remote VTEP's", dst)
	}
	checkTuple(t, out[14:], overlayAddr, 50000, remotePod, 8080)

	got, out = run(t, prog, hostTo(overlayAddr, 50001, lbIP, 443, protoTCP), nil)
	if got != tcActRedirect {
		t.Fatalf("local backend: verdict %d, want TC_ACT_REDIRECT (pod B's veth)", got)
	}
	checkTuple(t, out[14:], overlayAddr, 50001, podB, 8443)

	for _, tt := range []struct {
		name string
		pkt  []byte
	}{
		{"another port of the address", hostTo(overlayAddr, 50002, lbIP, 22, protoTCP)},
		{"the service CIDR, no frontend", hostTo(overlayAddr, 50003, svcVIP, 9999, protoUDP)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, out := run(t, prog, tt.pkt, nil)
			if got != tcActRedirect || !bytes.Equal(out[:len(tt.pkt)], tt.pkt) {
				t.Errorf("verdict %d (want TC_ACT_REDIRECT out of the NIC), changed %v", got, !bytes.Equal(out[:len(tt.pkt)], tt.pkt))
			}
		})
	}
	// Inside the cluster CIDR without a route is still no route.
	if got, _ := run(t, prog, hostTo(overlayAddr, 50004, netip.MustParseAddr("10.244.9.9"), 80, protoTCP), nil); got != tcActShot {
		t.Errorf("unrouted pod address: verdict %d, want TC_ACT_SHOT", got)
	}
}

const protoSCTPNum = 132

// sctpPacket is an SCTP common header (ports, verification tag, CRC32c over the whole SCTP packet,
// stored as Linux does: little-endian) with one DATA chunk.
func sctpPacket(sport, dport uint16) []byte {
	b := make([]byte, 12, 32)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x1234abcd)
	chunk := []byte{0, 3, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x2e, 'h', 'e', 'y', '!'} // DATA, TSN 1, PPID 46
	b = append(b, chunk...)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// checkSCTP verifies the IPv4 packet at b: addresses, ports, a valid IPv4 checksum and the SCTP
// packet byte for byte as sent (so its CRC32c, which covers no address, still holds).
func checkSCTP(t *testing.T, b []byte, src, dst netip.Addr, sctp []byte) {
	t.Helper()
	p := parseIP(t, b)
	if p.proto != protoSCTPNum || p.src != src || p.dst != dst {
		t.Errorf("packet %v -> %v proto %d, want SCTP %v -> %v", p.src, p.dst, p.proto, src, dst)
	}
	if !bytes.Equal(p.payload, sctp) {
		t.Errorf("SCTP packet changed:\n got % x\nwant % x", p.payload, sctp)
	}
	c := slices.Clone(p.payload)
	binary.LittleEndian.PutUint32(c[8:], 0)
	if crc32.Checksum(c, crc32.MakeTable(crc32.Castagnoli)) != binary.LittleEndian.Uint32(p.payload[8:]) {
		t.Errorf("SCTP CRC32c invalid")
	}
}

// SCTP frontends whose backends listen on the frontend's port are translated, addresses only (the
// CRC32c covers no address); a backend on another port is refused like a frontend without
// backends, since no helper can follow a port change in the CRC32c. From outside (the NIC) SCTP is
// not translated.
func TestServiceSCTP(t *testing.T) {
	pod := newCollection(t, loadPod)
	lbCluster(t, pod)
	putSvc(t, pod, svcVIP, 3868, protoSCTPNum, 1, 0, 0, backend{remotePod, 3868})
	putSvc(t, pod, svcVIP, 3869, protoSCTPNum, 2, 0, 0, backend{podB, 3869})
	putSvc(t, pod, svcVIP, 3870, protoSCTPNum, 3, 0, 0, backend{podB, 9999})
	prog := pod.Programs["pod_egress"]
	send := func(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) ([]byte, []byte) {
		s := sctpPacket(sport, dport)
		return podPacket(src, dst, s, protoSCTPNum, true), s
	}

	in, s := send(podA, 40000, svcVIP, 3868)
	got, out := run(t, prog, in, nil)
	if got != tcActRedirect {
		t.Fatalf("remote backend: verdict %d, want TC_ACT_REDIRECT (VXLAN)", got)
	}
	checkSCTP(t, out[14+50:len(in)+50], podA, remotePod, s)

	in, s = send(podA, 40001, svcVIP, 3869)
	got, out = run(t, prog, in, nil)
	if got != tcActRedirect {
		t.Fatalf("local backend: verdict %d, want TC_ACT_REDIRECT (pod B)", got)
	}
	checkSCTP(t, out[14:len(in)], podA, podB, s)
	sendAs(t, pod, podB)
	reply, s := send(podB, 3869, podA, 40001)
	got, out = run(t, prog, reply, nil)
	if got != tcActRedirect {
		t.Fatalf("reply: verdict %d, want TC_ACT_REDIRECT (pod A)", got)
	}
	checkSCTP(t, out[14:len(reply)], svcVIP, podA, s)
	sendAs(t, pod, podA)

	in, _ = send(podA, 40002, svcVIP, 3870)
	before := metric(t, pod, dirPodEgress, dropreason.NoServiceBackend)
	if got, _ := run(t, prog, in, nil); got != tcActRedirect {
		t.Fatalf("backend on another port: verdict %d, want the port unreachable back into the pod", got)
	}
	if n := metric(t, pod, dirPodEgress, dropreason.NoServiceBackend); n != before+1 {
		t.Errorf("NO_SERVICE_BACKEND %d -> %d, want +1", before, n)
	}
	if _, ok := ctGet(t, pod, ctKey(podA, 40002, svcVIP, 3870, protoSCTPNum, ctFwd)); ok {
		t.Errorf("a connection entry for a refused SCTP connection")
	}

	node := newCollection(t, loadNode)
	lbCluster(t, node)
	putExtSvc(t, node, netip.Addr{}, nodePort, protoSCTPNum, 7, lbSvcNodePort, backend{podB, nodePort})
	ext := from(outsideClient, nodeIP, protoSCTPNum, sctpPacket(40000, nodePort))
	if got, out := run(t, node.Programs["node_ingress"], ext, nil); got != tcActOK || !bytes.Equal(out[:len(ext)], ext) {
		t.Errorf("SCTP from outside: verdict %d (want TC_ACT_OK), changed %v", got, !bytes.Equal(out[:len(ext)], ext))
	}
}

// checkHostPortUnreach verifies that out is ICMP "port unreachable" from the frontend to client
// as overlay_egress turns it around into edgeplane.1's ingress: the frame's MACs swapped (so the
// device's own MAC is the destination), quoting the packet as the host sent it (in).
func checkHostPortUnreach(t *testing.T, out, in []byte, client netip.Addr) {
	t.Helper()
	if len(out) != 14+28+icmpUnreachQuote {
		t.Fatalf("answer is %d bytes, want %d", len(out), 14+28+icmpUnreachQuote)
	}
	if dst, src := macs(out); dst != vtepMAC || src != anyMAC {
		t.Errorf("MACs dst %x src %x, want the host packet's swapped (dst %x, the device's)", dst, src, vtepMAC)
	}
	p := parseIP(t, out[14:])
	checkL4Csum(t, p)
	if p.proto != protoICMP || p.src != svcVIP || p.dst != client || p.payload[0] != 3 || p.payload[1] != 3 {
		t.Errorf("answer %v -> %v proto %d type %d code %d, want port unreachable %v -> %v", p.src, p.dst, p.proto, p.payload[0], p.payload[1], svcVIP, client)
	}
	want := make([]byte, icmpUnreachQuote)
	copy(want, in[14:])
	if quote := p.payload[8:]; !bytes.Equal(quote, want) {
		t.Errorf("quote:\n got % x\nwant % x", quote, want)
	}
}

// The node's own connection to a frontend without backends (none at all, or for this node with
// internalTrafficPolicy Local, or SCTP backends on another port) is refused at once, as a pod's
// is: overlay_egress counts NO_SERVICE_BACKEND and ICMP_SENT on overlay-out and redirects "port
// unreachable" from the frontend into the device's own ingress (marked), where overlay_ingress
// lets it through to the host stack uncounted and clears the mark. Before, the SYN was dropped
// silently and the host's connect() timed out.
func TestServiceFromNodeWithoutBackends(t *testing.T) {
	const toHostMark = 0xed9e1c3b // bpf/lib/icmp.h ICMP_TO_HOST_MARK
	coll := newCollection(t, loadOverlay)
	lbCluster(t, coll, withMasquerade())
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0)
	putSvc(t, coll, svcVIP, 53, protoUDP, 2, 0, 0)
	putSvc(t, coll, svcVIP, 3870, protoSCTPNum, 3, 0, 0, backend{podB, 9999})
	egress, ingress := coll.Programs["overlay_egress"], coll.Programs["overlay_ingress"]
	cloudHost := netip.MustParseAddr("172.16.0.7") // forwarded by a cloud gateway, not translated yet

	for _, tt := range []struct {
		name   string
		client netip.Addr
		in     []byte
	}{
		{"TCP", overlayAddr, hostTo(overlayAddr, 50000, svcVIP, 80, protoTCP)},
		{"UDP", overlayAddr, hostTo(overlayAddr, 50001, svcVIP, 53, protoUDP)},
		{"SCTP backend on another port", overlayAddr, ethFrame(anyMAC, vtepMAC, ethPIPv4,
			ipHdr{src: overlayAddr, dst: svcVIP, proto: protoSCTPNum, df: true}.build(sctpPacket(50002, 3870)))},
		{"forwarded sender", cloudHost, hostTo(cloudHost, 50003, svcVIP, 80, protoTCP)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			drops, sent := metric(t, coll, dirOverlayOut, dropreason.NoServiceBackend), metric(t, coll, dirOverlayOut, dropreason.ICMPSent)
			fwd := metric(t, coll, dirOverlayOut, dropreason.Forwarded)
			var ctxOut skbCtx
			opts := &ebpf.RunOptions{Data: tt.in, DataOut: make([]byte, len(tt.in)+256), Context: skbCtx{}, ContextOut: &ctxOut}
			got, err := egress.Run(opts)
			if err != nil {
				t.Fatal(err)
			}
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want the answer redirected into the device's ingress", got)
			}
			checkHostPortUnreach(t, opts.DataOut, tt.in, tt.client)
			if ctxOut.Mark != toHostMark {
				t.Errorf("mark %#x, want %#x", ctxOut.Mark, toHostMark)
			}
			d, s := metric(t, coll, dirOverlayOut, dropreason.NoServiceBackend), metric(t, coll, dirOverlayOut, dropreason.ICMPSent)
			if d != drops+1 || s != sent+1 || metric(t, coll, dirOverlayOut, dropreason.Forwarded) != fwd {
				t.Errorf("overlay-out NO_SERVICE_BACKEND %d -> %d, ICMP_SENT %d -> %d (want +1 each), FORWARDED %d -> %d (want +0)",
					drops, d, sent, s, fwd, metric(t, coll, dirOverlayOut, dropreason.Forwarded))
			}
			p := parseIP(t, tt.in[14:])
			sport, dport := ports(p)
			if _, ok := ctGet(t, coll, ctKey(tt.client, sport, svcVIP, dport, p.proto, ctFwd)); ok {
				t.Error("a connection entry for a refused connection")
			}

			// The answer arriving on the ingress: through to the host, mark cleared, not counted.
			in := bytes.Clone(opts.DataOut)
			fwdIn, unknownIn := metric(t, coll, dirOverlayIn, dropreason.Forwarded), metric(t, coll, dirOverlayIn, dropreason.UnknownTunnelSource)
			var back skbCtx
			ropts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Context: skbCtx{Mark: ctxOut.Mark}, ContextOut: &back}
			if got, err := ingress.Run(ropts); err != nil || got != tcActOK {
				t.Fatalf("overlay_ingress: verdict %d (%v), want TC_ACT_OK", got, err)
			}
			if back.Mark != 0 || !bytes.Equal(ropts.DataOut, in) {
				t.Errorf("overlay_ingress left mark %#x, changed the answer %v", back.Mark, !bytes.Equal(ropts.DataOut, in))
			}
			if metric(t, coll, dirOverlayIn, dropreason.Forwarded) != fwdIn || metric(t, coll, dirOverlayIn, dropreason.UnknownTunnelSource) != unknownIn {
				t.Error("overlay_ingress counted the host's answer")
			}
			// The same packet unmarked is no answer of ours: no tunnel metadata, no known source.
			if got, _ := run(t, ingress, in, nil); got != tcActShot || metric(t, coll, dirOverlayIn, dropreason.UnknownTunnelSource) != unknownIn+1 {
				t.Errorf("unmarked: verdict %d, UNKNOWN_TUNNEL_SOURCE %d -> %d", got, unknownIn, metric(t, coll, dirOverlayIn, dropreason.UnknownTunnelSource))
			}
		})
	}
}
