package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// innerFrame is what a peer node puts inside VXLAN: its VTEP MAC to ours, an IPv4 packet.
func innerFrame(src, dst netip.Addr) []byte {
	l4 := udpSeg(src, dst, 1234, 5678, []byte("payload"), true)
	return ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: src, dst: dst, proto: protoUDP}.build(l4))
}

func TestNodeIngressVXLANToLocalPod(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	inner := innerFrame(remotePod, podA)
	in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner)

	got, out := run(t, coll.Programs["node_ingress"], in, nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
	}
	// Decapsulated: pod A gets the inner IPv4 packet in a frame from its gateway.
	want := ethFrame(podAMAC, podAHostMAC, ethPIPv4, routed(inner, 14)[14:])
	if !bytes.Equal(out, want) {
		t.Fatalf("decapsulated frame\n got % x\nwant % x", out, want)
	}
	if n := metric(t, coll, dirOverlayIn, dropreason.Forwarded); n != 1 {
		t.Errorf("overlay-in forwarded %d, want 1", n)
	}
}

func TestNodeIngressVerdicts(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	prog := coll.Programs["node_ingress"]

	good := vxlanHdr(0x08000000, vni)
	toPod := innerFrame(remotePod, podA)
	vxlanTo := func(src netip.Addr, vx, inner []byte) []byte { return vxlanFrame(src, vxlanPort, vx, inner) }
	arpInner := ethFrame(vtepMAC, remoteVtepMAC, ethPARP, make([]byte, 28))
	fragment := func() []byte {
		udp := udpSeg(remoteNodeIP, nodeIP, 54321, vxlanPort, append(bytes.Clone(good), toPod...), false)
		return ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: remoteNodeIP, dst: nodeIP, proto: protoUDP, mf: true}.build(udp))
	}()
	// Raven's tunnel: same shape, another port and VNI; must pass byte for byte.
	raven := vxlanFrame(strangerIP, 4472, vxlanHdr(0x08000000, 200), toPod)
	plainToHost := ethFrame(underlayMAC, remoteNextHop, ethPIPv4,
		ipHdr{src: strangerIP, dst: nodeIP, proto: protoTCP}.build(tcpSeg(strangerIP, nodeIP, 5555, 22, tcpSYN, nil)))
	plainToPod := ethFrame(underlayMAC, remoteNextHop, ethPIPv4,
		ipHdr{src: remotePod, dst: podB, proto: protoTCP}.build(tcpSeg(remotePod, podB, 5555, 80, tcpSYN, nil)))
	ipv6 := ethFrame(underlayMAC, remoteNextHop, ethPIPv6, make([]byte, 60))

	// cut returns a VXLAN frame whose UDP payload ends after n bytes, with consistent outer
	// lengths: a short packet, not a lying header.
	cut := func(n int) []byte {
		payload := append(bytes.Clone(good), toPod...)[:n]
		udp := udpSeg(remoteNodeIP, nodeIP, 54321, vxlanPort, payload, false)
		return ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: remoteNodeIP, dst: nodeIP, proto: protoUDP}.build(udp))
	}
	cutUDP := func() []byte {
		ip := ipHdr{src: remoteNodeIP, dst: nodeIP, proto: protoUDP}.build([]byte{0x12, 0x34, 0x21, 0x18})
		return ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ip)
	}()

	tests := []struct {
		name   string
		pkt    []byte
		want   uint32
		dir    int
		reason dropreason.Reason
		same   bool
	}{
		{"VXLAN from an unknown source", vxlanTo(strangerIP, good, toPod), tcActShot, dirOverlayIn, dropreason.UnknownTunnelSource, false},
		{"VXLAN with another VNI", vxlanTo(remoteNodeIP, vxlanHdr(0x08000000, 2), toPod), tcActShot, dirOverlayIn, dropreason.VNIMismatch, false},
		{"VXLAN without the I flag", vxlanTo(remoteNodeIP, vxlanHdr(0, vni), toPod), tcActShot, dirOverlayIn, dropreason.VNIMismatch, false},
		{"VXLAN to the host goes to the VXLAN device", vxlanTo(remoteNodeIP, good, innerFrame(remotePod, nodeIP)), tcActOK, dirOverlayIn, dropreason.Forwarded, true},
		{"VXLAN to a pod that is gone goes to the VXLAN device", vxlanTo(remoteNodeIP, good, innerFrame(remotePod, netip.MustParseAddr("10.244.1.99"))), tcActOK, dirOverlayIn, dropreason.Forwarded, true},
		{"VXLAN with a non-IPv4 inner frame goes to the VXLAN device", vxlanTo(remoteNodeIP, good, arpInner), tcActOK, dirOverlayIn, dropreason.Forwarded, true},
		{"VXLAN fragment goes to the kernel for reassembly", fragment, tcActOK, dirNodeIn, dropreason.Forwarded, true},
		{"Raven's tunnel on 4472 is untouched", raven, tcActOK, dirNodeIn, dropreason.Forwarded, true},
		{"host traffic passes", plainToHost, tcActOK, dirNodeIn, dropreason.Forwarded, true},
		{"IPv6 passes", ipv6, tcActOK, dirNodeIn, dropreason.Forwarded, true},
		{"routed traffic to a local pod is delivered", plainToPod, tcActRedirect, dirNodeIn, dropreason.Forwarded, false},
		{"truncated UDP header", cutUDP, tcActShot, dirNodeIn, dropreason.Invalid, false},
		{"truncated VXLAN header", cut(4), tcActShot, dirOverlayIn, dropreason.Invalid, false},
		{"truncated inner Ethernet header", cut(8 + 10), tcActShot, dirOverlayIn, dropreason.Invalid, false},
		{"truncated inner IPv4 header", cut(8 + 14 + 10), tcActShot, dirOverlayIn, dropreason.Invalid, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, coll, tt.dir, tt.reason)
			got, out := run(t, prog, tt.pkt, nil)
			if got != tt.want {
				t.Fatalf("verdict %d, want %d", got, tt.want)
			}
			if tt.same && !bytes.Equal(out, tt.pkt) {
				t.Errorf("packet changed:\n got % x\nwant % x", out, tt.pkt)
			}
			if after := metric(t, coll, tt.dir, tt.reason); after != before+1 {
				t.Errorf("counter dir %d %v: %d -> %d, want +1", tt.dir, tt.reason, before, after)
			}
		})
	}
}

