package controller

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

var (
	local = LocalNode{
		Name:        "self",
		NodeIP:      netip.MustParseAddr("192.168.0.1"),
		PodCIDR:     netip.MustParsePrefix("10.244.0.0/24"),
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
	}
	macB   = mustMAC("0a:00:00:00:00:0b")
	macC   = mustMAC("0a:00:00:00:00:0c")
	gwMAC  = mustMAC("0e:00:00:00:00:01")
	nodeIP = netip.MustParseAddr
	prefix = netip.MustParsePrefix
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// peerNode is a node as Flannel or edgeplane annotates it.
func peerNode(name, podCIDR, ip string, mac net.HardwareAddr) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: k8s.VTEPAnnotations(k8s.VTEP{MAC: mac, IP: netip.MustParseAddr(ip)})},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR},
	}
}

type nodeFixture struct {
	r        *NodeReconciler
	routes   *memTable[netip.Prefix, Route]
	nodes    *memTable[netip.Addr, Node]
	recorder *record.FakeRecorder
	factory  informers.SharedInformerFactory
	client   *fake.Clientset
}

func newNodeFixture(t *testing.T, objs ...*corev1.Node) *nodeFixture {
	t.Helper()
	f := &nodeFixture{
		routes:   newMemTable[netip.Prefix, Route](),
		nodes:    newMemTable[netip.Addr, Node](),
		recorder: record.NewFakeRecorder(100),
		client:   fake.NewClientset(),
	}
	f.factory = informers.NewSharedInformerFactoryWithOptions(f.client, 0, informers.WithTransform(k8stest.Transform))
	informer := f.factory.Core().V1().Nodes().Informer()
	r, err := NewNodeReconciler(NodeReconcilerConfig{
		Local: local, Informer: informer, Routes: f.routes, Nodes: f.nodes,
		NextHop: staticNextHop{nodeIP("192.168.0.2"): gwMAC}, Recorder: f.recorder,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	for _, n := range objs {
		f.seed(n)
	}
	return f
}

// seed puts a node in the lister, as the informer would.
func (f *nodeFixture) seed(n *corev1.Node) {
	f.factory.Core().V1().Nodes().Informer().GetIndexer().Add(k8stest.Node(n))
}

func (f *nodeFixture) remove(n *corev1.Node) {
	f.factory.Core().V1().Nodes().Informer().GetIndexer().Delete(k8stest.Node(n))
}

func (f *nodeFixture) reconcile(t *testing.T, name string) {
	t.Helper()
	if err := f.r.reconcile(context.Background(), name); err != nil {
		t.Fatalf("reconcile %s: %v", name, err)
	}
}

func (f *nodeFixture) expect(t *testing.T, routes map[netip.Prefix]Route, nodes map[netip.Addr]Node) {
	t.Helper()
	gotRoutes, _ := f.routes.List()
	gotNodes, _ := f.nodes.List()
	if !reflect.DeepEqual(gotRoutes, routes) {
		t.Errorf("routes = %v\nwant %v", gotRoutes, routes)
	}
	if !reflect.DeepEqual(gotNodes, nodes) {
		t.Errorf("nodes = %v\nwant %v", gotNodes, nodes)
	}
}

var (
	localRoute = Route{NodeIP: local.NodeIP, Local: true}
	routeB     = Route{NodeIP: nodeIP("192.168.0.2")}
	routeC     = Route{NodeIP: nodeIP("192.168.1.3")}
	entryB     = Node{VTEPMAC: macB, NextHopMAC: gwMAC}
	entryC     = Node{VTEPMAC: macC} // next hop unresolved
)

func TestNodeReconcilerAddUpdateDelete(t *testing.T) {
	b := peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)
	c := peerNode("c", "10.244.2.0/24", "192.168.1.3", macC)
	f := newNodeFixture(t, peerNode("self", "10.244.0.0/24", "192.168.0.1", macC), b, c)
	for _, n := range []string{"self", "b", "c"} {
		f.reconcile(t, n)
	}
	f.expect(t,
		map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute, prefix("10.244.1.0/24"): routeB, prefix("10.244.2.0/24"): routeC},
		map[netip.Addr]Node{nodeIP("192.168.0.2"): entryB, nodeIP("192.168.1.3"): entryC})

	// c moves behind NAT: public-ip-overwrite wins. Its own address stays known as c (an alias:
	// a peer that has not applied a change yet may still send from it).
	c = c.DeepCopy()
	c.Annotations[k8s.PublicIPOverwriteAnnotation] = "203.0.113.3"
	f.seed(c)
	f.reconcile(t, "c")
	movedC := Route{NodeIP: nodeIP("203.0.113.3")}
	f.expect(t,
		map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute, prefix("10.244.1.0/24"): routeB, prefix("10.244.2.0/24"): movedC},
		map[netip.Addr]Node{nodeIP("192.168.0.2"): entryB, nodeIP("203.0.113.3"): entryC, nodeIP("192.168.1.3"): entryC})

	f.remove(b)
	f.reconcile(t, "b")
	f.expect(t,
		map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute, prefix("10.244.2.0/24"): movedC},
		map[netip.Addr]Node{nodeIP("203.0.113.3"): entryC, nodeIP("192.168.1.3"): entryC})

	// c leaves: both of its keys go.
	f.remove(c)
	f.reconcile(t, "c")
	f.expect(t, map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute}, map[netip.Addr]Node{})
}

