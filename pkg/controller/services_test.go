package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// opLog records the writes of the service tables in order, to check the write order.
type opLog struct {
	mu  sync.Mutex
	ops []string
}

func (l *opLog) add(op string) {
	l.mu.Lock()
	l.ops = append(l.ops, op)
	l.mu.Unlock()
}

func (l *opLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ops := l.ops
	l.ops = nil
	return ops
}

// loggedTable is a memTable whose successful writes go to a log as "<name>+<key>" / "<name>-<key>".
type loggedTable[K comparable, V any] struct {
	*memTable[K, V]
	name string
	log  *opLog
}

func (t loggedTable[K, V]) Upsert(k K, v V) error {
	err := t.memTable.Upsert(k, v)
	if err == nil {
		t.log.add(fmt.Sprintf("%s+%v", t.name, k))
	}
	return err
}

func (t loggedTable[K, V]) Delete(k K) error {
	err := t.memTable.Delete(k)
	if err == nil {
		t.log.add(fmt.Sprintf("%s-%v", t.name, k))
	}
	return err
}

type svcFixture struct {
	r         *ServiceReconciler
	frontends *memTable[service.FrontendKey, ServiceEntry]
	backends  *memTable[BackendSlot, service.Backend]
	affinity  *memTable[AffinityKey, Affinity]
	log       *opLog
	recorder  *record.FakeRecorder
	factory   informers.SharedInformerFactory
}

func newSvcFixture(t *testing.T, objs ...any) *svcFixture {
	t.Helper()
	f := &svcFixture{
		frontends: newMemTable[service.FrontendKey, ServiceEntry](),
		backends:  newMemTable[BackendSlot, service.Backend](),
		affinity:  newMemTable[AffinityKey, Affinity](),
		log:       &opLog{},
		recorder:  record.NewFakeRecorder(100),
	}
	// The client holds the objects too, for tests that start the informers (they list them).
	var runtimeObjs []runtime.Object
	for _, n := range svcNodes() {
		runtimeObjs = append(runtimeObjs, n)
	}
	for _, o := range objs {
		runtimeObjs = append(runtimeObjs, o.(runtime.Object))
	}
	// Trimmed as the agent caches them: the reconciler reads what k8s.TrimForCache keeps.
	f.factory = informers.NewSharedInformerFactoryWithOptions(fake.NewClientset(runtimeObjs...), 0, informers.WithTransform(k8s.TrimForCache))
	r, err := NewServiceReconciler(ServiceReconcilerConfig{
		NodeName:  "self",
		Services:  f.factory.Core().V1().Services().Informer(),
		Slices:    f.factory.Discovery().V1().EndpointSlices().Informer(),
		Nodes:     f.factory.Core().V1().Nodes().Informer(),
		Frontends: loggedTable[service.FrontendKey, ServiceEntry]{f.frontends, "svc", f.log},
		Backends:  loggedTable[BackendSlot, service.Backend]{f.backends, "be", f.log},
		Affinity:  loggedTable[AffinityKey, Affinity]{f.affinity, "aff", f.log},
		Recorder:  f.recorder,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	for _, n := range svcNodes() {
		f.seed(n)
	}
	for _, o := range objs {
		f.seed(o)
	}
	return f
}

// svcNodes: this node "self" in pool-a, n2 in pool-a, n3 in pool-b.
func svcNodes() []*corev1.Node {
	node := func(name, pool string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{domain.DefaultPoolLabel: pool}}}
	}
	return []*corev1.Node{node("self", "pool-a"), node("n2", "pool-a"), node("n3", "pool-b")}
}

// seed adds obj to its informer's cache as the agent's informers cache it (k8s.TrimForCache).
func (f *svcFixture) seed(obj any) {
	var informer cache.SharedIndexInformer
	switch obj.(type) {
	case *corev1.Service:
		informer = f.factory.Core().V1().Services().Informer()
	case *discoveryv1.EndpointSlice:
		informer = f.factory.Discovery().V1().EndpointSlices().Informer()
	case *corev1.Node:
		informer = f.factory.Core().V1().Nodes().Informer()
	default:
		panic(fmt.Sprintf("seed %T", obj))
	}
	trimmed, err := k8s.TrimForCache(obj.(runtime.Object).DeepCopyObject())
	if err != nil {
		panic(err)
	}
	if err := informer.GetIndexer().Add(trimmed); err != nil {
		panic(err)
	}
	if svc, key := sliceKeys(trimmed); svc != "" {
		f.r.slicesOf.put(svc, key) // what the slice event handler does, without queueing
	}
}

