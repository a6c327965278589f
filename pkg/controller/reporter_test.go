package controller

import (
	"strings"
	"testing"

	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// Another node's invalid network configuration goes to the cluster recorder (the reporter's), and
// ReportAgain records it once more while it lasts; this node's recorder gets none of it.
func TestNodeReconcilerReportsPeersProblemsThroughClusterRecorder(t *testing.T) {
	b := peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)
	b.Annotations[k8s.BackendDataAnnotation] = "{not json"
	f := newNodeFixture(t, b)
	cluster := record.NewFakeRecorder(10)
	f.r.cfg.ClusterRecorder = cluster
	f.reconcile(t, "self")
	f.reconcile(t, "b")
	f.r.ReportAgain()
	if len(f.recorder.Events) != 0 {
		t.Errorf("this node's recorder got %d events about node b", len(f.recorder.Events))
	}
	if len(cluster.Events) != 2 {
		t.Fatalf("cluster recorder got %d events, want the first report and the one again", len(cluster.Events))
	}
	for range 2 {
		if ev := <-cluster.Events; !strings.Contains(ev, ReasonInvalidNetworkConfig) || !strings.Contains(ev, "backend-data") {
			t.Errorf("event %q", ev)
		}
	}
	f.seed(peerNode("b", "10.244.1.0/24", "192.168.0.2", macB)) // fixed: nothing left to report
	f.reconcile(t, "b")
	f.r.ReportAgain()
	if len(cluster.Events) != 0 {
		t.Errorf("ReportAgain recorded %d events after the problem was fixed", len(cluster.Events))
	}
}

// A Service's findings are recorded again by ReportAgain while they last, and not once fixed.
func TestServicesReportAgain(t *testing.T) {
	f := newSvcFixture(t, webService(withAnnotation(service.ListenAnnotation, "pool-a,,")), threeEndpoints())
	f.reconcile(t, serviceKey)
	first := f.events()
	f.r.ReportAgain()
	again := f.events()
	if len(first) != 1 || len(again) != 1 || again[0] != first[0] {
		t.Fatalf("first %v, again %v; want the same InvalidServiceAnnotation event twice", first, again)
	}
	f.seed(webService())
	f.reconcile(t, serviceKey)
	f.r.ReportAgain()
	if ev := f.events(); len(ev) != 0 {
		t.Errorf("events after the annotation was fixed: %v", ev)
	}
}
