package controller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/internal/heaptest"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// What Node events cost the ServiceReconciler in a large cluster (issue 18, 5,000 nodes and
// 10,000 Services): a Node of the informers' initial list costs nothing (the start-up pass reads
// the synced caches once), and a Node that comes later requeues the Services with endpoints on
// it and places that one Node in the node view, whatever the cluster's size.

// scalePools: the nodes are dealt round robin into this many pools; with the default domain
// model each pool is its own domain and every pair is public, so this node ("self", pool-00)
// reaches only the nodes of its own pool.
const scalePools = 10

// scaleFixture is a ServiceReconciler on the informers of a fake clientset that holds nodes
// Nodes and services Services of endpoints endpoints each, running from before the informers
// start (the agent's cold start).
type scaleFixture struct {
	client    *fake.Clientset
	r         *ServiceReconciler
	frontends *memTable[service.FrontendKey, ServiceEntry]
	late      int // Services 0..late-1 have one more endpoint, on node late-<i>, not created yet
	stop      func()
}

func scaleNodeName(i int) string { return fmt.Sprintf("node-%04d", i) }

// scaleNodeCIDR is node i's pod CIDR; late nodes are in 10.200.0.0/16.
func scaleNodeCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + i/256), byte(i % 256), 0}), 24)
}

func scaleNode(name, pool string, cidr netip.Prefix) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{domain.DefaultPoolLabel: pool}},
		Spec:       corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}},
	}
}

func scalePool(i int) string { return fmt.Sprintf("pool-%02d", i%scalePools) }

// scaleService i has a ClusterIP and one EndpointSlice with endpoints on nodes i*endpoints,
// i*endpoints+1, ... (mod nodes); every tenth, from the sixth, has the pool topology.
func scaleService(i, nodes, endpoints, late int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("svc-%04d", i)
	ip := fmt.Sprintf("10.96.%d.%d", i/256, i%256)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+i), 0))},
		Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
	if i%10 == 5 {
		svc.Annotations = map[string]string{service.TopologyAnnotation: service.TopologyNodePool}
	}
	slice := webSlice()
	slice.Name, slice.Labels[discoveryv1.LabelServiceName] = name+"-1", name
	for j := range endpoints {
		n := (i*endpoints + j) % nodes
		ip := scaleNodeCIDR(n).Addr().As4()
		ip[3] = byte(2 + i%250)
		slice.Endpoints = append(slice.Endpoints, endpointOn(netip.AddrFrom4(ip).String(), scaleNodeName(n), true))
	}
	if i < late {
		slice.Endpoints = append(slice.Endpoints, endpointOn(fmt.Sprintf("10.200.%d.5", i), fmt.Sprintf("late-%d", i), true))
	}
	return svc, slice
}

func newScaleFixture(tb testing.TB, nodes, services, endpoints, late int) *scaleFixture {
	tb.Helper()
	objs := []runtime.Object{scaleNode("self", scalePool(0), netip.MustParsePrefix("10.127.0.0/24"))}
	for i := range nodes {
		objs = append(objs, scaleNode(scaleNodeName(i), scalePool(i), scaleNodeCIDR(i)))
	}
	for i := range services {
		svc, slice := scaleService(i, nodes, endpoints, late)
		objs = append(objs, svc, slice)
	}
	f := &scaleFixture{client: fake.NewClientset(objs...), frontends: newMemTable[service.FrontendKey, ServiceEntry](), late: late}
	factory := informers.NewSharedInformerFactoryWithOptions(f.client, 0, informers.WithTransform(k8stest.Transform))
	r, err := NewServiceReconciler(ServiceReconcilerConfig{
		NodeName:  "self",
		Services:  factory.Core().V1().Services().Informer(),
		Slices:    factory.Discovery().V1().EndpointSlices().Informer(),
		Nodes:     factory.Core().V1().Nodes().Informer(),
		Frontends: f.frontends,
		Backends:  newMemTable[BackendSlot, service.Backend](),
		Recorder:  record.NewFakeRecorder(100),
	})
	if err != nil {
		tb.Fatal(err)
	}
	f.r = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	factory.Start(ctx.Done())
	f.stop = func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
		factory.Shutdown()
	}
	select {
	case <-r.Ready():
	case <-time.After(2 * time.Minute):
		f.stop()
		tb.Fatal("the start-up pass did not end in 2 minutes")
	}
	return f
}