func (f *svcFixture) remove(obj any) {
	switch o := obj.(type) {
	case *corev1.Service:
		f.factory.Core().V1().Services().Informer().GetIndexer().Delete(o)
	case *discoveryv1.EndpointSlice:
		f.factory.Discovery().V1().EndpointSlices().Informer().GetIndexer().Delete(o)
		if svc, key := sliceKeys(o); svc != "" {
			f.r.slicesOf.remove(svc, key)
		}
	}
}

func (f *svcFixture) reconcile(t *testing.T, key string) {
	t.Helper()
	if err := f.r.reconcile(context.Background(), key); err != nil {
		t.Fatalf("reconcile %s: %v", key, err)
	}
}

// drain reconciles whatever the handlers queued, and returns the keys.
func (f *svcFixture) drain(t *testing.T) []string {
	t.Helper()
	var keys []string
	for f.r.queue.Len() > 0 {
		key, _ := f.r.queue.Get()
		keys = append(keys, key)
		f.reconcile(t, key)
		f.r.queue.Done(key)
		f.r.queue.Forget(key)
	}
	slices.Sort(keys)
	return keys
}

// state describes the maps as "scope vip:port/proto" -> "flags | backends in slot order", and
// checks that every frontend's slots exist and no other slot does.
func (f *svcFixture) state(t *testing.T) map[string]string {
	t.Helper()
	fe, _ := f.frontends.List()
	be, _ := f.backends.List()
	out := map[string]string{}
	used := 0
	for k, e := range fe {
		var b []string
		for slot := range uint32(e.Count) {
			backend, ok := be[BackendSlot{e.ID, slot}]
			if !ok {
				t.Errorf("%s: slot %d of set %d missing", k, slot, e.ID)
			}
			b = append(b, backend.String())
			used++
		}
		out[k.String()] = lb.FlagString(e.Flags) + " | " + strings.Join(b, ",")
	}
	if used != len(be) {
		t.Errorf("%d backend slots, %d used by frontends: %v", len(be), used, be)
	}
	return out
}

func (f *svcFixture) expect(t *testing.T, want map[string]string) {
	t.Helper()
	got := f.state(t)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s = %q", k, v)
		}
	}
}

func (f *svcFixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func (f *svcFixture) entry(t *testing.T, key string) ServiceEntry {
	t.Helper()
	fe, _ := f.frontends.List()
	for k, e := range fe {
		if k.String() == key {
			return e
		}
	}
	t.Fatalf("no frontend %s", key)
	return ServiceEntry{}
}

func webService(mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}},
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func withAnnotation(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

func webSlice(eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
		Endpoints:   eps,
	}
}

func endpointOn(ip, node string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}
}

const (
	svcCIP     = "internal 10.96.0.10:80/tcp"
	svcNP      = "external 0.0.0.0:30080/tcp"
	beSelf     = "10.244.0.5:8080"
	beN2       = "10.244.1.5:8080"
	beN3       = "10.244.2.5:8080"
	serviceKey = "ns/web"
)

func threeEndpoints() *discoveryv1.EndpointSlice {
	return webSlice(endpointOn("10.244.0.5", "self", true), endpointOn("10.244.1.5", "n2", true), endpointOn("10.244.2.5", "n3", true))
}

