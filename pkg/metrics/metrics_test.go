package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"

	"github.com/edgeplane/edgeplane/pkg/agentinfo"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// value returns the sample of family name whose labels include want; ok is false when there is none.
func value(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// exported returns the name and labels of every edgeplane_* family the registry can export: the
// gathered ones, after every instrument has been given a child, and those the datapath collector
// describes (it needs a loaded datapath to collect).
func exported(t *testing.T) map[string][]string {
	t.Helper()
	m := New("", nil)
	m.SetWatch("nodes", func() bool { return true })
	m.SetKernel(agentinfo.Kernel{Release: "6.1.0", Features: []agentinfo.Feature{{Name: "tcx"}}})
	m.SetBGPReport(func() bgpstatus.Report {
		return bgpstatus.Report{Speaking: true, Peers: []bgpstatus.PeerStatus{{Address: netip.MustParseAddr("192.0.2.1"), ASN: 64512}}}
	})
	m.SetAPIServerStatus(func() APIServerStatus { return APIServerStatus{Reachable: true} })
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "test", MetricsProvider: m})
	defer q.ShutDown()
	mfs, err := gatherer(m.Registry()).Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "edgeplane_") {
			continue
		}
		var labels []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		out[mf.GetName()] = labels
	}
	for _, d := range NewDatapathCollector(t.TempDir()).Descs() {
		out[d.Name] = nil // labels: checked against a loaded datapath in TestDatapathCollector
	}
	return out
}

// TestFamiliesMatchRegistry keeps Families (and so the docs and the dashboard) equal to what
// the registry exports.
func TestFamiliesMatchRegistry(t *testing.T) {
	got := exported(t)
	for _, f := range Families() {
		labels, ok := got[f.Name]
		if !ok {
			t.Errorf("Families lists %s; the registry does not export it", f.Name)
			continue
		}
		if labels != nil && !slices.Equal(slices.Sorted(slices.Values(labels)), slices.Sorted(slices.Values(f.Labels))) {
			t.Errorf("%s: registry labels %v, Families says %v", f.Name, labels, f.Labels)
		}
		delete(got, f.Name)
	}
	for name := range got {
		t.Errorf("the registry exports %s; Families does not list it", name)
	}
}