func TestNodeIngressVXLANGRO(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	// A GRO aggregate (gso_size set): on kernels whose adjust_room cannot clear the tunnel GSO
	// state (BPF_F_ADJ_ROOM_DECAP_L4_UDP, after 6.18) it must be left to the kernel's VXLAN
	// device untouched; with that flag it is decapsulated like any other packet.
	inner := innerFrame(remotePod, podA)
	in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner)
	got, out := run(t, coll.Programs["node_ingress"], in, &skbCtx{GSOSize: 1000, GSOSegs: 2})
	switch got {
	case tcActOK:
		if !bytes.Equal(out, in) {
			t.Errorf("aggregate left to the kernel but changed")
		}
	case tcActRedirect:
		if !bytes.Equal(out[14:], inner[14:]) {
			t.Errorf("aggregate decapsulated wrongly")
		}
	default:
		t.Errorf("verdict %d: a GRO aggregate must never be dropped", got)
	}
}

func TestNodeNotReadyPasses(t *testing.T) {
	coll := newCollection(t, loadNode)
	// Before the agent configures the node, the underlay must keep working (SSH, the API server).
	in := vxlanFrame(strangerIP, vxlanPort, vxlanHdr(0, 9), innerFrame(remotePod, podA))
	for _, p := range []string{"node_ingress", "node_egress"} {
		if got, out := run(t, coll.Programs[p], in, nil); got != tcActOK || !bytes.Equal(out, in) {
			t.Errorf("%s: verdict %d or packet changed, want it passed untouched", p, got)
		}
	}
}

