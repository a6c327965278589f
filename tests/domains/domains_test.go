// Package domains is the end-to-end suite of network domains (issue 3, docs/domains.md): a lab of
// three domains (cloud, site-a, site-b; tests/lab), real edgeplane agents and CNI, a real
// kube-apiserver, and the pod-pair reachability matrix under each connectivity configuration.
// Run it with `make test` (root).
package domains

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	echoPort      = 8080
	streamPort    = 9000
	cmNamespace   = lab.AgentNamespace
	cmName        = "edgeplane-domains" // the agent's --domain-config default: in its namespace
	convergeLimit = 10 * time.Second
)

// The cluster: two cloud nodes, two site-a nodes, one site-b node; each node's pool is its
// domain's name (apps.openyurt.io/nodepool), every node has a public NAT address published as
// flannel's public-ip-overwrite. One pod per node, each serving a TCP echo.
type cluster struct {
	lab   *lab.Lab
	nodes []*lab.Node
	pods  []*lab.Pod // pods[i] runs on nodes[i]
}

var layout = []struct {
	name, domain string
	index        int
}{
	{"c1", lab.DomainCloud, 1}, {"c2", lab.DomainCloud, 2},
	{"a1", lab.DomainSiteA, 3}, {"a2", lab.DomainSiteA, 4},
	{"b1", lab.DomainSiteB, 5},
}

