package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

func TestReadyz(t *testing.T) {
	var r readiness
	get := func(path string) int {
		rec := httptest.NewRecorder()
		r.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if get("/healthz") != http.StatusOK || get("/readyz") != http.StatusServiceUnavailable {
		t.Fatal("before start-up: want healthz 200, readyz 503")
	}
	r.datapath.Store(true)
	if get("/readyz") != http.StatusServiceUnavailable {
		t.Fatal("informers not synced: want readyz 503")
	}
	r.synced.Store(true)
	if get("/readyz") != http.StatusOK {
		t.Fatal("ready: want readyz 200")
	}
}

func TestHealthChecksAndMetrics(t *testing.T) {
	var r readiness
	tel := newTelemetry(Config{BPFFSRoot: t.TempDir(), Resync: time.Second}, &r)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		r.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "edgeplane_build_info") {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}

	// Ready by the start-up flags, but nothing is attached under the (empty) bpffs root.
	r.datapath.Store(true)
	r.synced.Store(true)
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "underlay-ingress not attached") {
		t.Fatalf("readyz without attachments: %d %q", code, body)
	}

	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz before the first convergence pass: %d", code)
	}
	tel.lastPass.Store(time.Now().Add(-time.Hour).UnixNano())
	if code, body := get("/healthz"); code != http.StatusInternalServerError || !strings.Contains(body, "no convergence pass") {
		t.Fatalf("healthz with a stale convergence loop: %d %q", code, body)
	}
	tel.converged()
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz after a pass: %d", code)
	}
}

func TestWarnNodeRecordsEvent(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "self", UID: "uid-self"}}
	client := fake.NewClientset(node)
	a := &Agent{cfg: Config{NodeName: "self"}, client: k8stest.FromClientset(client)}
	a.warnNode(context.Background(), k8stest.Node(node), ReasonOverlappingNetworks, errors.New("the cluster CIDR overlaps the service CIDR"))
	evs, err := client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(evs.Items) != 1 {
		t.Fatalf("events: %v, %v", evs, err)
	}
	ev := evs.Items[0]
	if ev.Type != corev1.EventTypeWarning || ev.Reason != ReasonOverlappingNetworks ||
		ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != "self" || ev.InvolvedObject.UID != "uid-self" ||
		!strings.Contains(ev.Message, "overlaps the service CIDR") {
		t.Fatalf("event: %+v", ev)
	}
}

// The XDP link is an accelerator: a NIC without native XDP (a veth) has none, and the node is
// ready with the four tc links; a missing tc link is named.
func TestReadinessRequiresTCLinksOnly(t *testing.T) {
	tc := datapath.Attachments{Attached: map[datapath.AttachPoint]bool{
		datapath.AttachUnderlayIngress: true, datapath.AttachUnderlayEgress: true,
		datapath.AttachOverlayIngress: true, datapath.AttachOverlayEgress: true,
	}}
	if err := requiredAttached(tc); err != nil {
		t.Errorf("tc links attached, no XDP link: %v, want ready", err)
	}
	tc.Attached[datapath.AttachUnderlayXDP] = true
	tc.Attached[datapath.AttachOverlayEgress] = false
	if err := requiredAttached(tc); err == nil || err.Error() != "overlay-egress not attached" {
		t.Errorf("overlay-egress missing: %v, want \"overlay-egress not attached\"", err)
	}
}