// ---- masquerade ----

func masqCollection(t *testing.T) (*ebpf.Collection, func(pkt []byte) (uint32, []byte), func(pkt []byte) (uint32, []byte)) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll, withMasquerade())
	for _, cidr := range []string{"10.244.0.0/16", "172.16.0.0/12"} {
		p := netip.MustParsePrefix(cidr)
		put(t, coll, "nonmasq_map", nodeNonmasqKey{Prefixlen: uint32(p.Bits()), Addr: be32(p.Addr())}, uint8(1))
	}
	egress := func(pkt []byte) (uint32, []byte) { return run(t, coll.Programs["node_egress"], pkt, nil) }
	ingress := func(pkt []byte) (uint32, []byte) { return run(t, coll.Programs["node_ingress"], pkt, nil) }
	return coll, egress, ingress
}

// fromPod is a pod's packet as the host stack hands it to the underlay NIC.
func fromPod(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	return ethFrame(remoteNextHop, underlayMAC, ethPIPv4, ipHdr{src: src, dst: dst, proto: proto, df: true}.build(l4))
}

// toNode is a packet from the internet to the node as it arrives on the underlay NIC.
func toNode(src netip.Addr, proto uint8, l4 []byte) []byte {
	return ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: src, dst: nodeIP, proto: proto}.build(l4))
}

