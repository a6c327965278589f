package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRouteSite checks the route-mode site without edgeplane's speaker: site-a's two segments,
// the router forwarding between them, and the gateway's bird2 learning a pod CIDR from each
// segment. The speakers here are a second bird in each node namespace (agents not started),
// advertising the node's pod CIDR as edgeplane's agent will; the gateway installs both routes into
// the router's table, withdraws one when its speaker stops, and the lab closes with nothing left.
func TestRouteSite(t *testing.T) {
	cfg := ConfigForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	l := newCheckedLab(t, ctx, cfg)
	if _, err := l.AddNode(ctx, "seg3", 3, NodeOptions{Domain: DomainSiteB, Segment: 2, NoAgent: true}); err == nil {
		t.Error("a node on site-b's segment 2 was built; only site-a has one")
	}
	n1, err := l.AddNode(ctx, "a1", 1, NodeOptions{Domain: DomainSiteA, NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := l.AddNode(ctx, "a2", 2, NodeOptions{Domain: DomainSiteA, Segment: 2, NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("172.31.1.12"); n2.IP != want || n2.Domain != DomainSiteA {
		t.Fatalf("a2 on segment 2: %s in %s, want %s in site-a", n2.IP, n2.Domain, want)
	}
	// Across the segments through the router (TTL 64 - 1), and the API server through its public
	// address from segment 2.
	if _, err := WaitPing(ctx, n1.Netns, n2.IP, 5*time.Second); err != nil {
		t.Fatalf("a1 -> a2 across the segments: %v", err)
	}
	if out, err := n2.Netns.Exec(ctx, "ping", "-c1", "-W2", APIServerPublicIP.String()); err != nil {
		t.Fatalf("a2 -> the API server's public address: %v %s", err, out)
	}

	g, err := l.StartGateway(ctx, GatewayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	speakers := map[*Node]*Process{}
	for _, n := range []*Node{n1, n2} {
		p, err := startTestSpeaker(l, n, g)
		if err != nil {
			t.Fatal(err)
		}
		speakers[n] = p
	}
	routes, took, err := g.WaitRoutes(ctx, 30*time.Second, func(r map[netip.Prefix]GatewayRoute) bool {
		return r[n1.PodCIDR].NextHop == n1.IP && r[n2.PodCIDR].NextHop == n2.IP
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, TailFile(filepath.Join(g.Dir, "bird.log"), 30))
	}
	t.Logf("gateway learned both pod CIDRs in %v: %v", took.Round(time.Millisecond), routes)
	if len(routes) != 2 {
		t.Errorf("gateway has %d routes, want the 2 pod CIDRs only: %v", len(routes), routes)
	}
	sessions, err := g.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{n1, n2} {
		s := sessions[n.IP]
		if s.BGPState != "Established" || s.Imported != 1 {
			t.Errorf("gateway's session with %s: %+v, want Established with 1 route imported", n.Name, s)
		}
	}
	kernel, err := g.KernelRoutes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{n1, n2} {
		if want := fmt.Sprintf("%s via %s", n.PodCIDR, n.IP); !strings.Contains(kernel, want) {
			t.Errorf("router's table lacks %q:\n%s", want, kernel)
		}
	}

	// A speaker that stops without graceful restart: its route goes at once.
	speakers[n2].Stop(5 * time.Second)
	if _, took, err := g.WaitRoutes(ctx, 10*time.Second, func(r map[netip.Prefix]GatewayRoute) bool {
		_, ok := r[n2.PodCIDR]
		return !ok && r[n1.PodCIDR].NextHop == n1.IP
	}); err != nil {
		t.Error(err)
	} else {
		t.Logf("a2's route withdrawn %v after its speaker stopped", took.Round(time.Millisecond))
	}
}

// startTestSpeaker runs a bird in the node's namespace that advertises the node's pod CIDR to the
// gateway on its segment (graceful restart off), as the agent's speaker does.
func startTestSpeaker(l *Lab, n *Node, g *Gateway) (*Process, error) {
	dir := filepath.Join(n.Dir, "bird")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	peer := SegmentRouterIP(1)
	if SiteASegment2Net.Contains(n.IP) {
		peer = SegmentRouterIP(2)
	}
	conf := fmt.Sprintf(`router id %[1]s;
protocol device {}
protocol static { ipv4; route %[2]s blackhole; }
protocol bgp uplink {
	local %[1]s as %[3]d;
	neighbor %[4]s as %[5]d;
	ipv4 { import none; export all; next hop self; };
}
`, n.IP, n.PodCIDR, g.NodeASN, peer, g.ASN)
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := startProcess("bird@"+n.Name, n.Netns, filepath.Join(dir, "bird.out"),
		"bird", "-f", "-c", path, "-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		return nil, err
	}
	l.onClose(func() { p.Stop(5 * time.Second) })
	return p, nil
}