// An alias never replaces another node's entry: d's endpoint is c's other address.
func TestNodeReconcilerAliasYieldsToEndpoint(t *testing.T) {
	c := peerNode("c", "10.244.2.0/24", "192.168.1.3", macC)
	c.Annotations[k8s.PublicIPOverwriteAnnotation] = "203.0.113.3"
	d := peerNode("d", "10.244.3.0/24", "192.168.1.3", macB) // a misconfiguration, or an address reused
	f := newNodeFixture(t, peerNode("self", "10.244.0.0/24", "192.168.0.1", macC), c, d)
	for _, n := range []string{"self", "d", "c"} {
		f.reconcile(t, n)
	}
	nodes, _ := f.nodes.List()
	if got := nodes[nodeIP("192.168.1.3")]; got.VTEPMAC.String() != macB.String() {
		t.Errorf("192.168.1.3 = %v, want d's entry (its endpoint), not c's alias", got)
	}
}

// A node that withdraws its VTEP (its agent was uninstalled) loses its entries on every peer.
func TestNodeReconcilerWithdrawnVTEP(t *testing.T) {
	b := peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)
	f := newNodeFixture(t, peerNode("self", "10.244.0.0/24", "192.168.0.1", macC), b)
	f.reconcile(t, "self")
	f.reconcile(t, "b")
	f.expect(t,
		map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute, prefix("10.244.1.0/24"): routeB},
		map[netip.Addr]Node{nodeIP("192.168.0.2"): entryB})

	withdrawn := b.DeepCopy()
	withdrawn.Annotations = nil
	f.seed(withdrawn)
	f.reconcile(t, "b")
	f.expect(t, map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute}, map[netip.Addr]Node{})
}

func TestNodeReconcilerSkipsNodesNotReady(t *testing.T) {
	noVTEP := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"}}
	noCIDR := peerNode("c", "", "192.168.1.3", macC)
	f := newNodeFixture(t, noVTEP, noCIDR)
	f.reconcile(t, "b")
	f.reconcile(t, "c")
	f.expect(t, map[netip.Prefix]Route{}, map[netip.Addr]Node{})
	if len(f.recorder.Events) != 0 {
		t.Errorf("events recorded for nodes that are merely not ready: %d", len(f.recorder.Events))
	}
}