// TestServicesCreateUpdateDelete: a Service appears, an endpoint goes not ready, then the Service
// goes; each step writes a new backend set before the frontend and deletes the old set after.
func TestServicesCreateUpdateDelete(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	f.reconcile(t, serviceKey)
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all})
	f.log.take()

	// Unchanged: nothing is written (established flows never see their frontend blink).
	f.reconcile(t, serviceKey)
	if ops := f.log.take(); len(ops) != 0 {
		t.Fatalf("an unchanged Service was rewritten: %v", ops)
	}

	old := f.entry(t, svcCIP)
	f.seed(webSlice(endpointOn("10.244.0.5", "self", true), endpointOn("10.244.1.5", "n2", false), endpointOn("10.244.2.5", "n3", true)))
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf + "," + beN3, svcNP: "nodeport | " + beSelf + "," + beN3})
	checkWriteOrder(t, f.log.take(), []ServiceEntry{old, f.entry(t, svcCIP)})

	sets := map[uint32]string{}
	for k, e := range f.frontends.entries {
		sets[e.ID] = k.String()
	}
	f.remove(webService())
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{})
	// Each frontend goes before the slots of its set.
	ops := f.log.take()
	for i, op := range ops {
		var id, slot uint32
		if _, err := fmt.Sscanf(op, "be-{%d %d}", &id, &slot); err != nil {
			continue
		}
		if fe := slices.Index(ops, "svc-"+sets[id]); fe < 0 || fe > i {
			t.Errorf("slot %d of set %d deleted at %d, its frontend at %d: %v", slot, id, i, fe, ops)
		}
	}
	if len(ops) != 2+4 {
		t.Errorf("ops %v", ops)
	}
	if f.r.programmedBackendCount() != 0 {
		t.Error("backends left in memory")
	}
}

// checkWriteOrder: for a frontend moving from set old to set new: every slot of new is written
// before the frontend, and the old slots are deleted after.
func checkWriteOrder(t *testing.T, ops []string, sets []ServiceEntry) {
	t.Helper()
	old, cur := sets[0], sets[1]
	if old.ID == cur.ID {
		t.Fatalf("the set id did not change: %d", cur.ID)
	}
	index := func(op string) int { return slices.Index(ops, op) }
	fe := index("svc+" + svcCIP)
	if fe < 0 {
		t.Fatalf("frontend not written: %v", ops)
	}
	for slot := range uint32(cur.Count) {
		if i := index(fmt.Sprintf("be+{%d %d}", cur.ID, slot)); i < 0 || i > fe {
			t.Errorf("slot %d of the new set written at %d, the frontend at %d: %v", slot, i, fe, ops)
		}
	}
	for slot := range uint32(old.Count) {
		if i := index(fmt.Sprintf("be-{%d %d}", old.ID, slot)); i < fe {
			t.Errorf("slot %d of the old set deleted at %d, the frontend written at %d: %v", slot, i, fe, ops)
		}
	}
}

// programmedBackendCount is for tests: the backends the reconciler remembers.
func (r *ServiceReconciler) programmedBackendCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.programmed {
		n += len(p.backends)
	}
	return n
}

// TestServicesTopologyFollowsPools: with openyurt.io/topologyKeys=openyurt.io/nodepool, a node
// that changes pool changes the backends, without a restart; a change of this node's pool
// requeues every Service.
func TestServicesTopologyFollowsPools(t *testing.T) {
	other := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "plain"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.11", Ports: []corev1.ServicePort{{Port: 80}}},
	}
	f := newSvcFixture(t, webService(withAnnotation(service.TopologyAnnotation, service.TopologyNodePool)), threeEndpoints(), other)
	f.reconcile(t, serviceKey)
	f.reconcile(t, "ns/plain")
	f.expect(t, map[string]string{
		svcCIP: "- | " + beSelf + "," + beN2, svcNP: "nodeport | " + beSelf + "," + beN2,
		"internal 10.96.0.11:80/tcp": "- | ",
	})

	// n3 joins pool-a: only the Service with a topology is requeued.
	n3 := svcNodes()[2]
	n3.Labels[domain.DefaultPoolLabel] = "pool-a"
	old := svcNodes()[2]
	f.seed(n3)
	if !f.r.placementChanged(old, n3) {
		t.Fatal("a pool change is not a placement change")
	}
	f.r.nodeUpdated(old, n3)
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all, "internal 10.96.0.11:80/tcp": "- | "})

	// This node moves to pool-b (alone there now): every Service is requeued.
	self := svcNodes()[0]
	self.Labels[domain.DefaultPoolLabel] = "pool-b"
	f.seed(self)
	f.r.nodeChanged(self, false)
	if keys := f.drain(t); !slices.Equal(keys, []string{"ns/plain", serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf, svcNP: "nodeport | " + beSelf, "internal 10.96.0.11:80/tcp": "- | "})

	// Status updates do not move nodes.
	heartbeat := self.DeepCopy()
	heartbeat.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady}}
	if f.r.placementChanged(self, heartbeat) {
		t.Error("a status update is a placement change")
	}
}

