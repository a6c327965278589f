package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/vishvananda/netlink"
)

// What a pod learns about the path MTU: pod_egress stands in for the router the host would be, so
// a packet too big for the next hop is answered with ICMP "fragmentation needed" when it has DF
// and left to the host stack's fragmentation when it has not.

const (
	icmpErrLen   = 576             // IPv4 length of the errors the datapath sends
	icmpErrQuote = icmpErrLen - 28 // bytes of the offending packet quoted
)

// checkFragNeeded verifies that out is the ICMP error answering the pod's packet in.
func checkFragNeeded(t *testing.T, out, in []byte, mtu uint16) {
	t.Helper()
	if len(out) != 14+icmpErrLen {
		t.Fatalf("answer is %d bytes, want %d", len(out), 14+icmpErrLen)
	}
	// Back to the pod's MAC, from the gateway MAC the pod sent to.
	dst, src := macs(out)
	inDst, inSrc := macs(in)
	if dst != inSrc || src != inDst {
		t.Errorf("MACs dst %x src %x, want the pod's swapped: %x %x", dst, src, inSrc, inDst)
	}
	if binary.BigEndian.Uint16(out[12:]) != ethPIPv4 {
		t.Errorf("ethertype %#x", binary.BigEndian.Uint16(out[12:]))
	}
	orig := parseIP(t, in[14:])
	ip := parseIP(t, out[14:]) // checks the header checksum
	if len(ip.hdr) != 20 || ip.proto != protoICMP || ip.src != nodeIP || ip.dst != orig.src {
		t.Errorf("IP header length %d proto %d %v -> %v, want 20, ICMP, %v -> %v", len(ip.hdr), ip.proto, ip.src, ip.dst, nodeIP, orig.src)
	}
	if tot := binary.BigEndian.Uint16(ip.hdr[2:]); tot != icmpErrLen {
		t.Errorf("IP total length %d, want %d", tot, icmpErrLen)
	}
	if frag := binary.BigEndian.Uint16(ip.hdr[6:]); frag != 0 {
		t.Errorf("IP flags/fragment offset %#x, want 0 (an ICMP error may be fragmented)", frag)
	}
	if ip.hdr[8] != 64 {
		t.Errorf("TTL %d, want 64", ip.hdr[8])
	}
	if want := orig.hdr[1]&0x1e | 0xc0; ip.hdr[1] != want {
		t.Errorf("TOS %#x, want %#x (internetwork control, as Linux)", ip.hdr[1], want)
	}
	checkL4Csum(t, ip)
	icmp := ip.payload
	if icmp[0] != 3 || icmp[1] != 4 {
		t.Errorf("ICMP type %d code %d, want 3/4 (fragmentation needed)", icmp[0], icmp[1])
	}
	if unused := binary.BigEndian.Uint16(icmp[4:]); unused != 0 {
		t.Errorf("ICMP unused field %#x, want 0", unused)
	}
	if got := binary.BigEndian.Uint16(icmp[6:]); got != mtu {
		t.Errorf("next-hop MTU %d, want %d", got, mtu)
	}
	// The quote is the offending packet from its IP header on, untouched, so the pod can match
	// it to its socket (addresses, protocol, ports, TCP sequence number).
	if quote := icmp[8:]; !bytes.Equal(quote, in[14:14+icmpErrQuote]) {
		t.Errorf("quote differs from the original packet:\n got % x\nwant % x", quote[:64], in[14:14+64])
	}
}

func TestPodEgressFragNeeded(t *testing.T) {
	big := 200 // bytes over the MTU
	withOptions := func(l4 []byte, proto uint8) []byte {
		return ethFrame(podAHostMAC, podAMAC, ethPIPv4, ipHdr{
			src: podA, dst: remotePod, proto: proto, df: true, tos: 0x2e, options: []byte{1, 1, 1, 0}, // NOP NOP NOP EOL
		}.build(l4))
	}
	payload := bytes.Repeat([]byte{0xcd}, podMTU)
	tests := []struct {
		name string
		mode uint8
		pkt  []byte
		ctx  *skbCtx
	}{
		{"UDP, native", 0, podUDP(podA, remotePod, podMTU-28+big), nil},
		{"UDP, device", 1, podUDP(podA, remotePod, podMTU-28+big), nil},
		{"TCP", 0, podPacket(podA, remotePod, tcpSeg(podA, remotePod, 40000, 80, tcpACK, payload), protoTCP, true), nil},
		{"ICMP echo", 0, podPacket(podA, remotePod, icmpMsg(8, 0, echoRest(7, 1), payload), protoICMP, true), nil},
		{"IPv4 options and TOS", 0, withOptions(udpSeg(podA, remotePod, 1, 2, payload, true), protoUDP), nil},
		// Segments of MSS 1450 (the pod's MTU is wrong): each is 1490 bytes on the overlay.
		// (test_run takes at most a page of packet data, so two segments.)
		{"GSO segments over the MTU", 0, podPacket(podA, remotePod, tcpSeg(podA, remotePod, 40000, 80, tcpACK, bytes.Repeat([]byte{1}, 2*podMTU)), protoTCP, true),
			&skbCtx{GSOSize: podMTU, GSOSegs: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			coll := newCollection(t, loadPod)
			fillCluster(t, coll, withEncap(tt.mode))
			got, out := run(t, coll.Programs["pod_egress"], tt.pkt, tt.ctx)
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
			}
			checkFragNeeded(t, out, tt.pkt, podMTU)
			// The packet is a drop; the answer is counted on its own; nothing was forwarded.
			for reason, want := range map[dropreason.Reason]uint64{dropreason.PktTooBig: 1, dropreason.ICMPSent: 1, dropreason.Forwarded: 0} {
				if n := metric(t, coll, dirPodEgress, reason); n != want {
					t.Errorf("%v counted %d, want %d", reason, n, want)
				}
			}
			if b := metricBytes(t, coll, dirPodEgress, dropreason.PktTooBig); b != uint64(len(tt.pkt)) {
				t.Errorf("PKT_TOO_BIG counted %d bytes, want the dropped packet's %d", b, len(tt.pkt))
			}
		})
	}
}