func TestNodeReconcilerInvalidKeepsLastGoodState(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Node)
		reason string
	}{
		{"unparseable backend-data", func(n *corev1.Node) { n.Annotations[k8s.BackendDataAnnotation] = "{not json" }, "backend-data"},
		{"bad VtepMAC", func(n *corev1.Node) { n.Annotations[k8s.BackendDataAnnotation] = `{"VNI":1,"VtepMAC":"zz"}` }, "VtepMAC"},
		{"wrong VNI", func(n *corev1.Node) {
			n.Annotations[k8s.BackendDataAnnotation] = `{"VNI":7,"VtepMAC":"0a:00:00:00:00:0b"}`
		}, "VNI"},
		{"host-gw backend", func(n *corev1.Node) { n.Annotations[k8s.BackendTypeAnnotation] = "host-gw" }, "vxlan"},
		{"bad public-ip", func(n *corev1.Node) { n.Annotations[k8s.PublicIPAnnotation] = "nope" }, "public-ip"},
		{"bad podCIDR", func(n *corev1.Node) { n.Spec.PodCIDR = "10.244.1.0" }, "podCIDR"},
		{"podCIDR outside cluster", func(n *corev1.Node) { n.Spec.PodCIDR = "10.99.0.0/24" }, "outside the cluster CIDR"},
		{"podCIDR overlaps local", func(n *corev1.Node) { n.Spec.PodCIDR = "10.244.0.0/23" }, "overlaps node self"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)
			f := newNodeFixture(t, b)
			f.reconcile(t, "self")
			f.reconcile(t, "b")
			bad := b.DeepCopy()
			tc.mutate(bad)
			f.seed(bad)
			f.reconcile(t, "b")
			f.reconcile(t, "b") // the same error is reported once
			f.expect(t,
				map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute, prefix("10.244.1.0/24"): routeB},
				map[netip.Addr]Node{nodeIP("192.168.0.2"): entryB})
			if len(f.recorder.Events) != 1 {
				t.Fatalf("recorded %d events; want 1", len(f.recorder.Events))
			}
			ev := <-f.recorder.Events
			if !strings.Contains(ev, "Warning "+ReasonInvalidNetworkConfig) || !strings.Contains(ev, tc.reason) {
				t.Errorf("event %q; want a Warning %s mentioning %q", ev, ReasonInvalidNetworkConfig, tc.reason)
			}
			// Fixed again: back to normal, and a later error is reported anew.
			f.seed(b)
			f.reconcile(t, "b")
			f.expect(t,
				map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute, prefix("10.244.1.0/24"): routeB},
				map[netip.Addr]Node{nodeIP("192.168.0.2"): entryB})
		})
	}
}

// After a restart the maps hold what the previous agent pinned; the start-up pass keeps what belongs
// to current nodes, adopts entries of nodes that are invalid now, and deletes the rest.
func TestNodeReconcilerStartupAdoptsAndCollectsStale(t *testing.T) {
	b := peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)
	invalid := peerNode("c", "10.244.2.0/24", "192.168.1.3", macC)
	invalid.Annotations[k8s.BackendDataAnnotation] = "garbage"
	f := newNodeFixture(t, b, invalid)
	pinned := map[netip.Prefix]Route{
		prefix("10.244.0.0/24"): localRoute,
		prefix("10.244.1.0/24"): {NodeIP: nodeIP("192.168.0.99")}, // b moved
		prefix("10.244.2.0/24"): routeC,                           // c, invalid now: adopted
		prefix("10.244.9.0/24"): {NodeIP: nodeIP("192.168.0.9")},  // deleted while the agent was down
	}
	for k, v := range pinned {
		f.routes.Upsert(k, v)
	}
	f.nodes.Upsert(nodeIP("192.168.0.99"), Node{VTEPMAC: macB})
	f.nodes.Upsert(nodeIP("192.168.1.3"), entryC)
	f.nodes.Upsert(nodeIP("192.168.0.9"), Node{VTEPMAC: macC})

	f.r.syncAll(context.Background())
	f.expect(t,
		map[netip.Prefix]Route{prefix("10.244.0.0/24"): localRoute, prefix("10.244.1.0/24"): routeB, prefix("10.244.2.0/24"): routeC},
		map[netip.Addr]Node{nodeIP("192.168.0.2"): entryB, nodeIP("192.168.1.3"): entryC})
}

