package domains

import (
	"context"
	"errors"
	"fmt"
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

// privateLineApplied says whether n's domains_map has the cloud <-> site-a private line: the other
// end's domain reachable (site-b's nodes reach neither).
func privateLineApplied(n *lab.Node, doms map[uint32]domainsmap.Domain) bool {
	other := lab.DomainSiteA
	if n.Domain == lab.DomainSiteA {
		other = lab.DomainCloud
	}
	return n.Domain == lab.DomainSiteB || doms[domain.ID(other)].Reachable()
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
