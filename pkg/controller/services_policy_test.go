package controller

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/service"
)

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

// TestServicesStateGoesWithTheService: what the reconciler remembers of a Service (its frontends,
// inputs, last valid annotations and reported problems) is one entry, dropped when the Service
// goes; a Service deleted and created again starts afresh (its problem reported again).
func TestServicesStateGoesWithTheService(t *testing.T) {
	bad := webService(withAnnotation(service.ListenAnnotation, "pool-a,,"))
	f := newSvcFixture(t, bad, threeEndpoints())
	f.reconcile(t, serviceKey)
	st := f.r.states[serviceKey]
	if len(f.r.states) != 1 || st == nil || len(st.owned) != 2 || !st.complete || len(st.reported) != 1 {
		t.Fatalf("state after a reconcile: %+v (%d states), want 2 frontends, complete, 1 problem", st, len(f.r.states))
	}
	if ev := f.events(); len(ev) != 1 {
		t.Fatalf("events %v", ev)
	}
	f.remove(bad)
	f.reconcile(t, serviceKey)
	if len(f.r.states) != 0 {
		t.Errorf("states after the Service went: %v", f.r.states)
	}
	f.seed(bad)
	f.reconcile(t, serviceKey)
	if ev := f.events(); len(ev) != 1 {
		t.Errorf("the problem of a Service created again: events %v, want it reported again", ev)
	}
}
