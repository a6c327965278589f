package datapath

import (
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// Route mode's anti-spoofing on the NIC: a pod's packet that arrives without encapsulation is held
// to the domain matrix as VXLAN is. Its source must be a pod CIDR of a node of a domain this node
// reaches; an unreachable domain's is DOMAIN_UNREACHABLE and not answered (the source is only a
// claim), this node's own pod CIDR and an address no node owns are SPOOFED_SOURCE.
func TestNodeIngressDirectSources(t *testing.T) {
	coll := newCollection(t, loadNode)
	domainCluster(t, coll, siteAID) // site-a private line, site-b public
	putRoute(t, coll, "10.244.5.0/24", podRoute{NodeIp: be32(siteANode), Domain: siteAID, Encap: 1 /* ROUTE_ENCAP_DIRECT */})
	putRoute(t, coll, "10.244.6.0/24", podRoute{NodeIp: be32(siteBNode), Domain: siteBID, Encap: 1})
	prog := coll.Programs["node_ingress"]
	plain := func(src netip.Addr) []byte {
		return ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: src, dst: podA, proto: protoUDP}.build(
			udpSeg(src, podA, 1234, 5678, []byte("payload"), true)))
	}
	for _, tt := range []struct {
		name    string
		src     netip.Addr
		verdict uint32
		reason  dropreason.Reason
	}{
		{"a pod of a reachable route-mode domain", siteAPod, tcActRedirect, dropreason.Forwarded},
		{"a pod of an unreachable domain", siteBPod, tcActShot, dropreason.DomainUnreachable},
		{"this node's own pod CIDR", podB, tcActShot, dropreason.SpoofedSource},
		{"a cluster address no node owns", netip.MustParseAddr("10.244.9.9"), tcActShot, dropreason.SpoofedSource},
		{"outside the cluster CIDR", strangerIP, tcActRedirect, dropreason.Forwarded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, sent := metric(t, coll, dirNodeIn, tt.reason), metric(t, coll, dirNodeIn, dropreason.ICMPSent)
			if got, _ := run(t, prog, plain(tt.src), nil); got != tt.verdict {
				t.Fatalf("verdict %d, want %d", got, tt.verdict)
			}
			if after := metric(t, coll, dirNodeIn, tt.reason); after != before+1 {
				t.Errorf("%v: %d -> %d, want +1", tt.reason, before, after)
			}
			if s := metric(t, coll, dirNodeIn, dropreason.ICMPSent); s != sent {
				t.Errorf("ICMP_SENT %d -> %d: a claimed source is never answered", sent, s)
			}
		})
	}
}
