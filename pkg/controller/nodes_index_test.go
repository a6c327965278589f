package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// TestPeerIndexMatchesPeers: after any sequence of setPeer and deletePeer, the index answers what
// a walk over every peer answers (the NodeReconciler's questions before the index), including pod
// CIDRs of mixed lengths, shared tunnel endpoints and aliases.
func TestPeerIndexMatchesPeers(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := &NodeReconciler{peers: map[string]peer{}, index: newPeerIndex()}
	addr := func() netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 0, byte(rng.IntN(8))}) }
	cidr := func() netip.Prefix {
		bits := []int{22, 24, 24, 26, 26, 26}[rng.IntN(6)]
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(rng.IntN(8)), byte(rng.IntN(4) << 6)}), bits)
	}
	// 40 nodes in 32 /26s: both ways of finding longer overlapping prefixes (through the peers of
	// that length, through the subprefixes) are taken.
	var names []string
	for i := range 40 {
		names = append(names, fmt.Sprint("node-", i))
	}
	for step := range 5000 {
		name := names[rng.IntN(len(names))]
		if rng.IntN(4) == 0 {
			r.deletePeer(name)
		} else {
			p := peer{podCIDR: cidr(), route: Route{NodeIP: addr(), Local: rng.IntN(8) == 0},
				domain: fmt.Sprint("d", rng.IntN(3)), gateway: rng.IntN(3) == 0}
			if rng.IntN(2) == 0 {
				p.alias = addr()
			}
			r.setPeer(name, p)
		}
		probe, probeCIDR, probeAddr := names[rng.IntN(len(names))], cidr(), addr()

		var wantOverlap bool
		for other, p := range r.peers {
			wantOverlap = wantOverlap || (other != probe && p.podCIDR.Overlaps(probeCIDR))
		}
		other, theirs, gotOverlap := r.index.overlapping(probe, probeCIDR)
		if gotOverlap != wantOverlap {
			t.Fatalf("step %d: overlapping(%s, %s) = %v, want %v (peers %v)", step, probe, probeCIDR, gotOverlap, wantOverlap, r.peers)
		}
		if gotOverlap && (other == probe || r.peers[other].podCIDR.Masked() != theirs || !theirs.Overlaps(probeCIDR)) {
			t.Fatalf("step %d: overlapping(%s, %s) named %s's %s (peers %v)", step, probe, probeCIDR, other, theirs, r.peers)
		}

		var wantPrimary, wantUsed, wantRoute bool
		for n, p := range r.peers {
			wantPrimary = wantPrimary || (n != probe && !p.route.Local && p.route.NodeIP == probeAddr)
			wantUsed = wantUsed || (!p.route.Local && p.route.NodeIP == probeAddr) || p.alias == probeAddr
			wantRoute = wantRoute || p.podCIDR == probeCIDR
		}
		if got := r.isPrimary(probe, probeAddr); got != wantPrimary {
			t.Fatalf("step %d: isPrimary(%s, %s) = %v, want %v", step, probe, probeAddr, got, wantPrimary)
		}
		if got := r.nodeKeyUsed(probeAddr); got != wantUsed {
			t.Fatalf("step %d: nodeKeyUsed(%s) = %v, want %v", step, probeAddr, got, wantUsed)
		}
		if got := r.routeUsed(probeCIDR); got != wantRoute {
			t.Fatalf("step %d: route %s used = %v, want %v", step, probeCIDR, got, wantRoute)
		}
		gateways, domains := map[string]struct{}{}, map[string]int{}
		for n, p := range r.peers {
			if p.gateway {
				gateways[n] = struct{}{}
			}
			domains[p.domain]++
		}
		if fmt.Sprint(gateways) != fmt.Sprint(r.index.gateways) || fmt.Sprint(domains) != fmt.Sprint(r.index.domains) {
			t.Fatalf("step %d: gateways %v domains %v, want %v %v", step, r.index.gateways, r.index.domains, gateways, domains)
		}
	}
}

// writeCounter counts a table's writes (upserts and deletes).
type writeCounter[K comparable, V any] struct {
	*memTable[K, V]
	writes int
}

func (w *writeCounter[K, V]) Upsert(k K, v V) error { w.writes++; return w.memTable.Upsert(k, v) }
func (w *writeCounter[K, V]) Delete(k K) error      { w.writes++; return w.memTable.Delete(k) }

