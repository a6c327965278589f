package controller

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	"github.com/edgeplane/edgeplane/pkg/service"
)

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

	// n3 joins pool-a: only the Service with endpoints on n3 is requeued.
	n3 := svcNodes()[2]
	n3.Labels[domain.DefaultPoolLabel] = "pool-a"
	old := svcNodes()[2]
	f.seed(n3)
	if !f.r.placementChanged(k8stest.Node(old), k8stest.Node(n3)) {
		t.Fatal("a pool change is not a placement change")
	}
	f.r.nodeUpdated(k8stest.Node(old), k8stest.Node(n3))
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all, "internal 10.96.0.11:80/tcp": "- | "})

	// This node moves to pool-b (alone there now): every Service is requeued.
	self := svcNodes()[0]
	self.Labels[domain.DefaultPoolLabel] = "pool-b"
	f.seed(self)
	f.r.nodeChanged(k8stest.Node(self))
	if keys := f.drain(t); !slices.Equal(keys, []string{"ns/plain", serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf, svcNP: "nodeport | " + beSelf, "internal 10.96.0.11:80/tcp": "- | "})

	// Status updates do not move nodes.
	heartbeat := self.DeepCopy()
	heartbeat.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady}}
	if f.r.placementChanged(k8stest.Node(self), k8stest.Node(heartbeat)) {
		t.Error("a status update is a placement change")
	}
}

// TestServicesSliceIndex: EndpointSlice events requeue their Service.
func TestServicesSliceIndex(t *testing.T) {
	f := newSvcFixture(t, webService())
	f.r.sliceChanged(nil, k8stest.Cached(threeEndpoints()))
	noLabel := threeEndpoints()
	noLabel.Labels = nil
	f.r.sliceChanged(nil, k8stest.Cached(noLabel))
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	if keys := sliceServiceKey(k8stest.Cached(threeEndpoints())); keys != serviceKey {
		t.Errorf("index %v", keys)
	}
	compact := k8stest.Cached(threeEndpoints())
	if keys := sliceServiceKey(compact); keys != serviceKey {
		t.Errorf("index of the cached slice %v", keys)
	}
	f.r.sliceChanged(k8stest.Cached(cache.DeletedFinalStateUnknown{Key: "x", Obj: compact}), nil)
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued for a deleted cached slice %v", keys)
	}
}

// TestServicesSliceIndexFollowsEvents: the slice index the handler keeps follows adds, updates
// (also of the service-name label) and deletes, and queues both Services of a moved slice.
func TestServicesSliceIndexFollowsEvents(t *testing.T) {
	f := newSvcFixture(t)
	a := k8stest.Cached(threeEndpoints())
	f.r.sliceChanged(nil, k8stest.Cached(a))
	f.r.sliceChanged(k8stest.Cached(a), k8stest.Cached(a)) // a resync: no second entry
	if got := f.r.slicesOf.get(serviceKey); len(got) != 1 || got[0] != a {
		t.Fatalf("slices of %s: %v", serviceKey, got)
	}
	// An update: the index holds the new version in place of the old, not beside it.
	newer := threeEndpoints()
	newer.ResourceVersion = "2"
	a2 := k8stest.Cached(newer)
	f.r.sliceChanged(k8stest.Cached(a), k8stest.Cached(a2))
	if got := f.r.slicesOf.get(serviceKey); len(got) != 1 || got[0] != a2 {
		t.Fatalf("slices of %s after an update: %v", serviceKey, got)
	}
	a = a2
	moved := threeEndpoints()
	moved.Labels = map[string]string{discoveryv1.LabelServiceName: "other"}
	b := k8stest.Cached(moved)
	f.r.sliceChanged(k8stest.Cached(a), k8stest.Cached(b))
	if got, other := f.r.slicesOf.get(serviceKey), f.r.slicesOf.get("ns/other"); len(got) != 0 || len(other) != 1 || other[0] != b {
		t.Errorf("after the label moved: %s %v, ns/other %v", serviceKey, got, other)
	}
	f.r.sliceChanged(k8stest.Cached(cache.DeletedFinalStateUnknown{Key: "ns/web-1", Obj: b}), nil)
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
	f.r.nodeChanged(k8stest.Node(self))
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

// A Service of several slices: the index holds each once, replaces a version in place, and
// goes back to the one slice left.
func TestServicesSliceIndexHoldsSeveralSlices(t *testing.T) {
	var x sliceIndex
	slice := func(name, rv string) any {
		s := threeEndpoints()
		s.Name, s.ResourceVersion = name, rv
		o := k8stest.Cached(s)
		return o
	}
	a1, b1, c1, b2 := slice("web-1", "1"), slice("web-2", "1"), slice("web-3", "1"), slice("web-2", "2")
	x.put(serviceKey, a1)
	x.put(serviceKey, b1)
	x.put(serviceKey, c1)
	held := x.get(serviceKey)
	x.put(serviceKey, b2)
	if got := x.get(serviceKey); len(got) != 3 || got[0] != a1 || got[1] != b2 || got[2] != c1 {
		t.Fatalf("after an update of web-2: %v", got)
	}
	if held[1] != b1 {
		t.Errorf("a copy taken before the update changed: %v", held)
	}
	x.remove(serviceKey, a1)
	x.remove(serviceKey, slice("web-3", "7")) // any version
	var each []any
	x.each(serviceKey, func(o any) { each = append(each, o) })
	if got := x.get(serviceKey); len(got) != 1 || got[0] != b2 || len(each) != 1 || each[0] != b2 {
		t.Fatalf("after removing two: %v, each %v", got, each)
	}
	x.remove(serviceKey, b2)
	if len(x.bySvc) != 0 {
		t.Errorf("after removing the last: %v", x.bySvc)
	}
}