func TestNodeReconcilerSharedTunnelEndpoint(t *testing.T) {
	// Two edge nodes behind one NAT address: the node entry stays while either exists.
	b := peerNode("b", "10.244.1.0/24", "203.0.113.1", macB)
	c := peerNode("c", "10.244.2.0/24", "203.0.113.1", macB)
	f := newNodeFixture(t, b, c)
	f.reconcile(t, "b")
	f.reconcile(t, "c")
	f.remove(b)
	f.reconcile(t, "b")
	f.expect(t,
		map[netip.Prefix]Route{prefix("10.244.2.0/24"): {NodeIP: nodeIP("203.0.113.1")}},
		map[netip.Addr]Node{nodeIP("203.0.113.1"): {VTEPMAC: macB}})
}

func TestNodeReconcilerRetriesFailedWrites(t *testing.T) {
	f := newNodeFixture(t, peerNode("b", "10.244.1.0/24", "192.168.0.2", macB))
	f.routes.failing = errors.New("map full")
	if err := f.r.reconcile(context.Background(), "b"); err == nil {
		t.Fatal("reconcile succeeded with a failing map")
	}
	f.routes.failing = nil
	f.reconcile(t, "b")
	f.expect(t, map[netip.Prefix]Route{prefix("10.244.1.0/24"): routeB}, map[netip.Addr]Node{nodeIP("192.168.0.2"): entryB})
}

// The whole loop: informers over the fake clientset, event handlers, the queue and the workers.
func TestNodeReconcilerRun(t *testing.T) {
	f := newNodeFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.factory.Start(ctx.Done())
	done := make(chan error)
	go func() { done <- f.r.Run(ctx) }()
	select {
	case <-f.r.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	nodes := f.client.CoreV1().Nodes()
	b := peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)
	if _, err := nodes.Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { r, _ := f.routes.List(); return len(r) == 2 })
	if err := nodes.Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { r, _ := f.routes.List(); n, _ := f.nodes.List(); return len(r) == 1 && len(n) == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10s")
}

func TestNetworkChanged(t *testing.T) {
	b := peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)
	heartbeat := b.DeepCopy()
	heartbeat.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	moved := b.DeepCopy()
	moved.Annotations[k8s.PublicIPOverwriteAnnotation] = "203.0.113.9"
	if networkChanged(k8stest.Node(b), k8stest.Node(heartbeat)) || !networkChanged(k8stest.Node(b), k8stest.Node(moved)) {
		t.Fatal("networkChanged: want status-only updates filtered and annotation changes kept")
	}
}

// A neighbour the kernel resolves queues the peers whose next hop it may fill: every unresolved
// one, and the peer at that address when its MAC changed; not the others.
func TestNodeReconcilerNeighbourResolvedQueuesPeers(t *testing.T) {
	b := peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)
	c := peerNode("c", "10.244.2.0/24", "192.168.1.3", macC)
	f := newNodeFixture(t, peerNode("self", "10.244.0.0/24", "192.168.0.1", macC), b, c)
	for _, n := range []string{"self", "b", "c"} {
		f.reconcile(t, n)
	}
	f.queuedPeers()
	f.r.neighbourResolved(nodeIP("192.168.0.2"), gwMAC) // b's own next hop, unchanged
	if q := f.queuedPeers(); !slices.Equal(q, []string{"c"}) {
		t.Errorf("after b's neighbour was resolved unchanged: queued %v, want [c] (unresolved)", q)
	}
	f.r.neighbourResolved(nodeIP("192.168.0.2"), macC) // b's next hop moved
	if q := f.queuedPeers(); !slices.Equal(q, []string{"b", "c"}) {
		t.Errorf("after b's neighbour changed: queued %v, want [b c]", q)
	}
}