// TestResyncOfIdleClusterWritesNothing: the periodic pass over an unchanged cluster writes no map
// entry (pkg/agent rewrites its snapshot after any write), and still restores an entry lost from
// a map and follows a next hop that moved.
func TestResyncOfIdleClusterWritesNothing(t *testing.T) {
	ctx := context.Background()
	r, _ := newScaleReconciler(t, 50, scaleModel(t, 100, 20))
	routes := &writeCounter[netip.Prefix, Route]{memTable: newMemTable[netip.Prefix, Route]()}
	nodes := &writeCounter[netip.Addr, Node]{memTable: newMemTable[netip.Addr, Node]()}
	domains := &writeCounter[uint32, Domain]{memTable: newMemTable[uint32, Domain]()}
	r.cfg.Routes, r.cfg.Nodes, r.cfg.DomainTable = routes, nodes, domains
	r.syncAll(ctx)
	if routes.writes < 51 || nodes.writes < 50 {
		t.Fatalf("start-up pass: %d route and %d node writes, want at least 51 and 50", routes.writes, nodes.writes)
	}
	routes.writes, nodes.writes, domains.writes = 0, 0, 0
	r.resync(ctx)
	drainNodeQueue(ctx, r)
	if routes.writes != 0 || nodes.writes != 0 || domains.writes != 0 {
		t.Errorf("resync of an idle cluster: %d route, %d node, %d domain writes, want none", routes.writes, nodes.writes, domains.writes)
	}

	lost := bulkPeerNode(7, 100)
	cidr, _, _ := k8s.NodePodCIDR(k8stest.Node(lost))
	want, _ := routes.List()
	routes.memTable.Delete(cidr)
	delete(domains.memTable.entries, domain.ID("domain-07"))
	r.cfg.NextHop = staticNextHop{} // every next hop unresolved now
	r.resync(ctx)
	drainNodeQueue(ctx, r)
	if got, _ := routes.List(); !reflect.DeepEqual(got, want) {
		t.Errorf("after a resync, routes %v, want %v", got, want)
	}
	if _, ok := domains.memTable.entries[domain.ID("domain-07")]; !ok {
		t.Error("a domain lost from domains_map is not written again")
	}
	all, _ := nodes.List()
	for ip, n := range all {
		if n.NextHopMAC != nil {
			t.Errorf("node %s keeps next hop %s, want none", ip, n.NextHopMAC)
		}
	}
}

// drainNodeQueue reconciles what the reconciler queued, as its worker would.
func drainNodeQueue(ctx context.Context, r *NodeReconciler) {
	for r.queue.Len() > 0 {
		r.processNext(ctx)
	}
}

// TestHostRoutesSyncedOnChange: the domains pass after a Node event that changes no host route
// does not list the kernel's routes again; one that does, and the periodic pass, do.
func TestHostRoutesSyncedOnChange(t *testing.T) {
	ctx := context.Background()
	r, indexer := newScaleReconciler(t, 50, scaleModel(t, 100, 20))
	host := r.cfg.HostRoutes.(*countingHostRoutes)
	r.syncAll(ctx)
	drainNodeQueue(ctx, r)
	before := host.routes
	host.syncs = 0

	moved := bulkPeerNode(3, 100)
	moved.Annotations["edgeplane.io/unrelated"] = "x" // no entry changes
	indexer.Update(k8stest.Node(moved))
	r.queue.Add(moved.Name)
	drainNodeQueue(ctx, r)
	if host.syncs != 0 {
		t.Errorf("%d host route syncs after an event that changes none, want 0", host.syncs)
	}
	if err := indexer.Add(k8stest.Node(bulkPeerNode(61, 100))); err != nil { // pool-061: domain-01, unreachable
		t.Fatal(err)
	}
	r.queue.Add(bulkPeerNode(61, 100).Name)
	drainNodeQueue(ctx, r)
	if host.syncs != 1 || host.routes != before+1 {
		t.Errorf("new unreachable node: %d syncs of %d routes, want 1 of %d", host.syncs, host.routes, before+1)
	}
	r.resync(ctx)
	drainNodeQueue(ctx, r)
	if host.syncs != 2 {
		t.Errorf("%d host route syncs after the periodic pass, want 2", host.syncs)
	}
	// Host routes that know no kernel route changed since their sync are not listed again.
	intact := &intactHostRoutes{countingHostRoutes: host, intact: true}
	r.cfg.HostRoutes = intact
	r.resync(ctx)
	drainNodeQueue(ctx, r)
	if host.syncs != 2 {
		t.Errorf("%d host route syncs after a periodic pass with the routes intact, want 2", host.syncs)
	}
	intact.intact = false
	r.resync(ctx)
	drainNodeQueue(ctx, r)
	if host.syncs != 3 {
		t.Errorf("%d host route syncs after a periodic pass with a route changed, want 3", host.syncs)
	}
}

// intactHostRoutes is a countingHostRoutes that answers Intact.
type intactHostRoutes struct {
	*countingHostRoutes
	intact bool
}

func (h *intactHostRoutes) Intact() bool { return h.intact }

// listCounter counts a table's listings.
type listCounter[K comparable, V any] struct {
	*memTable[K, V]
	lists int
}

func (l *listCounter[K, V]) List() (map[K]V, error) { l.lists++; return l.memTable.List() }