func TestMasqueradeRoundTrip(t *testing.T) {
	coll, egress, ingress := masqCollection(t)

	tests := []struct {
		name  string
		proto uint8
		out   func(pod netip.Addr, port uint16) []byte // pod -> internet
		reply func(nodePort uint16) []byte             // internet -> node
		port  func(p parsedIP, egress bool) uint16     // the translated field
	}{
		{
			name:  "TCP",
			proto: protoTCP,
			out: func(pod netip.Addr, port uint16) []byte {
				return fromPod(pod, internetIP, protoTCP, tcpSeg(pod, internetIP, port, 443, tcpSYN, []byte("hi")))
			},
			reply: func(np uint16) []byte {
				return toNode(internetIP, protoTCP, tcpSeg(internetIP, nodeIP, 443, np, tcpSYN|tcpACK, []byte("hello")))
			},
			port: func(p parsedIP, egress bool) uint16 { s, d := ports(p); return pick(egress, s, d) },
		},
		{
			name:  "UDP with checksum",
			proto: protoUDP,
			out: func(pod netip.Addr, port uint16) []byte {
				return fromPod(pod, internetIP, protoUDP, udpSeg(pod, internetIP, port, 53, []byte("query"), true))
			},
			reply: func(np uint16) []byte {
				return toNode(internetIP, protoUDP, udpSeg(internetIP, nodeIP, 53, np, []byte("answer"), true))
			},
			port: func(p parsedIP, egress bool) uint16 { s, d := ports(p); return pick(egress, s, d) },
		},
		{
			name:  "UDP without checksum",
			proto: protoUDP,
			out: func(pod netip.Addr, port uint16) []byte {
				return fromPod(pod, internetIP, protoUDP, udpSeg(pod, internetIP, port, 4789, []byte("q"), false))
			},
			reply: func(np uint16) []byte {
				return toNode(internetIP, protoUDP, udpSeg(internetIP, nodeIP, 4789, np, []byte("a"), false))
			},
			port: func(p parsedIP, egress bool) uint16 { s, d := ports(p); return pick(egress, s, d) },
		},
		{
			name:  "ICMP echo",
			proto: protoICMP,
			out: func(pod netip.Addr, id uint16) []byte {
				return fromPod(pod, internetIP, protoICMP, icmpMsg(8, 0, echoRest(id, 1), []byte("ping")))
			},
			reply: func(id uint16) []byte {
				return toNode(internetIP, protoICMP, icmpMsg(0, 0, echoRest(id, 1), []byte("ping")))
			},
			port: func(p parsedIP, _ bool) uint16 { return binary.BigEndian.Uint16(p.payload[4:]) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Pod A keeps its port; pod B, same port to the same remote, must get another.
			var nodePorts []uint16
			for _, pod := range []netip.Addr{podA, podB} {
				in := tt.out(pod, 40000)
				got, out := egress(in)
				if got != tcActOK {
					t.Fatalf("egress verdict %d", got)
				}
				p := parseIP(t, out[14:])
				checkL4Csum(t, p)
				if p.src != nodeIP || p.dst != internetIP {
					t.Fatalf("egress %v -> %v, want %v -> %v", p.src, p.dst, nodeIP, internetIP)
				}
				if tt.name == "UDP without checksum" && binary.BigEndian.Uint16(p.payload[6:]) != 0 {
					t.Errorf("a zero UDP checksum must stay zero")
				}
				nodePorts = append(nodePorts, tt.port(p, true))

				// The reply comes back to the node port and must go to the host stack (which
				// routes it to the pod, its conntrack seeing both directions) addressed to the
				// pod, unchanged otherwise, with valid checksums.
				got, back := ingress(tt.reply(tt.port(p, true)))
				if got != tcActOK {
					t.Fatalf("reply verdict %d, want the host stack (%d): netfilter saw the flow leave", got, tcActOK)
				}
				r := parseIP(t, back[14:])
				checkL4Csum(t, r)
				if r.dst != pod || tt.port(r, false) != 40000 {
					t.Errorf("reply to %v port %d, want %v port 40000", r.dst, tt.port(r, false), pod)
				}
				if r.src != internetIP {
					t.Errorf("reply source %v changed", r.src)
				}
			}
			if nodePorts[0] != 40000 {
				t.Errorf("first flow got node port %d, want its own port 40000 (free)", nodePorts[0])
			}
			if nodePorts[1] == 40000 || nodePorts[1] < 32768 || nodePorts[1] > 60999 {
				t.Errorf("colliding flow got node port %d, want another one in 32768..60999", nodePorts[1])
			}
			// The flow keeps its port.
			_, again := egress(tt.out(podB, 40000))
			if p := parseIP(t, again[14:]); tt.port(p, true) != nodePorts[1] {
				t.Errorf("second packet of the flow got port %d, first %d", tt.port(p, true), nodePorts[1])
			}
		})
	}
	if n := metric(t, coll, dirNodeOut, dropreason.Forwarded); n == 0 {
		t.Errorf("egress packets not counted")
	}
}

func pick(egress bool, src, dst uint16) uint16 {
	if egress {
		return src
	}
	return dst
}

func TestMasqueradeLeavesAlone(t *testing.T) {
	_, egress, ingress := masqCollection(t)
	tcp := func(src, dst netip.Addr, flags uint8) []byte {
		return fromPod(src, dst, protoTCP, tcpSeg(src, dst, 41000, 443, flags, nil))
	}
	for _, tt := range []struct {
		name string
		pkt  []byte
	}{
		{"to another pod in the cluster", tcp(podA, remotePod, tcpSYN)},
		{"to a non-masquerade CIDR", tcp(podA, netip.MustParseAddr("172.20.0.1"), tcpSYN)},
		{"from the host", tcp(nodeIP, internetIP, tcpSYN)},
		// A pod answering a connection made to its own address opens no mapping.
		{"TCP without SYN and without a mapping", tcp(podA, internetIP, tcpACK)},
		{"echo reply from a pod", fromPod(podA, internetIP, protoICMP, icmpMsg(0, 0, echoRest(9, 1), nil))},
		{"SCTP", fromPod(podA, internetIP, 132, make([]byte, 12))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, out := egress(tt.pkt)
			if got != tcActOK || !bytes.Equal(out, tt.pkt) {
				t.Errorf("verdict %d, or packet changed", got)
			}
		})
	}
	// Unmapped traffic to the node is the host's.
	in := toNode(internetIP, protoTCP, tcpSeg(internetIP, nodeIP, 443, 40000, tcpSYN|tcpACK, nil))
	if got, out := ingress(in); got != tcActOK || !bytes.Equal(out, in) {
		t.Errorf("unmapped reply: verdict %d, or packet changed", got)
	}
}

