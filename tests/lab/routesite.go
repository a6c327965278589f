package lab

import (
	"context"
	"fmt"
	"net/netip"
)

// A route-mode site (docs/domains.md, "Route mode") is a domain whose nodes sit on more than one
// L2 segment behind the site's gateway router, which learns every node's pod CIDR over BGP and
// routes between the segments. The lab builds it out of site-a: its bridge is the first segment,
// and a second bridge, br-site-a2 (SiteASegment2Net), is the second one; the router, which
// already has its site-a leg at 172.31.0.1, gets a leg at 172.31.1.1 on the second segment and
// forwards between the two legs (everything, pods' plain packets included: inside one site the
// gateway is an ordinary router). StartGateway runs bird2 there (gateway.go). A node goes on the
// second segment with NodeOptions{Domain: DomainSiteA, Segment: 2}; it reaches the API server
// through its public address, as site-b does, and the cloud's private addresses over the private
// line, which carries both segments of the site (domains.go lineNets).

// SiteASegment2Net is site-a's second L2 segment.
var SiteASegment2Net = netip.MustParsePrefix("172.31.1.0/24")

var siteASegment2 = domain{DomainSiteA, SiteASegment2Net, "br-site-a2"}

// segmentLeg is the router's interface on site-a's second segment, named like its other legs
// (after what they lead to); its switch port is "rt-" + segmentLeg.
const segmentLeg = "site-a2"

// nodeSegment is the underlay a node with the given options is plugged into: its domain's
// bridge, or site-a's second segment (built on demand) for Segment 2.
func (l *Lab) nodeSegment(ctx context.Context, d domain, segment int) (domain, error) {
	switch {
	case segment <= 1:
		return d, nil
	case segment == 2 && d.name == DomainSiteA:
		if err := l.EnableDomains(ctx); err != nil {
			return domain{}, err
		}
		return siteASegment2, l.enableSegment2(ctx)
	default:
		return domain{}, fmt.Errorf("domain %s has no segment %d (only site-a has a second one)", d.name, segment)
	}
}

// enableSegment2 builds site-a's second segment and the router's leg on it, once.
func (l *Lab) enableSegment2(ctx context.Context) error {
	l.netMu.Lock()
	defer l.netMu.Unlock()
	if l.segment2 {
		return nil
	}
	if _, err := l.Switch.IP(ctx, "link", "add", siteASegment2.bridge, "type", "bridge"); err != nil {
		return err
	}
	if _, err := l.Switch.IP(ctx, "link", "set", siteASegment2.bridge, "up"); err != nil {
		return err
	}
	if err := l.plug(ctx, l.router, segmentLeg, "rt-"+segmentLeg, siteASegment2.host(1), siteASegment2); err != nil {
		return err
	}
	// Ahead of the line and NAT rules: between the segments of one site the router forwards
	// everything, both ways.
	rules := fmt.Sprintf("*filter\n-I FORWARD -i %[1]s -o %[2]s -j ACCEPT\n-I FORWARD -i %[2]s -o %[1]s -j ACCEPT\nCOMMIT\n", DomainSiteA, segmentLeg)
	if _, err := l.router.execInput(ctx, rules, "iptables-restore", "-w", "10", "--noflush"); err != nil {
		return fmt.Errorf("router rules between site-a's segments: %w", err)
	}
	l.segment2 = true
	l.Logf("lab %s: site-a's second segment %s up, router leg %s at %s", l.ID, SiteASegment2Net, segmentLeg, siteASegment2.host(1))
	return nil
}

// SegmentRouterIP is the router's address on a segment of site-a (1 or 2): the gateway's BGP
// address there, and the segment's default gateway.
func SegmentRouterIP(segment int) netip.Addr {
	if segment == 2 {
		return siteASegment2.host(1)
	}
	return RouterIP(DomainSiteA)
}
