package controller

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// reachNodes are svcNodes with pod CIDRs: self and n2 in pool-a, n3 in pool-b.
func reachNodes() []*corev1.Node {
	nodes := svcNodes()
	for i, n := range nodes {
		n.Spec.PodCIDR = []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"}[i]
	}
	return nodes
}

const poolsPrivate = "connectivity:\n- domains: [pool-a, pool-b]\n  mode: private\n"

// TestServicesLeaveOutUnreachableDomains: backends in the pod CIDR of a node whose network domain
// is public to this node's are left out, counted in the frontend entry, and follow the domain
// configuration and the nodes' pools live; with none reachable the frontend has no backend.
func TestServicesLeaveOutUnreachableDomains(t *testing.T) {
	plain := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "plain"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.11", Ports: []corev1.ServicePort{{Port: 80}}},
	}
	f := newSvcFixture(t, webService(), threeEndpoints(), plain)
	for _, n := range reachNodes() {
		f.seed(n)
	}
	model := &staticModel{}
	model.m.Store(parseModel(t, poolsPrivate))
	f.r.cfg.Domains = model
	f.reconcile(t, serviceKey)
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all})
	if e := f.entry(t, svcCIP); e.Unreachable != 0 {
		t.Errorf("private line: %d unreachable, want 0", e.Unreachable)
	}

	// The private line goes (the ConfigMap is deleted: all public): n3's endpoint is left out.
	model.m.Store(domain.DefaultModel())
	f.r.Refresh()
	if keys := f.drain(t); !slices.Equal(keys, []string{"ns/plain", serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	reachable := beSelf + "," + beN2
	f.expect(t, map[string]string{svcCIP: "- | " + reachable, svcNP: "nodeport | " + reachable, "internal 10.96.0.11:80/tcp": "- | "})
	for _, k := range []string{svcCIP, svcNP} {
		if e := f.entry(t, k); e.Unreachable != 1 {
			t.Errorf("%s: %d unreachable, want 1", k, e.Unreachable)
		}
	}

	// A second endpoint on n3: the same backends, one more left out; only the count changes,
	// written in place (the same set, no slot written).
	before := f.entry(t, svcCIP)
	f.log.take()
	f.seed(webSlice(endpointOn("10.244.0.5", "self", true), endpointOn("10.244.1.5", "n2", true),
		endpointOn("10.244.2.5", "n3", true), endpointOn("10.244.2.6", "n3", true)))
	f.reconcile(t, serviceKey)
	if e := f.entry(t, svcCIP); e.ID != before.ID || e.Unreachable != 2 {
		t.Errorf("entry %+v, want set %d with 2 unreachable", e, before.ID)
	}
	for _, op := range f.log.take() {
		if !strings.HasPrefix(op, "svc+") {
			t.Errorf("a count change wrote %s", op)
		}
	}

	// n3 moves into this node's pool: the Service with endpoints on n3 is requeued (without a
	// topology), n3's endpoints come back.
	old := reachNodes()[2]
	n3 := old.DeepCopy()
	n3.Labels[domain.DefaultPoolLabel] = "pool-a"
	f.seed(n3)
	f.r.nodeUpdated(k8stest.Node(old), k8stest.Node(n3))
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	all = all + ",10.244.2.6:8080"
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all, "internal 10.96.0.11:80/tcp": "- | "})
	if e := f.entry(t, svcCIP); e.Unreachable != 0 {
		t.Errorf("n3 in pool-a: %d unreachable, want 0", e.Unreachable)
	}

	// Back to pool-b, and the only endpoints left are n3's: no backend, like a Service without
	// endpoints (the datapath refuses at once).
	f.seed(old)
	f.r.nodeUpdated(k8stest.Node(n3), k8stest.Node(old))
	f.seed(webSlice(endpointOn("10.244.2.5", "n3", true)))
	f.drain(t)
	f.expect(t, map[string]string{svcCIP: "- | ", svcNP: "nodeport | ", "internal 10.96.0.11:80/tcp": "- | "})
	if e := f.entry(t, svcNP); e.Count != 0 || e.Unreachable != 1 {
		t.Errorf("only unreachable endpoints: %+v", e)
	}

	// Updates that do not move a node requeue nothing; a node that comes or goes, only the
	// Services with endpoints on it.
	heartbeat := old.DeepCopy()
	heartbeat.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady}}
	f.r.nodeUpdated(k8stest.Node(old), k8stest.Node(heartbeat))
	if keys := f.drain(t); len(keys) != 0 {
		t.Errorf("requeued %v", keys)
	}
	f.r.nodeChanged(k8stest.Node(svcNodes()[1])) // n2: no endpoint of ns/web any more
	if keys := f.drain(t); len(keys) != 0 {
		t.Errorf("requeued %v", keys)
	}
	f.r.nodeChanged(k8stest.Node(svcNodes()[2]))
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("requeued %v", keys)
	}
	// A pod CIDR change is a move.
	moved := old.DeepCopy()
	moved.Spec.PodCIDR = "10.244.9.0/24"
	if !f.r.placementChanged(k8stest.Node(old), k8stest.Node(moved)) {
		t.Error("a pod CIDR change is not a placement change")
	}
}

// TestServicesUnreachableAfterRestart: a previous agent's frontend (no count, the padding it
// wrote as 0) is adopted with its set and only its count is written.
func TestServicesUnreachableAfterRestart(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	for _, n := range reachNodes() {
		f.seed(n)
	}
	reachable := beSelf + "," + beN2
	// What the previous agent wrote: the same backends, without the count.
	prev := newSvcFixture(t, webService(), threeEndpoints())
	for _, n := range reachNodes() {
		prev.seed(n)
	}
	prev.reconcile(t, serviceKey)
	for k, e := range prev.frontends.entries {
		e.Unreachable = 0
		f.frontends.entries[k] = e
	}
	for k, b := range prev.backends.entries {
		f.backends.entries[k] = b
	}
	f.r.syncAll(t.Context())
	f.expect(t, map[string]string{svcCIP: "- | " + reachable, svcNP: "nodeport | " + reachable})
	for k, e := range prev.frontends.entries {
		got := f.entry(t, k.String())
		if got.ID != e.ID || got.Unreachable != 1 {
			t.Errorf("%s: %+v, want set %d adopted with 1 unreachable", k, got, e.ID)
		}
	}
	for _, op := range f.log.take() {
		if !strings.HasPrefix(op, "svc+") {
			t.Errorf("adoption wrote %s", op)
		}
	}
}