// TestResyncOfIdleClusterDerivesNothing: the periodic pass over an unchanged cluster derives no
// peer's entries from its Node again and changes no index (it resolves the next hops again and
// compares with one listing of each map); a Node that changed is derived again.
func TestResyncOfIdleClusterDerivesNothing(t *testing.T) {
	ctx := context.Background()
	r, indexer := newScaleReconciler(t, 200, scaleModel(t, 100, 20))
	routes := &listCounter[netip.Prefix, Route]{memTable: newMemTable[netip.Prefix, Route]()}
	nodes := &listCounter[netip.Addr, Node]{memTable: newMemTable[netip.Addr, Node]()}
	r.cfg.Routes, r.cfg.Nodes = routes, nodes
	r.syncAll(ctx)
	drainNodeQueue(ctx, r)
	r.work.derived.Store(0)
	r.work.indexed.Store(0)
	routes.lists, nodes.lists = 0, 0

	r.resync(ctx)
	drainNodeQueue(ctx, r)
	if d, i := r.work.derived.Load(), r.work.indexed.Load(); d != 0 || i != 0 {
		t.Errorf("idle periodic pass: %d peers derived again, %d index updates, want none", d, i)
	}
	if routes.lists != 1 || nodes.lists != 1 {
		t.Errorf("idle periodic pass: routes_map listed %d times, nodes_map %d, want once each", routes.lists, nodes.lists)
	}

	changed := bulkPeerNode(5, 100)
	changed.Annotations["edgeplane.io/unrelated"] = "x"
	if err := indexer.Update(k8stest.Node(changed)); err != nil {
		t.Fatal(err)
	}
	r.resync(ctx)
	drainNodeQueue(ctx, r)
	if d, i := r.work.derived.Load(), r.work.indexed.Load(); d != 1 || i != 0 {
		t.Errorf("periodic pass after one Node changed: %d peers derived, %d index updates, want 1 and 0", d, i)
	}
}

// TestStartupPassQueuesOnlyLaterEvents: the informer's initial adds, which reach the handlers
// before the start-up pass (the agent starts the informers first), are not reconciled a second
// time after it; a node named again after the pass reconciled it is, and from then on events
// queue directly.
func TestStartupPassQueuesOnlyLaterEvents(t *testing.T) {
	ctx := context.Background()
	r, indexer := newScaleReconciler(t, 50, scaleModel(t, 100, 20))
	for _, obj := range indexer.List() {
		r.enqueue(obj) // the informer's initial adds
	}
	if n := r.queue.Len(); n != 0 {
		t.Fatalf("%d keys queued before the start-up pass", n)
	}
	var late string
	r.cfg.NodeIndex = nodeIndexFunc(func([]NodeName) error { // runs in the pass, after every node
		if late == "" {
			late = bulkPeerNode(5, 100).Name
			r.enqueue(k8stest.Node(bulkPeerNode(5, 100))) // an event after its reconcile in the pass
		}
		return nil
	})
	r.syncAll(ctx)
	var queued []string
	for r.queue.Len() > 0 {
		key, _ := r.queue.Get()
		queued = append(queued, key)
		r.queue.Done(key)
	}
	if len(queued) != 1 || queued[0] != late {
		t.Errorf("queued after the pass: %q, want [%q]", queued, late)
	}
	r.enqueue(k8stest.Node(bulkPeerNode(6, 100)))
	if n := r.queue.Len(); n != 1 {
		t.Errorf("%d keys queued by an event after the pass, want 1", n)
	}
}

type nodeIndexFunc func([]NodeName) error

func (f nodeIndexFunc) Sync(n []NodeName) error { return f(n) }

// names keeps a set of node names as values: a changed set never changes one taken before.
func TestNamesSet(t *testing.T) {
	collect := func(n names) []string { return slices.Collect(n.all) }
	var n names
	if !n.empty() {
		t.Fatal("zero names not empty")
	}
	a := n.with("a")
	abc := a.with("b").with("c")
	abd := a.with("b").with("d")
	if got := collect(abc); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("a+b+c = %v", got)
	}
	if got := collect(abd); !slices.Equal(got, []string{"a", "b", "d"}) {
		t.Errorf("a+b+d = %v, and changed a+b+c? %v", got, collect(abc))
	}
	bc := abc.without("a")
	ac := abc.without("b")
	if got := collect(bc); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("a+b+c-a = %v", got)
	}
	if got := collect(ac); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("a+b+c-b = %v", got)
	}
	if got := collect(abc); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("removing from a+b+c changed it: %v", got)
	}
	if o, ok := ac.otherThan("a"); !ok || o != "c" {
		t.Errorf("a+c other than a = %q, %v", o, ok)
	}
	if o, ok := a.otherThan("a"); ok {
		t.Errorf("a other than a = %q", o)
	}
	if e := a.without("a"); !e.empty() || e != (names{}) {
		t.Errorf("a-a = %+v, want the zero value", e)
	}
	if got := ac.without("c"); got != (names{first: "a"}) {
		t.Errorf("a+c-c = %+v, want a alone, without a slice", got)
	}
}
