package domains

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

const isolatedWarning = "cannot carry cloud hosts' traffic"

// apiEcho is the TCP echo from the API server's namespace (a cloud host that is not a node).
func (c *cluster) apiEcho(dst *lab.Pod) (netip.AddrPort, time.Duration, error) {
	start := time.Now()
	seen, err := lab.TCPEcho(c.lab.API.Netns, netip.AddrPortFrom(dst.IP, echoPort), 2*time.Second)
	return seen, time.Since(start), err
}

// overlayAddr is a node's overlay address, the first of its pod CIDR (where the gateway
// translates cloud hosts' traffic to).
func overlayAddr(n *lab.Node) netip.Addr { return n.PodCIDR.Addr() }

func testGateway(t *testing.T, c *cluster) {
	ctx := t.Context()
	c.setConfig(t, privateLine)
	c.converge(t, cloudSiteA)
	c2, c1 := c.node("c2"), c.node("c1")
	c.label(t, "c2", domain.CloudGatewayLabel, true)
	t.Cleanup(func() {
		c.label(t, "c1", domain.CloudGatewayLabel, false)
		c.label(t, "c2", domain.CloudGatewayLabel, false)
	})
	// The VPC's route table: edge pod CIDRs via the gateway node (the operator's part).
	setAPIRoute := func(via *lab.Node) {
		t.Helper()
		if _, err := c.lab.API.Netns.IP(ctx, "route", "replace", lab.ClusterCIDR.String(), "via", via.IP.String()); err != nil {
			t.Fatal(err)
		}
	}
	setAPIRoute(c2)

	// Edge pods answer the API server through the gateway, which translated it to its overlay
	// address; site-b (public) fails at once.
	var seen netip.AddrPort
	deadline := time.Now().Add(convergeLimit)
	for {
		var err error
		if seen, _, err = c.apiEcho(c.pod("a1")); err == nil || time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("API server -> site-a pod through gateway c2: %v", err)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if seen.Addr() != overlayAddr(c2) {
		t.Errorf("the site-a pod saw the API server as %v, want gateway c2's overlay address %v", seen, overlayAddr(c2))
	}
	if _, took, err := c.apiEcho(c.pod("b1")); !errors.Is(err, syscall.EHOSTUNREACH) || took > 500*time.Millisecond {
		t.Errorf("API server -> site-b pod: %v after %v, want EHOSTUNREACH at once", err, took)
	}
	// The other cloud node routes edge pod CIDRs via the gateway (host traffic), and an
	// unreachable route for site-b.
	out, err := c1.Netns.IP(ctx, "route", "show", "proto", "237")
	if err != nil {
		t.Fatal(err)
	}
	wantVia := fmt.Sprintf("%s via %s", c.node("a1").PodCIDR, c2.IP)
	wantUnreach := fmt.Sprintf("unreachable %s", c.node("b1").PodCIDR)
	if !strings.Contains(out, wantVia) || !strings.Contains(out, wantUnreach) {
		t.Errorf("c1's edgeplane routes:\n%s\nwant %q and %q", out, wantVia, wantUnreach)
	}
	if seen, err := lab.TCPEcho(c1.Netns, netip.AddrPortFrom(c.pod("a1").IP, echoPort), 2*time.Second); err != nil || seen.Addr() != overlayAddr(c2) {
		t.Errorf("c1's host -> site-a pod: seen as %v, %v; want via gateway c2 (%v)", seen, err, overlayAddr(c2))
	}
	t.Logf("API server -> site-a pod via gateway c2: seen as %v; c1's routes:\n%s", seen, out)

	// Without the private line the gateway cannot help: fast failure, and it says so.
	c.setConfig(t, "")
	waitAPI(t, c, c.pod("a1"), false)
	// c2's host routes and its datapath's maps follow the change in separate writes: until both
	// have, the kernel's unreachable route may answer a probe (4 of 6 counted, once in CI). Once
	// node_ingress answers one, it must answer every one.
	waitCounted(t, c, c2, c.pod("a1"))
	before := counter(t, c2, metricsmap.DirNodeIn, dropreason.DomainUnreachable)
	// node_ingress answers (the kernel's own answer from the unreachable route would be
	// rate-limited to a burst, then one every two seconds): every probe fails at once.
	for range 5 {
		if _, took, err := c.apiEcho(c.pod("a1")); !errors.Is(err, syscall.EHOSTUNREACH) || took > 500*time.Millisecond {
			t.Errorf("API server -> site-a pod without a private line: %v after %v, want EHOSTUNREACH at once", err, took)
		}
	}
	if got := counter(t, c2, metricsmap.DirNodeIn, dropreason.DomainUnreachable) - before; got < 5 {
		t.Errorf("c2 counted %d DOMAIN_UNREACHABLE on node-in for the 5 probes, want at least 5", got)
	}
	waitEvent(t, c, "c2", "CloudGatewayIsolated")
	if logs := c2.AgentLogs(200); !strings.Contains(logs, "cannot carry cloud hosts' traffic") {
		t.Errorf("c2's agent log does not say the gateway cannot help:\n%s", logs)
	}

	// The label moves to c1 (and the VPC route with it): live, no restart.
	c.setConfig(t, privateLine)
	c.label(t, "c2", domain.CloudGatewayLabel, false)
	c.label(t, "c1", domain.CloudGatewayLabel, true)
	setAPIRoute(c1)
	took := waitAPI(t, c, c.pod("a2"), true)
	if seen, _, err := c.apiEcho(c.pod("a2")); err != nil || seen.Addr() != overlayAddr(c1) {
		t.Errorf("after the move: seen as %v, %v; want c1's overlay address %v", seen, err, overlayAddr(c1))
	}
	t.Logf("gateway moved to c1: API server reaches site-a pods again after %v", took.Round(time.Millisecond))
	if _, err := c.lab.API.Netns.IP(ctx, "route", "del", lab.ClusterCIDR.String()); err != nil {
		t.Error(err)
	}
}

func waitAPI(t *testing.T, c *cluster, dst *lab.Pod, want bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < convergeLimit {
		if _, _, err := c.apiEcho(dst); (err == nil) == want {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("API server -> %s: reachable=%t not reached within %v", dst.Name, want, convergeLimit)
	return 0
}

// waitCounted probes dst from the API server until gateway's node_ingress counts a probe as
// DOMAIN_UNREACHABLE (its maps have the change, not only its host routes).
func waitCounted(t *testing.T, c *cluster, gateway *lab.Node, dst *lab.Pod) {
	t.Helper()
	for deadline := time.Now().Add(convergeLimit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		before := counter(t, gateway, metricsmap.DirNodeIn, dropreason.DomainUnreachable)
		_, _, _ = c.apiEcho(dst)
		if counter(t, gateway, metricsmap.DirNodeIn, dropreason.DomainUnreachable) > before {
			return
		}
	}
	t.Fatalf("%s's node_ingress never answered the API server's probe to %s within %v", gateway.Name, dst.Name, convergeLimit)
}

func waitEvent(t *testing.T, c *cluster, node, reason string) {
	t.Helper()
	deadline := time.Now().Add(convergeLimit)
	for time.Now().Before(deadline) {
		evs, err := c.lab.Client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == node && e.Reason == reason {
				t.Logf("event on %s: %s: %s", node, e.Reason, e.Message)
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("no %s event on node %s", reason, node)
}

// testGatewayRemoved (issue 12, item 8): a gateway isolated a second time, after a recovery, says
// so again (event and Warning log line); and with the label removed from every node, each node
// reaches edge pods itself (no route via a gateway, the log says via="none"), and a cloud host
// still reaches them through the node its VPC routes it to, which translates it (docs/domains.md,
// "Cloud gateway": the label steers routes, it grants nothing).
func testGatewayRemoved(t *testing.T, c *cluster) {
	ctx := t.Context()
	c1, c2 := c.node("c1"), c.node("c2")
	c.setConfig(t, privateLine)
	c.converge(t, cloudSiteA)
	c.label(t, "c2", domain.CloudGatewayLabel, true)
	t.Cleanup(func() { c.label(t, "c2", domain.CloudGatewayLabel, false) })
	if _, err := c.lab.API.Netns.IP(ctx, "route", "replace", lab.ClusterCIDR.String(), "via", c2.IP.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.lab.API.Netns.IP(ctx, "route", "del", lab.ClusterCIDR.String()) })
	viaC2 := fmt.Sprintf("%s via %s", c.node("a1").PodCIDR, c2.IP)
	waitRoutes(t, c1, func(routes string) bool { return strings.Contains(routes, viaC2) })

	// Isolated, recovered, isolated again: two reports.
	for round := 1; round <= 2; round++ {
		before, warnings := isolatedEvents(t, c), warningLines(t, c2)
		c.setConfig(t, "")
		deadline := time.Now().Add(convergeLimit)
		for isolatedEvents(t, c) <= before || warningLines(t, c2) <= warnings {
			if time.Now().After(deadline) {
				t.Fatalf("isolation %d: events %d -> %d, Warning log lines %d -> %d; want one more of each; c2's log:\n%s",
					round, before, isolatedEvents(t, c), warnings, warningLines(t, c2), c2.Agent.LogTail(30))
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Wait for this recovery itself: an earlier subtest's recovery is in the log too, and a
		// ConfigMap deleted again before c2 saw it restored is one change (the reconciler is
		// level-triggered), no second isolation.
		recovered := logCount(t, c2, "no longer isolated")
		c.setConfig(t, privateLine)
		waitLogContains(t, c2, "no longer isolated", recovered+1)
	}

	// The label goes from every node: no node routes via a gateway any more.
	c.label(t, "c2", domain.CloudGatewayLabel, false)
	waitRoutes(t, c1, func(routes string) bool { return !strings.Contains(routes, " via ") })
	waitLogContains(t, c1, `cloudGateway=false via="none"`, 1)
	if logs := c1.AgentLogs(500); strings.Contains(logs, "invalid IP") {
		t.Errorf("c1's log still says \"invalid IP\":\n%s", logs)
	}
	// c1's own host traffic goes straight into the overlay, from its own overlay address.
	if seen, err := lab.TCPEcho(c1.Netns, netip.AddrPortFrom(c.pod("a1").IP, echoPort), 2*time.Second); err != nil || seen.Addr() != overlayAddr(c1) {
		t.Errorf("c1's host -> site-a pod without a gateway: seen as %v, %v; want c1's overlay address %v", seen, err, overlayAddr(c1))
	}
	// The API server's VPC route still points at c2: c2 carries it, translated to its overlay
	// address, as every node does for hosts that route through it.
	seen, _, err := c.apiEcho(c.pod("a1"))
	if err != nil || seen.Addr() != overlayAddr(c2) {
		t.Errorf("API server -> site-a pod routed via c2 without any gateway label: seen as %v, %v; want c2's overlay address %v", seen, err, overlayAddr(c2))
	}
}

// waitRoutes waits until the node's edgeplane routes (protocol 237) satisfy ok.
func waitRoutes(t *testing.T, n *lab.Node, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(convergeLimit)
	for {
		out, err := n.Netns.IP(t.Context(), "route", "show", "proto", "237")
		if err != nil {
			t.Fatal(err)
		}
		if ok(out) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's edgeplane routes did not converge within %v:\n%s", n.Name, convergeLimit, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isolatedEvents sums the counts of CloudGatewayIsolated events on c2.
func isolatedEvents(t *testing.T, c *cluster) int32 {
	t.Helper()
	evs, err := c.lab.Client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == "c2" && e.Reason == "CloudGatewayIsolated" {
			n += e.Count
		}
	}
	return n
}

// warningLines counts the isolation warnings in the node's current agent log at klog's Warning
// level (lines starting with W).
func warningLines(t *testing.T, n *lab.Node) int {
	t.Helper()
	b, err := os.ReadFile(n.Agent.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "W") && strings.Contains(line, isolatedWarning) {
			count++
		}
	}
	return count
}

// logCount is how many times the node's current agent log holds s.
func logCount(t *testing.T, n *lab.Node, s string) int {
	t.Helper()
	b, err := os.ReadFile(n.Agent.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// waitLogContains waits until the node's current agent log holds want at least times times.
func waitLogContains(t *testing.T, n *lab.Node, want string, times int) {
	t.Helper()
	deadline := time.Now().Add(convergeLimit)
	for {
		b, err := os.ReadFile(n.Agent.LogPath)
		if err == nil && strings.Count(string(b), want) >= times {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's agent did not log %s (%d times); log tail:\n%s", n.Name, want, times, n.Agent.LogTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