// cachedHops is staticNextHop that also keeps each endpoint's hop, as netdev.CachedNextHops does:
// an endpoint it has no entry for is not known; a zero hop is "no route through the underlay".
type cachedHops struct {
	staticNextHop
	hops map[netip.Addr]netip.Addr
}

func (c cachedHops) CachedHop(ip netip.Addr) (netip.Addr, bool) {
	hop, known := c.hops[ip]
	return hop, known
}

// With a resolver that keeps the hops, a resolved neighbour queues only the unresolved peers
// whose hop it is, or whose hop is not known: not those behind another gateway, and not those the
// underlay has no route to (thousands, in a cluster of many sites, at every neighbour refresh).
func TestNodeReconcilerNeighbourResolvedQueuesOnlyItsPeers(t *testing.T) {
	gw := nodeIP("192.168.1.1")
	f := newNodeFixture(t, peerNode("self", "10.244.0.0/24", "192.168.0.1", macC),
		peerNode("b", "10.244.1.0/24", "192.168.0.2", macB),  // resolved
		peerNode("c", "10.244.2.0/24", "192.168.1.3", macC),  // behind gw
		peerNode("d", "10.244.3.0/24", "198.51.100.4", macC), // no route
		peerNode("e", "10.244.4.0/24", "192.168.2.5", macB),  // hop not known
		peerNode("g", "10.244.5.0/24", gw.String(), macB))    // the gateway itself
	f.r.cfg.NextHop = cachedHops{staticNextHop: staticNextHop{nodeIP("192.168.0.2"): gwMAC},
		hops: map[netip.Addr]netip.Addr{nodeIP("192.168.0.2"): nodeIP("192.168.0.2"), nodeIP("192.168.1.3"): gw,
			nodeIP("198.51.100.4"): {}, gw: gw}}
	for _, n := range []string{"self", "b", "c", "d", "e", "g"} {
		f.reconcile(t, n)
	}
	f.queuedPeers()
	f.r.neighbourResolved(nodeIP("192.168.0.2"), gwMAC) // b's own next hop, unchanged
	if q := f.queuedPeers(); !slices.Equal(q, []string{"e"}) {
		t.Errorf("after b's neighbour was resolved unchanged: queued %v, want [e] (its hop is not known)", q)
	}
	f.r.neighbourResolved(gw, macB) // the gateway: c's hop, and g's own
	if q := f.queuedPeers(); !slices.Equal(q, []string{"c", "e", "g"}) {
		t.Errorf("after the gateway was resolved: queued %v, want [c e g]", q)
	}
	f.r.neighbourResolved(nodeIP("198.51.100.4"), macC) // no route: nothing the underlay resolves
	if q := f.queuedPeers(); !slices.Equal(q, []string{"d", "e"}) {
		t.Errorf("after d's own address was resolved: queued %v, want [d e] (d's MAC changed from none)", q)
	}

	// c's next hop is resolved to the gateway's MAC; the gateway comes back with another MAC:
	// c is queued (its next hop moved), b is not (its hop is itself).
	p := f.r.peers["c"]
	p.node.NextHopMAC = macB
	f.r.peers["c"] = p
	f.r.neighbourResolved(gw, macB) // the same MAC: nothing for c
	if q := f.queuedPeers(); slices.Contains(q, "c") {
		t.Errorf("after the gateway was resolved to c's next hop: queued %v, want no c", q)
	}
	f.r.neighbourResolved(gw, macC)
	if q := f.queuedPeers(); !slices.Contains(q, "c") || slices.Contains(q, "b") {
		t.Errorf("after the gateway's MAC changed: queued %v, want c and not b", q)
	}
}

// queuedPeers empties the queue and returns the peers it held, sorted (not the domains pass).
func (f *nodeFixture) queuedPeers() []string {
	var out []string
	for f.r.queue.Len() > 0 {
		k, _ := f.r.queue.Get()
		f.r.queue.Done(k)
		if k != domainsKey {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