// TestServicesNodePortIsolation flips nodeport.openyurt.io/listen live.
func TestServicesNodePortIsolation(t *testing.T) {
	f := newSvcFixture(t, webService(withAnnotation(service.ListenAnnotation, "pool-b")), threeEndpoints())
	f.reconcile(t, serviceKey)
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport,closed | "})
	cip := f.entry(t, svcCIP)

	f.seed(webService(withAnnotation(service.ListenAnnotation, "pool-b,pool-a")))
	f.log.take()
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all})
	if f.entry(t, svcCIP) != cip {
		t.Error("the ClusterIP frontend was rewritten by a node port change")
	}
	for _, op := range f.log.take() {
		if strings.Contains(op, "10.96.0.10") {
			t.Errorf("ClusterIP touched: %s", op)
		}
	}

	f.seed(webService(withAnnotation(service.ListenAnnotation, "-pool-a,*")))
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport,closed | "})

	f.seed(webService())
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all})
	if ev := f.events(); len(ev) != 0 {
		t.Errorf("events for valid annotations: %v", ev)
	}
}

// TestServicesInvalidAnnotation: a Service that never had a valid listen annotation is closed on
// nodes in a pool; one that had keeps its last valid value. Each problem is reported once.
func TestServicesInvalidAnnotation(t *testing.T) {
	f := newSvcFixture(t, webService(withAnnotation(service.ListenAnnotation, "pool-a,,")), threeEndpoints())
	f.reconcile(t, serviceKey)
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport,closed | "})
	ev := f.events()
	if len(ev) != 1 || !strings.Contains(ev[0], "Warning InvalidServiceAnnotation") ||
		!strings.Contains(ev[0], `nodeport.openyurt.io/listen="pool-a,,": item 2 is empty; edgeplane applies node ports closed on nodes in a pool`) {
		t.Fatalf("events %v", ev)
	}
	f.reconcile(t, serviceKey)
	if ev := f.events(); len(ev) != 0 {
		t.Errorf("the same problem reported again: %v", ev)
	}

	f.seed(webService(withAnnotation(service.ListenAnnotation, "pool-a")))
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all})

	f.seed(webService(withAnnotation(service.ListenAnnotation, "pool-a;pool-b"), withAnnotation(service.TopologyAnnotation, "nodepool")))
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all})
	ev = f.events()
	if len(ev) != 2 || !strings.Contains(ev[0], `openyurt.io/topologyKeys="nodepool"`) || !strings.Contains(ev[0], "applies the last valid topology (none)") ||
		!strings.Contains(ev[1], `edgeplane applies the last valid value ("pool-a")`) {
		t.Fatalf("events %v", ev)
	}

	// Endpoint changes still apply under the kept value.
	f.seed(webSlice(endpointOn("10.244.0.5", "self", true)))
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf, svcNP: "nodeport | " + beSelf})

	// On a ClusterIP Service the listen annotation means nothing: no event.
	f.seed(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cip", Annotations: map[string]string{service.ListenAnnotation: ","}},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.12", Ports: []corev1.ServicePort{{Port: 80}}},
	})
	f.reconcile(t, "ns/cip")
	if ev := f.events(); len(ev) != 0 {
		t.Errorf("events %v", ev)
	}
}

// TestServicesStartupAdoptsPinned: after a restart, a frontend already right is kept as it is
// (same set, no write), a wrong one is rewritten under an id no previous set uses, and what no
// Service wants goes: stale frontends, slots of unused sets, affinity entries of unused sets.
func TestServicesStartupAdoptsPinned(t *testing.T) {
	for _, walk := range []bool{false, true} {
		t.Run(fmt.Sprintf("walk=%v", walk), func(t *testing.T) { testStartupAdoptsPinned(t, walk) })
	}
}