// TestLint lints every family the agent serves, the Go runtime's and the process' included: they
// are written by promtext too.
func TestLint(t *testing.T) {
	m := New("", nil)
	problems, err := testutil.GatherAndLint(gatherer(m.Registry()))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestHandlerServesFamilies(t *testing.T) {
	m := New("", nil)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	for _, want := range []string{BuildInfo + "{", ReconcileTotal + `{controller="nodes",result="success"} 0`, "go_goroutines"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// flakyRoutes is routes_map in memory, failing the first write of one prefix.
type flakyRoutes struct {
	mu     sync.Mutex
	failOn netip.Prefix
	failed bool
	m      map[netip.Prefix]controller.Route
}

func (f *flakyRoutes) Upsert(p netip.Prefix, r controller.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p == f.failOn && !f.failed {
		f.failed = true
		return errors.New("injected failure")
	}
	f.m[p] = r
	return nil
}

func (f *flakyRoutes) Delete(p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, p)
	return nil
}

func (f *flakyRoutes) List() (map[netip.Prefix]controller.Route, error) { return nil, nil }

func (f *flakyRoutes) has(p netip.Prefix) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.m[p]
	return ok
}

type discardNodes struct{}

func (discardNodes) Upsert(netip.Addr, controller.Node) error      { return nil }
func (discardNodes) Delete(netip.Addr) error                       { return nil }
func (discardNodes) List() (map[netip.Addr]controller.Node, error) { return nil, nil }

type noNextHop struct{}

func (noNextHop) NextHop(netip.Addr) (net.HardwareAddr, error) { return nil, nil }

// TestReconcileMetrics runs the node reconciler over a fake clientset: the start-up pass reconciles
// both nodes, one write fails and the worker retries it.
func TestReconcileMetrics(t *testing.T) {
	mac, _ := net.ParseMAC("0a:00:00:00:00:0b")
	peer := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "b", Annotations: k8s.VTEPAnnotations(k8s.VTEP{MAC: mac, IP: netip.MustParseAddr("192.168.0.2")})},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24"},
	}
	self := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "self"}}
	client := fake.NewClientset(self, peer)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(k8stest.Transform))
	nodeInformer := factory.Core().V1().Nodes()
	peerCIDR := netip.MustParsePrefix("10.244.1.0/24")
	routes := &flakyRoutes{failOn: peerCIDR, m: map[netip.Prefix]controller.Route{}}
	m := New("", nil)
	r, err := controller.NewNodeReconciler(controller.NodeReconcilerConfig{
		Local: controller.LocalNode{Name: "self", NodeIP: netip.MustParseAddr("192.168.0.1"),
			PodCIDR: netip.MustParsePrefix("10.244.0.0/24"), ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")},
		Informer: nodeInformer.Informer(),
		Routes:   routes,
		Nodes:    discardNodes{}, NextHop: noNextHop{},
		Recorder: record.NewFakeRecorder(10), Resync: time.Hour, Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.SetWatch("nodes", nodeInformer.Informer().HasSynced)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	factory.Start(ctx.Done())
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		factory.Shutdown()
	}()
	<-r.Ready()

	// The informer's add events queue both nodes again; the counts below hold whatever the order.
	reg := gatherer(m.Registry())
	get := func(name string, labels map[string]string) float64 {
		v, ok := value(t, reg, name, labels)
		if !ok {
			t.Fatalf("no %s%v", name, labels)
		}
		return v
	}
	nodes := map[string]string{"controller": controller.NodesController}
	success := map[string]string{"controller": controller.NodesController, "result": ResultSuccess}
	failure := map[string]string{"controller": controller.NodesController, "result": ResultError}
	settled := func() bool {
		return routes.has(peerCIDR) && get(WorkqueueDepth, map[string]string{"name": "nodes"}) == 0 &&
			get(ReconcileDuration, nodes) == get(ReconcileTotal, success)+get(ReconcileTotal, failure)
	}
	for deadline := time.Now().Add(10 * time.Second); !settled(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the failed reconcile was not retried within 10s")
		}
	}
	if got := get(ReconcileTotal, failure); got != 1 {
		t.Errorf("%s%v = %v, want 1", ReconcileTotal, failure, got)
	}
	if got := get(ReconcileErrors, nodes); got != 1 {
		t.Errorf("%s = %v, want 1", ReconcileErrors, got)
	}
	if got := get(ReconcileTotal, success); got < 2 {
		t.Errorf("%s%v = %v, want >= 2 (self and b)", ReconcileTotal, success, got)
	}
	if got := get(WorkqueueRetries, map[string]string{"name": "nodes"}); got != 1 {
		t.Errorf("%s = %v, want 1", WorkqueueRetries, got)
	}
	if got := get(WorkqueueAdds, map[string]string{"name": "nodes"}); got < 1 {
		t.Errorf("%s = %v, want >= 1", WorkqueueAdds, got)
	}
	if got := get(APIWatchSynced, map[string]string{"resource": "nodes"}); got != 1 {
		t.Errorf("%s = %v, want 1", APIWatchSynced, got)
	}
	if got := get(ReconcileTotal, map[string]string{"controller": controller.PodGCController, "result": ResultSuccess}); got != 0 {
		t.Errorf("pod GC reconciles = %v, want a zero series", got)
	}
}

// build_info carries the version main was stamped with, so /metrics and the agent's log agree.
func TestBuildInfoVersion(t *testing.T) {
	m := New("v9.9.9-test", nil)
	mfs, err := gatherer(m.Registry()).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != BuildInfo {
			continue
		}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			if l.GetName() == "version" && l.GetValue() == "v9.9.9-test" {
				return
			}
		}
		t.Fatalf("%s labels %v lack version=v9.9.9-test", BuildInfo, mf.GetMetric()[0].GetLabel())
	}
	t.Fatalf("%s not exported", BuildInfo)
}