func build(t *testing.T) *cluster {
	t.Helper()
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	c := &cluster{lab: l}
	for _, x := range layout {
		n, err := l.AddNode(ctx, x.name, x.index, lab.NodeOptions{
			Domain: x.domain, PublicIPOverwrite: true,
			Labels: map[string]string{domain.DefaultPoolLabel: x.domain},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		p, err := l.AddPod(ctx, n, "p-"+n.Name, lab.PodOptions{})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := lab.ServeTCPEcho(p.Netns, netip.AddrPortFrom(p.IP, echoPort))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		c.pods = append(c.pods, p)
	}
	return c
}

func (c *cluster) node(name string) *lab.Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	panic("no node " + name)
}

func (c *cluster) pod(node string) *lab.Pod {
	for _, p := range c.pods {
		if p.Node.Name == node {
			return p
		}
	}
	panic("no pod on " + node)
}

// setConfig creates, replaces or (yaml == "") deletes the domain ConfigMap.
func (c *cluster) setConfig(t *testing.T, yaml string) {
	t.Helper()
	cms := c.lab.Client.CoreV1().ConfigMaps(cmNamespace)
	if yaml == "" {
		if err := cms.Delete(t.Context(), cmName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		return
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cmName, Namespace: cmNamespace}, Data: map[string]string{domain.ConfigKey: yaml}}
	_, err := cms.Update(t.Context(), cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(t.Context(), cm, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// outcome of one TCP exchange between two pods.
type outcome struct {
	ok   bool
	err  error
	took time.Duration
}

type pair struct{ src, dst string } // node names

// probe runs the TCP echo from every pod to every pod on another node, in parallel.
func (c *cluster) probe() map[pair]outcome {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out = map[pair]outcome{}
	)
	for _, s := range c.pods {
		for _, d := range c.pods {
			if s == d {
				continue
			}
			wg.Go(func() {
				start := time.Now()
				_, err := lab.TCPEcho(s.Netns, netip.AddrPortFrom(d.IP, echoPort), 2*time.Second)
				mu.Lock()
				out[pair{s.Node.Name, d.Node.Name}] = outcome{ok: err == nil, err: err, took: time.Since(start)}
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// expectation says which domains reach each other.
type expectation func(a, b string) bool

func domainOf(node string) string {
	for _, x := range layout {
		if x.name == node {
			return x.domain
		}
	}
	panic(node)
}

func mismatches(got map[pair]outcome, want expectation) []string {
	var out []string
	for p, o := range got {
		if w := want(domainOf(p.src), domainOf(p.dst)); o.ok != w {
			out = append(out, fmt.Sprintf("%s->%s reachable=%t want %t (%v)", p.src, p.dst, o.ok, w, o.err))
		}
	}
	slices.Sort(out)
	return out
}

// converge probes until the matrix is want, returning how long that took.
func (c *cluster) converge(t *testing.T, want expectation) time.Duration {
	t.Helper()
	start := time.Now()
	var last []string
	for time.Since(start) < convergeLimit {
		if last = mismatches(c.probe(), want); len(last) == 0 {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("matrix did not converge within %v:\n  %s", convergeLimit, strings.Join(last, "\n  "))
	return 0
}

// counter reads one counter of one node.
func counter(t *testing.T, n *lab.Node, dir metricsmap.Dir, reason dropreason.Reason) uint64 {
	t.Helper()
	m, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return m[metricsmap.Key{Dir: dir, Reason: uint32(reason)}].Packets
}

// counter sums a counter over all nodes.
func (c *cluster) counter(t *testing.T, dir metricsmap.Dir, reason dropreason.Reason) uint64 {
	t.Helper()
	var n uint64
	for _, node := range c.nodes {
		m, err := node.Counters()
		if err != nil {
			t.Fatal(err)
		}
		n += m[metricsmap.Key{Dir: dir, Reason: uint32(reason)}].Packets
	}
	return n
}

// checkMatrix runs one more probe after convergence and checks each cell: reachable pairs
// exchange data, unreachable ones fail at once with "no route to host" (the datapath's ICMP), and
// the drop counters grow by exactly one DOMAIN_UNREACHABLE (and one ICMP_SENT) per unreachable pair.
func (c *cluster) checkMatrix(t *testing.T, want expectation) (reachable, unreachable int) {
	t.Helper()
	drops := c.counter(t, metricsmap.DirPodEgress, dropreason.DomainUnreachable)
	icmps := c.counter(t, metricsmap.DirPodEgress, dropreason.ICMPSent)
	got := c.probe()
	if m := mismatches(got, want); len(m) > 0 {
		t.Fatalf("matrix:\n  %s", strings.Join(m, "\n  "))
	}
	var slowest time.Duration
	for p, o := range got {
		if o.ok {
			reachable++
			continue
		}
		unreachable++
		slowest = max(slowest, o.took)
		if !errors.Is(o.err, syscall.EHOSTUNREACH) {
			t.Errorf("%s->%s failed with %v, want EHOSTUNREACH", p.src, p.dst, o.err)
		}
		if o.took > 500*time.Millisecond {
			t.Errorf("%s->%s took %v to fail, want fast", p.src, p.dst, o.took)
		}
	}
	dd := c.counter(t, metricsmap.DirPodEgress, dropreason.DomainUnreachable) - drops
	di := c.counter(t, metricsmap.DirPodEgress, dropreason.ICMPSent) - icmps
	if dd != uint64(unreachable) || di != uint64(unreachable) {
		t.Errorf("DOMAIN_UNREACHABLE +%d, ICMP_SENT +%d; the matrix predicts +%d each", dd, di, unreachable)
	}
	t.Logf("matrix: %d reachable, %d unreachable pairs (slowest failure %v); DOMAIN_UNREACHABLE +%d, ICMP_SENT +%d",
		reachable, unreachable, slowest.Round(time.Microsecond), dd, di)
	return reachable, unreachable
}

func sameDomain(a, b string) bool { return a == b }

func cloudSiteA(a, b string) bool {
	pair := []string{a, b}
	slices.Sort(pair)
	return a == b || (pair[0] == lab.DomainCloud && pair[1] == lab.DomainSiteA)
}

const privateLine = `
connectivity:
- domains: [cloud, site-a]
  mode: private
`

func TestDomains(t *testing.T) {
	c := build(t)
	pids := map[string]int{}
	for _, n := range c.nodes {
		pids[n.Name] = n.Agent.Pid()
	}

	t.Run("idle-cluster-has-no-drops", func(t *testing.T) {
		// Pods' and the overlay device's IPv6 link-local chatter would show up as UNSUPPORTED_L3
		// (the network is IPv4; the CNI plugin and the agent turn IPv6 off on those links).
		time.Sleep(time.Second) // duplicate address detection and router solicitation would be done
		for _, dir := range []metricsmap.Dir{metricsmap.DirPodEgress, metricsmap.DirOverlayOut, metricsmap.DirOverlayIn} {
			if n := c.counter(t, dir, dropreason.UnsupportedL3); n != 0 {
				t.Errorf("%v: %d UNSUPPORTED_L3 drops on an idle cluster", dir, n)
			}
		}
	})

	t.Run("all-public", func(t *testing.T) {
		took := c.converge(t, sameDomain)
		r, u := c.checkMatrix(t, sameDomain)
		if r != 4 || u != 16 {
			t.Errorf("%d reachable, %d unreachable; want 4, 16", r, u)
		}
		t.Logf("converged in %v", took.Round(time.Millisecond))
	})

	t.Run("cloud-site-a-private", func(t *testing.T) {
		start := time.Now()
		c.setConfig(t, privateLine)
		applied := c.waitMaps(t, start, func(n *lab.Node, doms map[uint32]domainsmap.Domain) bool {
			other := lab.DomainSiteA
			if n.Domain == lab.DomainSiteA {
				other = lab.DomainCloud
			}
			return n.Domain == lab.DomainSiteB || doms[domain.ID(other)].Reachable()
		})
		took := c.converge(t, cloudSiteA)
		r, u := c.checkMatrix(t, cloudSiteA)
		if r != 12 || u != 8 {
			t.Errorf("%d reachable, %d unreachable; want 12, 8", r, u)
		}
		t.Logf("private line in every node's domains_map %v after the ConfigMap update; matrix converged in %v (probes retry on TCP's 1 s SYN timer)",
			applied.Round(time.Millisecond), took.Round(time.Millisecond))
		// Across the private line the tunnel endpoints are the private addresses; to site-b
		// (public) the NAT address, which is what its packets come from.
		routes, err := c.node("c1").Routes()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			switch r.CIDR {
			case c.node("a1").PodCIDR:
				if r.NodeIP != c.node("a1").IP || r.Domain != domain.ID(lab.DomainSiteA) {
					t.Errorf("c1's route to a1: %+v, want a1's private address in site-a", r)
				}
			case c.node("b1").PodCIDR:
				if r.NodeIP != c.node("b1").PublicIP || r.Domain != domain.ID(lab.DomainSiteB) {
					t.Errorf("c1's route to b1: %+v, want b1's public address in site-b", r)
				}
			}
		}
	})

	t.Run("pool-regrouped", func(t *testing.T) {
		// No pair table: site-a's pool joins the cloud domain instead.
		c.setConfig(t, "domains:\n  cloud: [cloud, site-a]\n")
		took := c.converge(t, cloudSiteA)
		c.checkMatrix(t, cloudSiteA)
		routes, err := c.node("c1").Routes()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if r.CIDR == c.node("a2").PodCIDR && r.Domain != domain.ID(lab.DomainCloud) {
				t.Errorf("a2's route on c1 is in domain %#x, want cloud's %#x", r.Domain, domain.ID(lab.DomainCloud))
			}
		}
		t.Logf("regrouped in %v", took.Round(time.Millisecond))
	})

	t.Run("live-change-under-traffic", func(t *testing.T) {
		c.setConfig(t, privateLine)
		c.converge(t, cloudSiteA)
		for _, p := range []*lab.Pod{c.pod("a1"), c.pod("c2")} {
			srv, err := lab.ServeUDPEcho(p.Netns, netip.AddrPortFrom(p.IP, streamPort))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
		}
		ctx, stop := context.WithCancel(t.Context())
		type result struct {
			stats lab.StreamStats
			err   error
		}
		cross, same := make(chan result, 1), make(chan result, 1)
		go func() {
			s, err := lab.UDPStream(ctx, c.pod("c1").Netns, netip.AddrPortFrom(c.pod("a1").IP, streamPort), 5*time.Millisecond, 300*time.Millisecond)
			cross <- result{s, err}
		}()
		go func() {
			s, err := lab.UDPStream(ctx, c.pod("c1").Netns, netip.AddrPortFrom(c.pod("c2").IP, streamPort), 5*time.Millisecond, 300*time.Millisecond)
			same <- result{s, err}
		}()
		time.Sleep(300 * time.Millisecond)
		c.setConfig(t, "") // back to the defaults: all public
		cut := waitTCP(t, c.pod("c1"), c.pod("a1"), false)
		time.Sleep(300 * time.Millisecond)
		c.setConfig(t, privateLine)
		restored := waitTCP(t, c.pod("c1"), c.pod("a1"), true)
		time.Sleep(300 * time.Millisecond)
		stop()
		x, s := <-cross, <-same
		if x.err != nil || s.err != nil {
			t.Fatal(x.err, s.err)
		}
		t.Logf("table change to public took effect in %v, back to private in %v", cut.Round(time.Millisecond), restored.Round(time.Millisecond))
		t.Logf("cross-domain stream c1->a1: %v", x.stats)
		t.Logf("same-domain stream c1->c2: %v", s.stats)
		if len(s.stats.Lost) != 0 {
			t.Errorf("the same-domain stream lost %d packets during the table changes", len(s.stats.Lost))
		}
		if len(x.stats.Lost) == 0 || x.stats.Received == 0 {
			t.Errorf("the cross-domain stream should lose packets while public and flow otherwise: %v", x.stats)
		}
		// The last packets (sent after the line came back) arrived: the losses are one window.
		if n := x.stats.Sent; len(x.stats.Lost) > 0 && x.stats.Lost[len(x.stats.Lost)-1] >= uint64(n)-20 {
			t.Errorf("the cross-domain stream still lost packets at its end: %v", x.stats)
		}
		for _, n := range c.nodes {
			if n.Agent.Pid() != pids[n.Name] {
				t.Errorf("agent of %s restarted (pid %d -> %d)", n.Name, pids[n.Name], n.Agent.Pid())
			}
		}
	})

	t.Run("no-pools-through-nat", func(t *testing.T) {
		// Without pool labels every node is in the default domain: plain Flannel semantics, the
		// tunnel endpoint is each node's public-ip-overwrite, and all traffic crosses the NAT,
		// site-b included.
		c.setConfig(t, "")
		for _, n := range c.nodes {
			c.label(t, n.Name, domain.DefaultPoolLabel, false)
		}
		t.Cleanup(func() {
			for _, n := range c.nodes {
				c.setPool(t, n.Name, n.Domain)
			}
			c.converge(t, sameDomain)
		})
		took := c.converge(t, func(string, string) bool { return true })
		r, u := c.checkMatrix(t, func(string, string) bool { return true })
		if r != 20 || u != 0 {
			t.Errorf("%d reachable, %d unreachable; want 20, 0", r, u)
		}
		routes, err := c.node("c1").Routes()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if r.CIDR == c.node("c2").PodCIDR && r.NodeIP != c.node("c2").PublicIP {
				t.Errorf("c1's route to c2 goes to %v, want c2's public-ip-overwrite %v", r.NodeIP, c.node("c2").PublicIP)
			}
		}
		t.Logf("all pools removed: every pair reachable through the NAT after %v", took.Round(time.Millisecond))
	})

	t.Run("cloud-gateway", func(t *testing.T) { testGateway(t, c) })
	t.Run("cloud-gateway-isolated-twice-then-removed", func(t *testing.T) { testGatewayRemoved(t, c) })
	t.Run("spoofed-vxlan", func(t *testing.T) { testSpoofedVXLAN(t, c) })
}

// waitMaps polls every node's domains_map until ok holds for all of them, returning the time since
// start.
func (c *cluster) waitMaps(t *testing.T, start time.Time, ok func(*lab.Node, map[uint32]domainsmap.Domain) bool) time.Duration {
	t.Helper()
	for time.Since(start) < convergeLimit {
		all := true
		for _, n := range c.nodes {
			m, err := domainsmap.OpenReadOnly(n.BPFFS)
			if err != nil {
				t.Fatal(err)
			}
			doms, err := m.List()
			m.Close()
			if err != nil {
				t.Fatal(err)
			}
			all = all && ok(n, doms)
		}
		if all {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("domains_map did not converge on every node within %v", convergeLimit)
	return 0
}

// waitTCP polls the TCP echo from a to b until it succeeds (want) or fails, returning how long.
func waitTCP(t *testing.T, a, b *lab.Pod, want bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < convergeLimit {
		_, err := lab.TCPEcho(a.Netns, netip.AddrPortFrom(b.IP, echoPort), time.Second)
		if (err == nil) == want {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s -> %s did not become reachable=%t within %v", a.Name, b.Name, want, convergeLimit)
	return 0
}

func (c *cluster) label(t *testing.T, node, key string, set bool) {
	t.Helper()
	var patch string
	if set {
		patch = fmt.Sprintf(`{"metadata":{"labels":{%q:""}}}`, key)
	} else {
		patch = fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // also from t.Cleanup
	defer cancel()
	if _, err := c.lab.Client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) setPool(t *testing.T, node, pool string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, domain.DefaultPoolLabel, pool)
	if _, err := c.lab.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

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
	// node_ingress answers (the kernel's own answer from the unreachable route would be
	// rate-limited to a burst, then one every two seconds): every probe fails at once.
	for range 5 {
		if _, took, err := c.apiEcho(c.pod("a1")); !errors.Is(err, syscall.EHOSTUNREACH) || took > 500*time.Millisecond {
			t.Errorf("API server -> site-a pod without a private line: %v after %v, want EHOSTUNREACH at once", err, took)
		}
	}
	if got := counter(t, c2, metricsmap.DirNodeIn, dropreason.DomainUnreachable); got < 5 {
		t.Errorf("c2 counted %d DOMAIN_UNREACHABLE on node-in, want at least the 5 probes", got)
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

// vxlanProbe is a VXLAN frame (VNI 1) carrying a UDP packet to pod, as a spoofer would send it.
func vxlanProbe(pod *lab.Pod, vtep net.HardwareAddr) []byte {
	b := []byte{0x08, 0, 0, 0, 0, 0, 1, 0} // I flag, VNI 1
	b = append(b, vtep...)
	b = append(b, 0x02, 0, 0, 0, 0, 0x66, 0x08, 0x00)
	ip := []byte{0x45, 0, 0, 28 + 4, 0, 0, 0, 0, 64, 17, 0, 0, 10, 244, 200, 1}
	ip = append(ip, pod.IP.AsSlice()...)
	udp := []byte{0x30, 0x39, byte(echoPort >> 8), byte(echoPort & 0xff), 0, 12, 0, 0, 'h', 'i', '!', '!'}
	return append(append(b, ip...), udp...)
}

func sendUDP(t *testing.T, ns lab.Netns, dst netip.AddrPort, payload []byte, n int) {
	t.Helper()
	conn, err := lab.DialUDP(ns, dst, false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range n {
		if _, err := conn.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
}

func testSpoofedVXLAN(t *testing.T, c *cluster) {
	c.setConfig(t, "") // all public: site-b is an unreachable domain for c1
	c.converge(t, sameDomain)
	c1 := c.node("c1")
	link, err := c1.Netns.IP(t.Context(), "-br", "link", "show", "edgeplane.1")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(link)
	if len(fields) < 3 {
		t.Fatalf("ip -br link: %q", link)
	}
	mac, err := net.ParseMAC(fields[2])
	if err != nil {
		t.Fatal(err)
	}
	probe := vxlanProbe(c.pod("c1"), mac)
	const n = 5
	count := func(reason dropreason.Reason) uint64 {
		m, err := c1.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return m[metricsmap.Key{Dir: metricsmap.DirOverlayIn, Reason: uint32(reason)}].Packets
	}
	settle := func(reason dropreason.Reason, before uint64) uint64 {
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && count(reason) < before+n {
			time.Sleep(20 * time.Millisecond)
		}
		return count(reason) - before
	}

	// From a host that is not a node (the outside host on the cloud network).
	before := count(dropreason.UnknownTunnelSource)
	sendUDP(t, c.lab.Outside, netip.AddrPortFrom(c1.IP, 8472), probe, n)
	if got := settle(dropreason.UnknownTunnelSource, before); got != n {
		t.Errorf("VXLAN from the outside host: UNKNOWN_TUNNEL_SOURCE +%d, want +%d", got, n)
	}
	// From site-b's node, through the NAT (the only way it reaches c1): a node of a domain c1
	// cannot reach.
	before = count(dropreason.DomainUnreachable)
	sendUDP(t, c.node("b1").Netns, netip.AddrPortFrom(c1.PublicIP, 8472), probe, n)
	if got := settle(dropreason.DomainUnreachable, before); got != n {
		t.Errorf("VXLAN from site-b's node: DOMAIN_UNREACHABLE +%d, want +%d", got, n)
	}
}