// walkingTable is a backend table visited slot by slot (BackendWalker), as pkg/agent's is.
type walkingTable struct {
	BackendTable
	walks *int
}

func (w walkingTable) Walk(fn func(BackendSlot, service.Backend)) error {
	*w.walks++
	all, err := w.List()
	for slot, b := range all {
		fn(slot, b)
	}
	return err
}

func testStartupAdoptsPinned(t *testing.T, walk bool) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	walks := 0
	if walk {
		f.r.cfg.Backends = walkingTable{f.r.cfg.Backends, &walks}
	}
	ip := netip.MustParseAddr
	cipKey := service.FrontendKey{VIP: ip("10.96.0.10"), Port: 80, Proto: lb.ProtoTCP, Scope: lb.ScopeInternal}
	npKey := service.FrontendKey{VIP: service.NodePortVIP, Port: 30080, Proto: lb.ProtoTCP, Scope: lb.ScopeExternal}
	staleKey := service.FrontendKey{VIP: ip("10.96.0.99"), Port: 53, Proto: lb.ProtoUDP, Scope: lb.ScopeInternal}
	be := func(s string) service.Backend {
		ap := netip.MustParseAddrPort(s)
		return service.Backend{IP: ap.Addr(), Port: ap.Port()}
	}
	// The ClusterIP's set in another slot order than the model's: still the same set.
	f.frontends.entries[cipKey] = ServiceEntry{ID: 40, Count: 3}
	f.backends.entries[BackendSlot{40, 0}] = be(beN3)
	f.backends.entries[BackendSlot{40, 1}] = be(beSelf)
	f.backends.entries[BackendSlot{40, 2}] = be(beN2)
	// The node port's set misses an endpoint.
	f.frontends.entries[npKey] = ServiceEntry{ID: 41, Count: 1, Flags: lb.FlagNodePort}
	f.backends.entries[BackendSlot{41, 0}] = be(beSelf)
	f.frontends.entries[staleKey] = ServiceEntry{ID: 42, Count: 1}
	f.backends.entries[BackendSlot{42, 0}] = be("10.244.9.9:53")
	f.backends.entries[BackendSlot{77, 0}] = be("10.244.9.9:53") // a set no frontend uses
	f.affinity.entries[AffinityKey{77, ip("10.244.5.5")}] = Affinity{Backend: be("10.244.9.9:53")}

	f.r.syncAll(context.Background())
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + beN3 + "," + beSelf + "," + beN2, svcNP: "nodeport | " + all})
	if e := f.entry(t, svcCIP); e.ID != 40 {
		t.Errorf("the ClusterIP frontend moved to set %d", e.ID)
	}
	if e := f.entry(t, svcNP); e.ID <= 77 {
		t.Errorf("the node port's new set %d may collide with a pinned one", e.ID)
	}
	for _, op := range f.log.take() {
		if strings.Contains(op, "10.96.0.10") || strings.Contains(op, "{40 ") {
			t.Errorf("the adopted frontend was touched: %s", op)
		}
	}
	if aff, _ := f.affinity.List(); len(aff) != 0 {
		t.Errorf("stale affinity entries left: %v", aff)
	}
	select {
	case <-f.r.Ready():
		t.Error("Ready before Run")
	default:
	}
	if walk && walks != 1 {
		t.Errorf("the pinned slots were walked %d times, want once", walks)
	}
}

// TestServicesStartupKeepsListenDecision: a Service whose listen annotation is invalid when the
// agent restarts keeps what the previous agent decided for this node.
func TestServicesStartupKeepsListenDecision(t *testing.T) {
	for _, closed := range []bool{false, true} {
		f := newSvcFixture(t, webService(withAnnotation(service.ListenAnnotation, "bad value")), threeEndpoints())
		npKey := service.FrontendKey{VIP: service.NodePortVIP, Port: 30080, Proto: lb.ProtoTCP, Scope: lb.ScopeExternal}
		entry := ServiceEntry{ID: 5, Flags: lb.FlagNodePort}
		if closed {
			entry.Flags |= lb.FlagClosed
		}
		f.frontends.entries[npKey] = entry
		f.r.syncAll(context.Background())
		got := f.state(t)[svcNP]
		if want := map[bool]string{false: "nodeport | " + beSelf + "," + beN2 + "," + beN3, true: "nodeport,closed | "}[closed]; got != want {
			t.Errorf("closed=%v: node port %q, want %q", closed, got, want)
		}
		if ev := f.events(); len(ev) != 1 || !strings.Contains(ev[0], "this node's previous decision") {
			t.Errorf("events %v", ev)
		}
	}
}

