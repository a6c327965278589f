package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/domainid"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
)

// Network domains (bpf/lib/domains.h): this node is in domain "cloud"; node 192.168.1.5 owns
// 10.244.5.0/24 in domain "site-a", node 192.168.1.6 owns 10.244.6.0/24 in "site-b".
var (
	siteANode = netip.MustParseAddr("192.168.1.5")
	siteBNode = netip.MustParseAddr("192.168.1.6")
	siteAPod  = netip.MustParseAddr("10.244.5.50")
	siteBPod  = netip.MustParseAddr("10.244.6.60")
	cloudID   = domainid.Of("cloud")
	siteAID   = domainid.Of("site-a")
	siteBID   = domainid.Of("site-b")
)

const icmpUnreachQuote = 20 + 64 // bpf/lib/icmp.h ICMP_UNREACH_QUOTE

// domainCluster is fillCluster with this node in "cloud" and the two site nodes; the domains in
// reachable get a domains_map entry with DOMAIN_REACHABLE, site-b one without.
func domainCluster(t *testing.T, coll *ebpf.Collection, reachable ...uint32) {
	t.Helper()
	fillCluster(t, coll, func(c *podNodeCfg) { c.Domain = cloudID })
	putRoute(t, coll, "10.244.5.0/24", podRoute{NodeIp: be32(siteANode), Domain: siteAID})
	putRoute(t, coll, "10.244.6.0/24", podRoute{NodeIp: be32(siteBNode), Domain: siteBID})
	put(t, coll, "nodes_map", be32(siteANode), podNode{VtepMac: remoteVtepMAC, NexthopMac: remoteNextHop, Domain: siteAID, Flags: 1})
	put(t, coll, "nodes_map", be32(siteBNode), podNode{VtepMac: remoteVtepMAC, NexthopMac: remoteNextHop, Domain: siteBID, Flags: 1})
	setDomain(t, coll, cloudID, "cloud", domainsmap.FlagReachable|domainsmap.FlagLocal)
	setDomain(t, coll, siteBID, "site-b", 0)
	for _, id := range reachable {
		setDomain(t, coll, id, "reachable", domainsmap.FlagReachable)
	}
}

func setDomain(t *testing.T, coll *ebpf.Collection, id uint32, name string, flags uint32) {
	t.Helper()
	d := podDomain{Flags: flags}
	for i := range len(name) {
		d.Name[i] = int8(name[i])
	}
	put(t, coll, "domains_map", id, d)
}

// checkHostUnreach verifies that out is ICMP "host unreachable" from the node to the pod, quoting
// the first bytes of in's IP packet (zero-padded when it is shorter).
func checkHostUnreach(t *testing.T, out, in []byte) {
	t.Helper()
	if len(out) != 14+28+icmpUnreachQuote {
		t.Fatalf("answer is %d bytes, want %d", len(out), 14+28+icmpUnreachQuote)
	}
	dst, src := macs(out)
	inDst, inSrc := macs(in)
	if dst != inSrc || src != inDst {
		t.Errorf("MACs dst %x src %x, want the pod's swapped: %x %x", dst, src, inSrc, inDst)
	}
	orig := parseIP(t, in[14:])
	ip := parseIP(t, out[14:])
	if ip.proto != protoICMP || ip.src != nodeIP || ip.dst != orig.src {
		t.Errorf("IP proto %d %v -> %v, want ICMP %v -> %v", ip.proto, ip.src, ip.dst, nodeIP, orig.src)
	}
	checkL4Csum(t, ip)
	icmp := ip.payload
	if icmp[0] != 3 || icmp[1] != 1 {
		t.Errorf("ICMP type %d code %d, want 3/1 (host unreachable)", icmp[0], icmp[1])
	}
	if rest := binary.BigEndian.Uint32(icmp[4:]); rest != 0 {
		t.Errorf("ICMP unused word %#x, want 0", rest)
	}
	want := make([]byte, icmpUnreachQuote)
	copy(want, in[14:])
	if quote := icmp[8:]; !bytes.Equal(quote, want) {
		t.Errorf("quote:\n got % x\nwant % x (the packet, then zeros)", quote, want)
	}
}