// addLate creates the late nodes, in pool-01: this node cannot reach them.
func (f *scaleFixture) addLate(tb testing.TB) {
	tb.Helper()
	for i := range f.late {
		n := scaleNode(fmt.Sprintf("late-%d", i), scalePool(1), netip.MustParsePrefix(fmt.Sprintf("10.200.%d.0/24", i)))
		if _, err := f.client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			tb.Fatal(err)
		}
	}
}

// waitLeftOut waits until the ClusterIP frontend of each Service with an endpoint on a late node
// leaves that endpoint out, want unreachable in all.
func (f *scaleFixture) waitLeftOut(tb testing.TB, want func(i int) uint16) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		fe, _ := f.frontends.List()
		left := 0
		for i := range f.late {
			k := service.FrontendKey{VIP: netip.MustParseAddr(fmt.Sprintf("10.96.%d.%d", i/256, i%256)), Port: 80,
				Proto: service.ProtoTCP, Scope: service.ScopeInternal}
			if e, ok := fe[k]; !ok || e.Unreachable != want(i) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d Services still use an endpoint on a late node this node cannot reach", left, f.late)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// unreachableOf is how many endpoints of scaleService i this node leaves out before the late
// nodes come: those on nodes outside pool-00.
func unreachableOf(i, nodes, endpoints int) uint16 {
	var n uint16
	for j := range endpoints {
		if (i*endpoints+j)%nodes%scalePools != 0 {
			n++
		}
	}
	return n
}

// TestServicesNodeEventsCostWhatChanged: at a cold start with 300 Nodes and 300 Services, the
// Nodes of the initial list cost no Node event work and the node view is built once; 5 Nodes
// created afterwards, in a domain this node cannot reach, requeue only the 5 Services with an
// endpoint on them and are placed in the node view one by one, and those endpoints are left out.
func TestServicesNodeEventsCostWhatChanged(t *testing.T) {
	const nodes, services, endpoints, late = 300, 300, 5, 5
	f := newScaleFixture(t, nodes, services, endpoints, late)
	defer f.stop()
	// Before the late nodes: their endpoints are used (a node not known is not unreachable).
	f.waitLeftOut(t, func(i int) uint16 { return unreachableOf(i, nodes, endpoints) })
	f.addLate(t)
	f.waitLeftOut(t, func(i int) uint16 { return unreachableOf(i, nodes, endpoints) + 1 })
	// The node event handler runs the events in order: the late nodes' effect means every node
	// of the initial list went through it too.
	if got := f.r.work.services.Load(); got > late {
		t.Errorf("Node events looked at %d Services, want at most %d (those with endpoints on the %d late nodes)", got, late, late)
	}
	if got := f.r.work.viewBuilds.Load(); got != 1 {
		t.Errorf("the node view was built whole %d times, want once (the start-up pass)", got)
	}
	if got, want := f.r.work.viewNodes.Load(), int64(nodes+1+late); got > want {
		t.Errorf("%d Nodes read into the node view, want at most %d (the %d of the initial list once, then each late one)", got, want, nodes+1)
	}
}

// BenchmarkServicesColdStartNodes is the ServiceReconciler's cold start (informers' initial
// lists, start-up pass) in clusters of n Nodes and 2n Services of 15 endpoints, until a Node
// created afterwards has left its endpoint out (so that every Node event of the start was
// handled): its cost per op grows with n, not n x Services.
func BenchmarkServicesColdStartNodes(b *testing.B) {
	for _, nodes := range []int{500, 1000, 2000} {
		services := 2 * nodes
		b.Run(fmt.Sprintf("nodes=%d,services=%d", nodes, services), func(b *testing.B) {
			b.ReportAllocs()
			var looked, read int64
			for b.Loop() {
				f := newScaleFixture(b, nodes, services, 15, 1)
				f.addLate(b)
				f.waitLeftOut(b, func(i int) uint16 { return unreachableOf(i, nodes, 15) + 1 })
				b.StopTimer()
				f.stop()
				looked += f.r.work.services.Load()
				read += f.r.work.viewNodes.Load()
				b.StartTimer()
			}
			b.ReportMetric(float64(looked)/float64(b.N), "svcs-looked-at/op")
			b.ReportMetric(float64(read)/float64(b.N), "view-nodes/op")
		})
	}
}

// TestServicesNodeIndexFollowsSlices: the Services with endpoints on a node follow the slices'
// adds, updates (endpoints moving, the service-name label changing), a Service with two slices
// on one node, and deletes (also as tombstones); ids of Services gone are reused.
func TestServicesNodeIndexFollowsSlices(t *testing.T) {
	f := newSvcFixture(t)
	on := func(node string) []string { return f.r.nodesOf.servicesOn(node) }
	a := threeEndpoints() // ns/web on self, n2, n3
	f.r.sliceChanged(nil, k8stest.Cached(a))
	for _, n := range []string{"self", "n2", "n3"} {
		if got := on(n); !slices.Equal(got, []string{serviceKey}) {
			t.Errorf("on %s: %v", n, got)
		}
	}
	// The endpoint on n3 moves to n4; a second slice of ns/web has one on n2 too.
	b := webSlice(endpointOn("10.244.0.5", "self", true), endpointOn("10.244.1.5", "n2", true), endpointOn("10.244.4.5", "n4", true))
	f.r.sliceChanged(k8stest.Cached(a), k8stest.Cached(b))
	second := webSlice(endpointOn("10.244.1.6", "n2", true))
	second.Name = "web-2"
	f.r.sliceChanged(nil, k8stest.Cached(second))
	if got := on("n3"); len(got) != 0 {
		t.Errorf("on n3 after the move: %v", got)
	}
	if got := on("n2"); !slices.Equal(got, []string{serviceKey}) {
		t.Errorf("on n2 with two slices: %v", got)
	}
	// The first slice goes (a tombstone of the cached form): n2 keeps ns/web by the second.
	compact := k8stest.Cached(b)
	f.r.sliceChanged(k8stest.Cached(cache.DeletedFinalStateUnknown{Key: "ns/web-1", Obj: compact}), nil)
	if got := on("n2"); !slices.Equal(got, []string{serviceKey}) {
		t.Errorf("on n2 after one slice went: %v", got)
	}
	if got := on("n4"); len(got) != 0 {
		t.Errorf("on n4 after its slice went: %v", got)
	}
	// The second slice's label names another Service, then it goes: nothing is left.
	moved := second.DeepCopy()
	moved.Labels[discoveryv1.LabelServiceName] = "other"
	f.r.sliceChanged(k8stest.Cached(second), k8stest.Cached(moved))
	if got := on("n2"); !slices.Equal(got, []string{"ns/other"}) {
		t.Errorf("on n2 after the label moved: %v", got)
	}
	f.r.sliceChanged(k8stest.Cached(moved), nil)
	x := &f.r.nodesOf
	if len(x.byNode) != 0 || len(x.ids) != 0 || len(x.free) != len(x.keys) {
		t.Errorf("after every slice went: byNode %v ids %v free %v keys %v", x.byNode, x.ids, x.free, x.keys)
	}
	f.r.sliceChanged(nil, k8stest.Cached(a))
	if len(x.keys) != 1 || x.ids[serviceKey] != 0 {
		t.Errorf("id not reused: keys %v ids %v", x.keys, x.ids)
	}
}

// TestServicesNodeViewFollowsNodes: the node view, placed node by node from the Node events,
// equals the view built whole from the cache after each of adds, moves between pools and
// domains, pod CIDR changes and deletes, and a move of this node.
func TestServicesNodeViewFollowsNodes(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	for _, n := range reachNodes() {
		f.seed(n)
	}
	model := &staticModel{}
	model.m.Store(parseModel(t, "connectivity:\n- domains: [pool-a, pool-c]\n  mode: private\n"))
	f.r.cfg.Domains = model
	whole := func() *service.Cluster {
		nodes, _ := f.r.nodes.List(labels.Everything())
		m := model.m.Load()
		c := service.NewCluster("self", k8s.LabelsOfNodes(nodes), m.PoolLabel())
		local := f.r.localDomain(m)
		for _, n := range nodes {
			if cidr, ok, _ := k8s.NodePodCIDR(n); ok && n.Name != "self" && !m.Reachable(local, m.DomainOf(n.Labels)) {
				c.SetUnreachable(n.Name, cidr)
			}
		}
		return c
	}
	f.r.clusterLocked()
	builds := f.r.work.viewBuilds.Load()
	node := func(name, pool, cidr string) *k8s.Node {
		n := scaleNode(name, pool, netip.MustParsePrefix(cidr))
		if pool == "" {
			n.Labels = nil
		}
		return k8stest.Node(n)
	}
	get := func(name string) *k8s.Node {
		n, err := f.r.nodes.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		return n.DeepCopy()
	}
	steps := []struct {
		name string
		do   func()
	}{
		{"n4 added in pool-c (reachable)", func() { n := node("n4", "pool-c", "10.244.4.0/24"); f.seed(n); f.r.nodeAdded(n, false) }},
		{"n5 added in pool-d (unreachable)", func() { n := node("n5", "pool-d", "10.244.5.0/24"); f.seed(n); f.r.nodeAdded(n, false) }},
		{"n6 added in no pool", func() { n := node("n6", "", "10.244.6.0/24"); f.seed(n); f.r.nodeAdded(n, false) }},
		{"n4 moves to pool-d", func() {
			old, n := get("n4"), get("n4")
			setLabel(n, domain.DefaultPoolLabel, "pool-d")
			f.seed(n)
			f.r.nodeUpdated(old, n)
		}},
		{"n5's pod CIDR changes", func() {
			old, n := get("n5"), get("n5")
			n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.50.0/24", nil
			f.seed(n)
			f.r.nodeUpdated(old, n)
		}},
		{"n3 deleted (a tombstone)", func() {
			n := get("n3")
			f.factory.Core().V1().Nodes().Informer().GetIndexer().Delete(n)
			f.r.nodeChanged(cache.DeletedFinalStateUnknown{Key: "n3", Obj: n})
		}},
		{"n5 deleted", func() {
			n := get("n5")
			f.factory.Core().V1().Nodes().Informer().GetIndexer().Delete(n)
			f.r.nodeChanged(n)
		}},
	}
	for _, s := range steps {
		s.do()
		if got, want := f.r.clusterLocked(), whole(); !got.Equal(want) {
			t.Errorf("%s: view %+v, built whole %+v", s.name, got, want)
		}
	}
	if got := f.r.work.viewBuilds.Load(); got != builds {
		t.Errorf("other nodes' events built the view whole %d times", got-builds)
	}
	// This node moves to pool-d: the view is built whole (every other node's reachability).
	old, self := get("self"), get("self")
	setLabel(self, domain.DefaultPoolLabel, "pool-d")
	f.seed(self)
	f.r.nodeUpdated(old, self)
	if got, want := f.r.clusterLocked(), whole(); !got.Equal(want) || f.r.work.viewBuilds.Load() != builds+1 {
		t.Errorf("after this node moved: view %+v, built whole %+v (%d builds)", got, want, f.r.work.viewBuilds.Load()-builds)
	}
}

// BenchmarkServicesResyncIdle is the ServiceReconciler's periodic pass once 10,000 Services of
// 15 endpoints are programmed, with nothing changed, until what it queued is reconciled.
func BenchmarkServicesResyncIdle(b *testing.B) {
	f := newScaleFixture(b, 1000, 10000, 15, 0)
	defer f.stop()
	ctx := context.Background()
	b.ReportAllocs()
	before := f.r.resynced.Load()
	for b.Loop() {
		f.r.resync(ctx)
		for f.r.queue.Len() > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	b.ReportMetric(float64(f.r.resynced.Load()-before)/float64(b.N), "svcs-queued/op")
}

// setLabel sets a label of a cached Node.
func setLabel(n *k8s.Node, key, value string) {
	m := n.Labels.Map()
	if m == nil {
		m = map[string]string{}
	}
	m[key] = value
	n.Labels = k8s.NodeLabelsOf(n.Name, m)
}

// BenchmarkServicesProgrammedHeap reports the heap held per Service once 10,000 Services of 15
// endpoints are programmed by a ServiceReconciler on the informers of a fake clientset and
// in-memory tables: the clientset's objects, the caches, the tables and the reconciler's own
// memory together. Only differences between two trees, measured in the same run, mean anything.
func BenchmarkServicesProgrammedHeap(b *testing.B) {
	const services = 10000
	var perService float64
	for b.Loop() {
		before := heaptest.InUse()
		f := newScaleFixture(b, 1000, services, 15, 0)
		perService = float64(heaptest.InUse()-before) / services
		f.stop()
	}
	b.ReportMetric(perService, "heap-bytes/service")
}