// TestServicesConflict: two Services claim one externalIP frontend: the first keeps it, the other
// is told, and gets it when the first lets it go.
func TestServicesConflict(t *testing.T) {
	ext := func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.7"} }
	second := webService(ext, func(s *corev1.Service) {
		s.Name, s.Spec.ClusterIP, s.Spec.ClusterIPs = "second", "10.96.0.20", []string{"10.96.0.20"}
		s.Spec.Ports[0].NodePort = 30081
	})
	secondSlice := webSlice(endpointOn("10.244.7.7", "n2", true))
	secondSlice.Name, secondSlice.Labels[discoveryv1.LabelServiceName] = "second-1", "second"
	f := newSvcFixture(t, webService(ext), threeEndpoints(), second, secondSlice)
	f.reconcile(t, serviceKey)
	f.reconcile(t, "ns/second")
	state := f.state(t)
	all := beSelf + "," + beN2 + "," + beN3
	if got := state["external 198.51.100.7:80/tcp"]; got != "external-ip | "+all {
		t.Errorf("the external IP = %q", got)
	}
	if got := state["internal 10.96.0.20:80/tcp"]; got != "- | 10.244.7.7:8080" {
		t.Errorf("the second Service's own frontend = %q", got)
	}
	ev := f.events()
	if len(ev) != 1 || !strings.Contains(ev[0], "Warning FrontendConflict") || !strings.Contains(ev[0], "Service ns/web") {
		t.Fatalf("events %v", ev)
	}

	f.seed(webService()) // the first drops its external IP
	f.reconcile(t, serviceKey)
	if keys := f.drain(t); !slices.Equal(keys, []string{"ns/second"}) {
		t.Errorf("requeued %v", keys)
	}
	if got := f.state(t)["external 198.51.100.7:80/tcp"]; got != "external-ip | 10.244.7.7:8080" {
		t.Errorf("after the release: %q", got)
	}
}

// TestServicesAffinityFollowsBackends: when the backend set of an affinity frontend changes,
// clients whose backend stays keep it under the new set; the others' entries go.
func TestServicesAffinityFollowsBackends(t *testing.T) {
	affinity := func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }
	f := newSvcFixture(t, webService(affinity), threeEndpoints())
	f.reconcile(t, serviceKey)
	old := f.entry(t, svcCIP)
	ip := netip.MustParseAddr
	f.affinity.entries[AffinityKey{old.ID, ip("10.244.0.100")}] = Affinity{Backend: service.Backend{IP: ip("10.244.0.5"), Port: 8080}, LastSeen: 7}
	f.affinity.entries[AffinityKey{old.ID, ip("10.244.0.101")}] = Affinity{Backend: service.Backend{IP: ip("10.244.1.5"), Port: 8080}, LastSeen: 8}
	if timeouts := f.r.AffinityTimeouts(); timeouts[old.ID] != 3*time.Hour {
		t.Errorf("timeouts %v", timeouts)
	}

	f.seed(webSlice(endpointOn("10.244.0.5", "self", true), endpointOn("10.244.2.5", "n3", true)))
	f.reconcile(t, serviceKey)
	cur := f.entry(t, svcCIP)
	got, _ := f.affinity.List()
	want := map[AffinityKey]Affinity{{cur.ID, ip("10.244.0.100")}: {Backend: service.Backend{IP: ip("10.244.0.5"), Port: 8080}, LastSeen: 7}}
	if len(got) != 1 || got[AffinityKey{cur.ID, ip("10.244.0.100")}] != want[AffinityKey{cur.ID, ip("10.244.0.100")}] {
		t.Errorf("affinity %v, want %v", got, want)
	}
	if cur.Flags != lb.FlagAffinity || cur.AffinityTimeout != service.DefaultAffinityTimeout {
		t.Errorf("entry %+v", cur)
	}

	// The Service goes: its affinity entries go too.
	f.remove(webService())
	f.reconcile(t, serviceKey)
	if got, _ := f.affinity.List(); len(got) != 0 {
		t.Errorf("affinity left %v", got)
	}
}