func TestPodEgressDomains(t *testing.T) {
	coll := newCollection(t, loadPod)
	domainCluster(t, coll, siteAID)
	prog := coll.Programs["pod_egress"]
	syn := func(dst netip.Addr) []byte {
		return podPacket(podA, dst, tcpSeg(podA, dst, 40000, 80, tcpSYN, nil), protoTCP, true)
	}

	// Private line to site-a: encapsulated toward its node.
	if got, _ := run(t, prog, syn(siteAPod), nil); got != tcActRedirect || metric(t, coll, dirPodEgress, dropreason.Forwarded) != 1 {
		t.Fatalf("to site-a: verdict %d, forwarded %d; want a redirect", got, metric(t, coll, dirPodEgress, dropreason.Forwarded))
	}
	// Same domain without any domains_map entry: no lookup needed.
	putRoute(t, coll, "10.244.7.0/24", podRoute{NodeIp: be32(remoteNodeIP), Domain: cloudID})
	if got, _ := run(t, prog, syn(netip.MustParseAddr("10.244.7.7")), nil); got != tcActRedirect {
		t.Fatalf("same domain: verdict %d, want a redirect", got)
	}

	// Public to site-b: a small SYN (zero-padded quote) and a big UDP packet (truncated quote).
	for _, in := range [][]byte{syn(siteBPod), podUDP(podA, siteBPod, 1000)} {
		drops, sent := metric(t, coll, dirPodEgress, dropreason.DomainUnreachable), metric(t, coll, dirPodEgress, dropreason.ICMPSent)
		got, out := run(t, prog, in, nil)
		if got != tcActRedirect {
			t.Fatalf("to site-b: verdict %d, want the ICMP answer redirected back", got)
		}
		checkHostUnreach(t, out, in)
		if d, s := metric(t, coll, dirPodEgress, dropreason.DomainUnreachable), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != drops+1 || s != sent+1 {
			t.Errorf("DOMAIN_UNREACHABLE %d -> %d, ICMP_SENT %d -> %d; want +1 each", drops, d, sent, s)
		}
	}

	// A domain the agent has not written yet is unreachable: public is the default.
	putRoute(t, coll, "10.244.8.0/24", podRoute{NodeIp: be32(siteANode), Domain: domainid.Of("site-c")})
	drops := metric(t, coll, dirPodEgress, dropreason.DomainUnreachable)
	run(t, prog, syn(netip.MustParseAddr("10.244.8.8")), nil)
	if metric(t, coll, dirPodEgress, dropreason.DomainUnreachable) != drops+1 {
		t.Error("a route to an unknown domain was not dropped as DOMAIN_UNREACHABLE")
	}

	// The table changes live: site-b gets a private line.
	setDomain(t, coll, siteBID, "site-b", domainsmap.FlagReachable)
	fwd := metric(t, coll, dirPodEgress, dropreason.Forwarded)
	if got, _ := run(t, prog, syn(siteBPod), nil); got != tcActRedirect || metric(t, coll, dirPodEgress, dropreason.Forwarded) != fwd+1 {
		t.Fatalf("site-b after the change: verdict %d, not forwarded", got)
	}
}

func TestNodeIngressDomains(t *testing.T) {
	coll := newCollection(t, loadNode)
	domainCluster(t, coll, siteAID)
	prog := coll.Programs["node_ingress"]
	vx := vxlanHdr(0x08000000, vni)

	// From the site-a node (private line): decapsulated to pod A.
	if got, _ := run(t, prog, vxlanFrame(siteANode, vxlanPort, vx, innerFrame(siteAPod, podA)), nil); got != tcActRedirect {
		t.Fatalf("from site-a: verdict %d, want a redirect to the pod", got)
	}
	// From the site-b node (public): a node we know, of a domain we do not reach; dropped and
	// answered through the tunnel (prog_tunnelunreach_test.go).
	for _, tt := range []struct {
		name    string
		src     netip.Addr
		reason  dropreason.Reason
		verdict uint32
	}{
		{"node of an unreachable domain", siteBNode, dropreason.DomainUnreachable, tcActRedirect},
		{"not a node", strangerIP, dropreason.UnknownTunnelSource, tcActShot},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, coll, dirOverlayIn, tt.reason)
			if got, _ := run(t, prog, vxlanFrame(tt.src, vxlanPort, vx, innerFrame(siteBPod, podA)), nil); got != tt.verdict {
				t.Fatalf("verdict %d, want %d", got, tt.verdict)
			}
			if after := metric(t, coll, dirOverlayIn, tt.reason); after != before+1 {
				t.Errorf("%v: %d -> %d, want +1", tt.reason, before, after)
			}
		})
	}
}