func TestMasqueradeOff(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	in := fromPod(podA, internetIP, protoTCP, tcpSeg(podA, internetIP, 41000, 443, tcpSYN, nil))
	if got, out := run(t, coll.Programs["node_egress"], in, nil); got != tcActOK || !bytes.Equal(out, in) {
		t.Errorf("masquerade disabled: verdict %d, or packet changed", got)
	}
}

func TestMasqueradeICMPError(t *testing.T) {
	_, egress, ingress := masqCollection(t)
	// Pod A's TCP packet leaves masqueraded...
	_, out := egress(fromPod(podA, internetIP, protoTCP, tcpSeg(podA, internetIP, 40001, 443, tcpSYN, make([]byte, 100))))
	parseIP(t, out[14:]) // sanity: a valid masqueraded packet
	// ...and a router on the way answers "fragmentation needed" quoting its header + 8 bytes.
	router := netip.MustParseAddr("203.0.113.1")
	quote := out[14 : 14+20+8]
	var mtu [4]byte
	binary.BigEndian.PutUint16(mtu[2:], 1400)
	icmp := icmpMsg(3, 4, mtu, quote)
	in := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: router, dst: nodeIP, proto: protoICMP}.build(icmp))

	got, back := ingress(in)
	if got != tcActOK {
		t.Fatalf("verdict %d, want the error handed to the host stack for the pod (%d)", got, tcActOK)
	}
	p := parseIP(t, back[14:])
	checkL4Csum(t, p) // the ICMP checksum
	if p.dst != podA || p.src != router {
		t.Errorf("error %v -> %v, want %v -> %v", p.src, p.dst, router, podA)
	}
	q := parseIPQuote(t, p.payload[8:])
	if q.src != podA || q.dst != internetIP {
		t.Errorf("quoted packet %v -> %v, want %v -> %v", q.src, q.dst, podA, internetIP)
	}
	if s, d := ports(q); s != 40001 || d != 443 {
		t.Errorf("quoted ports %d -> %d, want 40001 -> 443", s, d)
	}
}

// parseIPQuote parses the IPv4 header quoted in an ICMP error (its total length is the original
// packet's, longer than the quote).
func parseIPQuote(t *testing.T, b []byte) parsedIP {
	t.Helper()
	hl := int(b[0]&0xf) * 4
	if c := csum(b[:hl], 0); c != 0 {
		t.Errorf("quoted IPv4 header checksum invalid (residue %#x)", c)
	}
	return parsedIP{hdr: b[:hl], src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20])), proto: b[9], payload: b[hl:]}
}

func TestMasqueradeAvoidsHostPorts(t *testing.T) {
	_, egress, _ := masqCollection(t)
	// The host's own sockets are not in nat_rev_map: a listener (or connection) on the node
	// would receive replies meant for the pod. The datapath asks the socket table first.
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hostPort := uint16(ln.Addr().(*net.TCPAddr).Port)

	_, out := egress(fromPod(podA, internetIP, protoTCP, tcpSeg(podA, internetIP, hostPort, 443, tcpSYN, nil)))
	p := parseIP(t, out[14:])
	if s, _ := ports(p); s == hostPort || s < 32768 || s > 60999 {
		t.Errorf("pod port %d in use by the host: got node port %d, want another in 32768..60999", hostPort, s)
	}
	checkL4Csum(t, p)
}