// TestServicesMapFull: a write that fails names the Service, leaves no half-written set and the
// old frontend in place, and succeeds on retry.
func TestServicesMapFull(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	f.reconcile(t, serviceKey)
	before := f.state(t)
	f.seed(webSlice(endpointOn("10.244.0.5", "self", true)))
	f.backends.failing = errors.New("updating lb_backend_map: the map is full")
	err := f.r.reconcile(context.Background(), serviceKey)
	if err == nil || !strings.Contains(err.Error(), "service ns/web: frontend internal 10.96.0.10:80/tcp: writing backend 10.244.0.5:8080") ||
		!strings.Contains(err.Error(), "the map is full") {
		t.Fatalf("error %v", err)
	}
	f.backends.failing = nil
	if got := f.state(t); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("after a failed write: %v, want %v", got, before)
	}
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf, svcNP: "nodeport | " + beSelf})

	// The frontend table fails: the new set is rolled back.
	f.seed(threeEndpoints())
	f.frontends.failing = errors.New("updating lb_svc_map: the map is full")
	if err := f.r.reconcile(context.Background(), serviceKey); err == nil || !strings.Contains(err.Error(), "service ns/web: writing frontend") {
		t.Fatalf("error %v", err)
	}
	f.frontends.failing = nil
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf, svcNP: "nodeport | " + beSelf})
}

// TestServicesIgnoredAndTruncated: a Service handed to another proxy loses its frontends; one
// with more endpoints than the cap is cut and reported once.
func TestServicesIgnoredAndTruncated(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	f.r.cfg.MaxBackends = 2
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf + "," + beN2, svcNP: "nodeport | " + beSelf + "," + beN2})
	f.reconcile(t, serviceKey)
	if ev := f.events(); len(ev) != 2 || !strings.Contains(ev[0], "Warning TooManyEndpoints") {
		t.Errorf("events %v", ev)
	}

	f.seed(webService(func(s *corev1.Service) { s.Labels = map[string]string{service.ProxyNameLabel: "other"} }))
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{})
}

// TestServicesResyncRepairs: a frontend deleted or changed behind the agent's back is rewritten;
// one the agent never wrote is deleted.
func TestServicesResyncRepairs(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	f.reconcile(t, serviceKey)
	want := f.state(t)
	for k := range f.frontends.entries {
		if k.Scope == lb.ScopeInternal {
			delete(f.frontends.entries, k)
		}
	}
	foreign := service.FrontendKey{VIP: netip.MustParseAddr("10.96.9.9"), Port: 1, Proto: lb.ProtoTCP}
	f.frontends.entries[foreign] = ServiceEntry{ID: 999}
	f.r.resync(context.Background())
	f.drain(t)
	got := f.state(t)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after resync %v, want %v", got, want)
	}
}

// TestServicesSliceIndex: EndpointSlice events requeue their Service.
func TestServicesSliceIndex(t *testing.T) {
	f := newSvcFixture(t, webService())
	f.r.sliceChanged(nil, threeEndpoints())
	noLabel := threeEndpoints()
	noLabel.Labels = nil
	f.r.sliceChanged(nil, noLabel)
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	if keys := sliceServiceKey(threeEndpoints()); keys != serviceKey {
		t.Errorf("index %v", keys)
	}
	compact, _ := k8s.TrimForCache(threeEndpoints())
	if keys := sliceServiceKey(compact); keys != serviceKey {
		t.Errorf("index of the cached slice %v", keys)
	}
	f.r.sliceChanged(cache.DeletedFinalStateUnknown{Key: "x", Obj: compact}, nil)
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued for a deleted cached slice %v", keys)
	}
}