func TestOverlayEgressDomains(t *testing.T) {
	coll := newCollection(t, loadOverlay)
	domainCluster(t, coll, siteAID)
	prog := coll.Programs["overlay_egress"]
	apiServer := netip.MustParseAddr("172.30.0.2")
	hostTo := func(src, dst netip.Addr) []byte {
		return ethFrame(anyMAC, vtepMAC, ethPIPv4, ipHdr{src: src, dst: dst, proto: protoTCP}.build(tcpSeg(src, dst, 41000, 80, tcpSYN, nil)))
	}

	// Host traffic to site-b: the kernel's unreachable route normally stops it first; the program
	// drops what gets here anyway.
	if got, _ := run(t, prog, hostTo(netip.MustParseAddr("10.244.1.0"), siteBPod), nil); got != tcActShot ||
		metric(t, coll, dirOverlayOut, dropreason.DomainUnreachable) != 1 {
		t.Fatalf("to site-b: verdict %d, DOMAIN_UNREACHABLE %d", got, metric(t, coll, dirOverlayOut, dropreason.DomainUnreachable))
	}

	// A cloud host's connection forwarded by the gateway: the source becomes the overlay address
	// (the pod CIDR's first address), with the port kept when it is free.
	in := hostTo(apiServer, siteAPod)
	got, out := run(t, prog, in, nil)
	if got != tcActOK {
		t.Fatalf("gateway: verdict %d, want TC_ACT_OK", got)
	}
	ip := parseIP(t, out[14:])
	checkL4Csum(t, ip)
	if sport, dport := ports(ip); ip.src != netip.MustParseAddr("10.244.1.0") || ip.dst != siteAPod || sport != 41000 || dport != 80 {
		t.Errorf("translated to %v:%d -> %v:%d, want 10.244.1.0:41000 -> %v:80", ip.src, sport, ip.dst, dport, siteAPod)
	}
	// The reverse entry that overlay_ingress undoes the reply with.
	var rev struct {
		PodIP   [4]byte
		PodPort uint16
		Pad     uint16
	}
	key := struct {
		RemoteIP   [4]byte
		RemotePort uint16
		NodePort   uint16
		Proto      uint8
		Pad        [3]byte
	}{siteAPod.As4(), be16(80), be16(41000), protoTCP, [3]byte{}}
	if err := coll.Maps["nat_rev_map"].Lookup(key, &rev); err != nil || netip.AddrFrom4(rev.PodIP) != apiServer || rev.PodPort != be16(41000) {
		t.Errorf("nat_rev_map entry %+v, %v; want the API server's address and port", rev, err)
	}

	// Cluster sources (the node's own overlay address, pods in device mode) are left alone.
	in = hostTo(netip.MustParseAddr("10.244.1.0"), siteAPod)
	if got, out := run(t, prog, in, nil); got != tcActOK || !bytes.Equal(out[12:], in[12:]) {
		t.Errorf("cluster source: verdict %d or packet changed", got)
	}
}

// A cloud host's packet routed to this node toward a pod of an unreachable domain (the cloud
// gateway without a private line) is answered from the node IP back out of the NIC.
func TestNodeIngressUnreachableDomainAnswers(t *testing.T) {
	coll := newCollection(t, loadNode)
	domainCluster(t, coll, siteAID)
	prog := coll.Programs["node_ingress"]
	apiServer := netip.MustParseAddr("172.30.0.2")
	hostMAC, nicMAC := mac("02:00:00:00:00:02"), underlayMAC
	frame := func(dst netip.Addr, proto uint8, l4 []byte) []byte {
		return ethFrame(nicMAC, hostMAC, ethPIPv4, ipHdr{src: apiServer, dst: dst, proto: proto}.build(l4))
	}
	syn := frame(siteBPod, protoTCP, tcpSeg(apiServer, siteBPod, 43000, 80, tcpSYN, nil))
	got, out := run(t, prog, syn, nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want the ICMP answer redirected out of the NIC", got)
	}
	ip := parseIP(t, out[14:])
	checkL4Csum(t, ip)
	if dst, src := macs(out); dst != hostMAC || src != nicMAC || ip.src != nodeIP || ip.dst != apiServer || ip.payload[0] != 3 || ip.payload[1] != 1 {
		t.Errorf("answer %x<-%x %v->%v type %d code %d, want host unreachable from the node to the API server",
			dst, src, ip.src, ip.dst, ip.payload[0], ip.payload[1])
	}
	if d, s := metric(t, coll, dirNodeIn, dropreason.DomainUnreachable), metric(t, coll, dirNodeIn, dropreason.ICMPSent); d != 1 || s != 1 {
		t.Errorf("DOMAIN_UNREACHABLE %d, ICMP_SENT %d; want 1, 1", d, s)
	}

	// Never an ICMP error about an ICMP error: dropped, counted, not answered.
	errMsg := frame(siteBPod, protoICMP, icmpMsg(3, 3, [4]byte{}, make([]byte, 28)))
	if got, _ := run(t, prog, errMsg, nil); got != tcActShot || metric(t, coll, dirNodeIn, dropreason.ICMPSent) != 1 {
		t.Errorf("ICMP error to site-b: verdict %d, ICMP_SENT %d; want a silent drop", got, metric(t, coll, dirNodeIn, dropreason.ICMPSent))
	}
	// Reachable domains and addresses outside the cluster are the host's business.
	for _, dst := range []netip.Addr{siteAPod, internetIP} {
		in := frame(dst, protoTCP, tcpSeg(apiServer, dst, 43000, 80, tcpSYN, nil))
		if got, out := run(t, prog, in, nil); got != tcActOK || !bytes.Equal(out, in) {
			t.Errorf("to %v: verdict %d or changed, want TC_ACT_OK untouched", dst, got)
		}
	}
}

func TestPodEgressNoICMPAboutICMPErrors(t *testing.T) {
	coll := newCollection(t, loadPod)
	domainCluster(t, coll)
	in := podPacket(podA, siteBPod, icmpMsg(3, 3, [4]byte{}, make([]byte, 28)), protoICMP, false)
	if got, _ := run(t, coll.Programs["pod_egress"], in, nil); got != tcActShot {
		t.Fatalf("verdict %d, want TC_ACT_SHOT", got)
	}
	if d, s := metric(t, coll, dirPodEgress, dropreason.DomainUnreachable), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != 1 || s != 0 {
		t.Errorf("DOMAIN_UNREACHABLE %d, ICMP_SENT %d; want 1, 0", d, s)
	}
}