// Without DF a router fragments. pod_egress leaves that to the host stack, whose route to the
// cluster CIDR is the VXLAN device with the pod MTU: the packet must reach it unchanged.
func TestPodEgressTooBigWithoutDF(t *testing.T) {
	coll := newCollection(t, loadPod)
	fillCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	tests := []struct {
		name string
		pkt  []byte
		ctx  *skbCtx
	}{
		{"UDP", podUDPNoDF(podA, remotePod, podMTU), nil},
		{"a fragment of a bigger datagram", ethFrame(podAHostMAC, podAMAC, ethPIPv4,
			ipHdr{src: podA, dst: remotePod, proto: protoUDP, mf: true, id: 9}.build(bytes.Repeat([]byte{1}, podMTU))), nil},
		{"UDP GSO segments over the MTU", podUDPNoDF(podA, remotePod, 2*podMTU), &skbCtx{GSOSize: podMTU, GSOSegs: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, coll, dirPodEgress, dropreason.Forwarded)
			got, out := run(t, prog, tt.pkt, tt.ctx)
			if got != tcActOK {
				t.Fatalf("verdict %d, want TC_ACT_OK", got)
			}
			if !bytes.Equal(out, tt.pkt) {
				t.Errorf("packet changed on its way to the host stack")
			}
			if n := metric(t, coll, dirPodEgress, dropreason.Forwarded); n != before+1 {
				t.Errorf("forwarded %d -> %d, want +1", before, n)
			}
		})
	}
	if n := metric(t, coll, dirPodEgress, dropreason.PktTooBig) + metric(t, coll, dirPodEgress, dropreason.ICMPSent); n != 0 {
		t.Errorf("packets without DF counted as too big or answered: %d", n)
	}
}

// Direct routes put the pod's packet on the underlay as it is, so the limit is the NIC's MTU:
// bpf_check_mtu's where the kernel has it (5.12), else the node config's pod MTU plus VXLAN's 50
// bytes (HAVE_CHECK_MTU = 0). Both variants give the same answers here, where the two agree; the
// one the kernel cannot load is skipped, saying so. test_run looks devices up in the caller's
// netns: a fresh one whose loopback, given MTU 1500, plays the underlay NIC.
func TestPodEgressDirectRouteTooBig(t *testing.T) {
	requireRoot(t)
	probed, err := KernelFeatures()
	if err != nil {
		t.Fatal(err)
	}
	for _, checkMTU := range []bool{true, false} {
		t.Run(fmt.Sprintf("check_mtu=%v", checkMTU), func(t *testing.T) {
			if checkMTU && !probed.CheckMTU {
				t.Skip("this kernel has no bpf_check_mtu (Linux 5.12): the loader uses the other variant")
			}
			f := probed
			f.CheckMTU = checkMTU
			testPodEgressDirectRouteTooBig(t, newCollectionFor(t, loadPod, f))
		})
	}
}

func testPodEgressDirectRouteTooBig(t *testing.T, coll *ebpf.Collection) {
	fillCluster(t, coll)
	cfg := podNodeCfg{}
	if err := coll.Maps["node_cfg_map"].Lookup(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.UnderlayIfindex = 1
	put(t, coll, "node_cfg_map", uint32(0), cfg)
	putRoute(t, coll, "10.244.2.0/24", podRoute{NodeIp: be32(remoteNodeIP), Encap: 1 /* ROUTE_ENCAP_DIRECT */})
	prog := coll.Programs["pod_egress"]

	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	defer testutils.UnmountNS(netns)
	defer netns.Close()

	const underlayMTU = 1500
	type result struct {
		ret uint32
		out []byte
	}
	runIn := func(pkt []byte) result {
		t.Helper()
		var r result
		err := netns.Do(func(ns.NetNS) error {
			lo, err := netlink.LinkByIndex(1)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMTU(lo, underlayMTU); err != nil {
				return err
			}
			opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256)}
			r.ret, err = prog.Run(opts)
			r.out = opts.DataOut
			return err
		})
		if err != nil {
			t.Fatalf("running in a netns: %v", err)
		}
		return r
	}

	fits := podUDP(podA, remotePod, underlayMTU-28) // more than the pod MTU, no encapsulation
	if r := runIn(fits); r.ret != tcActRedirect || len(r.out) != len(fits) {
		t.Errorf("packet of the underlay MTU: verdict %d, %d bytes; want a redirect of the packet", r.ret, len(r.out))
	}
	big := podUDP(podA, remotePod, underlayMTU-28+1)
	r := runIn(big)
	if r.ret != tcActRedirect {
		t.Fatalf("packet over the underlay MTU: verdict %d, want TC_ACT_REDIRECT (the ICMP error)", r.ret)
	}
	checkFragNeeded(t, r.out, big, underlayMTU)
	if r := runIn(podUDPNoDF(podA, remotePod, underlayMTU)); r.ret != tcActOK {
		t.Errorf("packet over the underlay MTU without DF: verdict %d, want TC_ACT_OK", r.ret)
	}
	if n := metric(t, coll, dirPodEgress, dropreason.PktTooBig); n != 1 {
		t.Errorf("PKT_TOO_BIG counted %d, want 1", n)
	}
}