// TestServicesSliceIndexFollowsEvents: the slice index the handler keeps follows adds, updates
// (also of the service-name label) and deletes, and queues both Services of a moved slice.
func TestServicesSliceIndexFollowsEvents(t *testing.T) {
	f := newSvcFixture(t)
	a, _ := k8s.TrimForCache(threeEndpoints())
	f.r.sliceChanged(nil, a)
	f.r.sliceChanged(a, a) // a resync: no second entry
	if got := f.r.slicesOf.get(serviceKey); !slices.Equal(got, []string{"ns/web-1"}) {
		t.Fatalf("slices of %s: %v", serviceKey, got)
	}
	moved := threeEndpoints()
	moved.Labels = map[string]string{discoveryv1.LabelServiceName: "other"}
	b, _ := k8s.TrimForCache(moved)
	f.r.sliceChanged(a, b)
	if got, other := f.r.slicesOf.get(serviceKey), f.r.slicesOf.get("ns/other"); len(got) != 0 || !slices.Equal(other, []string{"ns/web-1"}) {
		t.Errorf("after the label moved: %s %v, ns/other %v", serviceKey, got, other)
	}
	f.r.sliceChanged(cache.DeletedFinalStateUnknown{Key: "ns/web-1", Obj: b}, nil)
	if len(f.r.slicesOf.bySvc) != 0 {
		t.Errorf("after the delete: %v", f.r.slicesOf.bySvc)
	}
	var queued []string
	for f.r.queue.Len() > 0 {
		key, _ := f.r.queue.Get()
		queued = append(queued, key)
		f.r.queue.Done(key)
	}
	slices.Sort(queued)
	if want := []string{"ns/other", serviceKey}; !slices.Equal(queued, want) {
		t.Errorf("queued %v, want %v", queued, want)
	}
}

// TestServicesUnusedBackends: the garbage collector's view, only once the start-up pass is over,
// and only of the backends it asks about.
func TestServicesUnusedBackends(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	used := BackendKey{service.Backend{IP: netip.MustParseAddr("10.244.1.5"), Port: 8080}, lb.ProtoTCP}
	otherProto := BackendKey{used.Backend, lb.ProtoUDP}
	gone := BackendKey{service.Backend{IP: netip.MustParseAddr("10.244.9.9"), Port: 8080}, lb.ProtoTCP}
	candidates := map[BackendKey]bool{used: true, otherProto: true, gone: true}
	if _, ok := f.r.UnusedBackends(candidates); ok {
		t.Fatal("unused backends judged before the start-up pass")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.r.Run(ctx) }()
	f.factory.Start(ctx.Done())
	<-f.r.Ready()
	unused, ok := f.r.UnusedBackends(candidates)
	if !ok || len(unused) != 2 || !unused[otherProto] || !unused[gone] {
		t.Errorf("unused %v %v, want %v and %v", unused, ok, otherProto, gone)
	}
	if len(candidates) != 3 {
		t.Errorf("the candidates changed: %v", candidates)
	}
	if unused, ok := f.r.UnusedBackends(nil); !ok || len(unused) != 0 {
		t.Errorf("unused of none %v %v", unused, ok)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestServicesPoolLabelChange: the domain configuration names another pool label; Refresh
// recomputes every Service with the pools it defines.
func TestServicesPoolLabelChange(t *testing.T) {
	f := newSvcFixture(t, webService(withAnnotation(service.ListenAnnotation, "site-1")), threeEndpoints())
	model := &staticModel{}
	model.m.Store(domain.DefaultModel())
	f.r.cfg.Domains = model
	f.reconcile(t, serviceKey)
	if got := f.state(t)[svcNP]; got != "nodeport,closed | " {
		t.Fatalf("node port in pool-a = %q", got)
	}
	self := svcNodes()[0]
	self.Labels["example.com/site"] = "site-1"
	f.seed(self) // labelled, but under a key the model does not read yet
	f.r.nodeChanged(self, false)
	f.drain(t)
	if got := f.state(t)[svcNP]; got != "nodeport,closed | " {
		t.Fatalf("node port = %q", got)
	}
	model.m.Store(parseModel(t, "poolLabel: example.com/site\n"))
	f.r.Refresh()
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	if got := f.state(t)[svcNP]; got != "nodeport | "+beSelf+","+beN2+","+beN3 {
		t.Errorf("node port in site-1 = %q", got)
	}
}
