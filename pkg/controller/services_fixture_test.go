package controller

import (
	"context"
	"fmt"
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
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// The ServiceReconciler's test fixture: in-memory tables that log their writes, fake informers,
// and builders of Services and EndpointSlices.

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

// newSvcFixture is a reconciler past its start-up pass (events queue their Service), its caches
// seeded with objs; the tests call its reconcile and resync directly.
func newSvcFixture(t *testing.T, objs ...any) *svcFixture {
	f := newSvcFixtureAtStart(t, objs...)
	f.r.endEarly()
	return f
}

// newSvcFixtureAtStart is newSvcFixture's reconciler as NewServiceReconciler leaves it: holding
// events until its start-up pass.
func newSvcFixtureAtStart(t *testing.T, objs ...any) *svcFixture {
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
	f.factory = informers.NewSharedInformerFactoryWithOptions(fake.NewClientset(runtimeObjs...), 0, informers.WithTransform(k8stest.Transform))
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
	case *corev1.Node, *k8s.Node:
		informer = f.factory.Core().V1().Nodes().Informer()
	default:
		panic(fmt.Sprintf("seed %T", obj))
	}
	trimmed, err := k8stest.Transform(obj.(runtime.Object).DeepCopyObject())
	if err != nil {
		panic(err)
	}
	old, _, _ := informer.GetIndexer().Get(trimmed)
	if err := informer.GetIndexer().Add(trimmed); err != nil {
		panic(err)
	}
	if _, ok := obj.(*discoveryv1.EndpointSlice); ok {
		f.r.indexSlice(old, trimmed) // what the slice event handler does, without queueing
	}
}

func (f *svcFixture) remove(obj any) {
	switch o := obj.(type) {
	case *corev1.Service:
		f.factory.Core().V1().Services().Informer().GetIndexer().Delete(o)
	case *discoveryv1.EndpointSlice:
		indexer := f.factory.Discovery().V1().EndpointSlices().Informer().GetIndexer()
		if old, exists, _ := indexer.Get(o); exists {
			indexer.Delete(o)
			f.r.indexSlice(old, nil)
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
		out[k.String()] = e.Flags.String() + " | " + strings.Join(b, ",")
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
	for _, p := range r.programmed.all() {
		n += len(p.backends)
	}
	return n
}
