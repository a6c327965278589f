package controller

import (
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

func TestDomainConfigKeepsLastValid(t *testing.T) {
	recorder := record.NewFakeRecorder(10)
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	d, err := NewDomainConfig(factory.Core().V1().ConfigMaps().Informer(), "edgeplane-domains", recorder, nil)
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	d.OnChange(func() { changes++ })
	cm := func(name, yaml string) *api.ConfigMap {
		return &api.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"}, Data: map[string]string{domain.ConfigKey: yaml}}
	}
	if !d.Model().Equal(domain.DefaultModel()) {
		t.Fatal("without a ConfigMap the model must be the default")
	}

	d.update(cm("edgeplane-domains", cloudSiteAPrivate), false)
	if !d.Model().Reachable("cloud", "site-a") || changes != 1 {
		t.Fatalf("valid config not applied (changes %d)", changes)
	}
	d.update(cm("edgeplane-domains", "connectivity:\n- domains: [cloud, site-a]\n  mode: privat\n"), false)
	d.update(cm("edgeplane-domains", "connectivity:\n- domains: [cloud, site-a]\n  mode: privat\n"), false) // one event
	if !d.Model().Reachable("cloud", "site-a") || changes != 1 {
		t.Fatal("an invalid config replaced the last valid one")
	}
	if n := len(recorder.Events); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	if ev := <-recorder.Events; !strings.Contains(ev, ReasonInvalidDomainConfig) || !strings.Contains(ev, `"privat"`) {
		t.Errorf("event %q", ev)
	}
	d.update(cm("other", "defaultConnectivity: private\n"), false)
	if d.Model().Reachable("x", "y") {
		t.Fatal("another ConfigMap was read")
	}
	d.update(cm("edgeplane-domains", cloudSiteAPrivate), false) // unchanged: no change callback
	if changes != 1 {
		t.Fatalf("changes %d after an identical config", changes)
	}
	d.update(cm("edgeplane-domains", ""), true)
	if d.Model().Reachable("cloud", "site-a") || changes != 2 {
		t.Fatal("deleting the ConfigMap must restore the defaults")
	}
}

// ReportAgain records the ConfigMap's current problem once more (the reporter changed), nothing
// once it is fixed; InEffect says where the configuration in force came from.
func TestDomainConfigReportAgainAndInEffect(t *testing.T) {
	recorder := record.NewFakeRecorder(10)
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	informer := factory.Core().V1().ConfigMaps().Informer()
	d, err := NewDomainConfig(informer, "edgeplane-domains", recorder, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg, _ := d.InEffect(); !strings.Contains(msg, "not found") || !strings.Contains(msg, "all pairs public (default)") {
		t.Errorf("InEffect without a ConfigMap: %q", msg)
	}
	bad := &api.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-domains", Namespace: "edgeplane-system", ResourceVersion: "7"},
		Data: map[string]string{domain.ConfigKey: "defaultConnectivity: privat\n"}}
	_ = informer.GetStore().Add(bad)
	d.update(bad, false)
	d.ReportAgain()
	if n := len(recorder.Events); n != 2 {
		t.Fatalf("%d events, want the first and the one again", n)
	}
	if msg, kv := d.InEffect(); !strings.Contains(msg, "invalid") || kv[1] != "7" {
		t.Errorf("InEffect with an invalid ConfigMap: %q %v", msg, kv)
	}
	good := bad.DeepCopy()
	good.ResourceVersion, good.Data[domain.ConfigKey] = "8", cloudSiteAPrivate
	_ = informer.GetStore().Update(good)
	d.update(good, false)
	<-recorder.Events
	<-recorder.Events
	d.ReportAgain()
	if n := len(recorder.Events); n != 0 {
		t.Errorf("%d events after the ConfigMap was fixed", n)
	}
	if msg, kv := d.InEffect(); msg != "Domain configuration in effect" || kv[1] != "8" {
		t.Errorf("InEffect with a valid ConfigMap: %q %v", msg, kv)
	}
}

// HasSynced means Model is the ConfigMap's: once it reports true, readers (the node reconciler,
// the route-mode view) never see the default model in place of an existing ConfigMap. The
// informer's store is filled before its handlers run, so the informer's own HasSynced is too
// early.
func TestDomainConfigSyncedMeansApplied(t *testing.T) {
	for i := range 200 {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-domains", Namespace: "edgeplane-system"},
			Data: map[string]string{domain.ConfigKey: cloudSiteAPrivate}}
		factory := informers.NewSharedInformerFactoryWithOptions(fake.NewClientset(cm), 0, informers.WithTransform(k8stest.Transform))
		d, err := NewDomainConfig(factory.Core().V1().ConfigMaps().Informer(), cm.Name, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		factory.Start(stop)
		for !d.HasSynced() {
			runtime.Gosched()
		}
		applied := d.Model().Reachable("cloud", "site-a")
		close(stop)
		factory.Shutdown()
		if !applied {
			t.Fatalf("run %d: HasSynced before the ConfigMap was applied", i)
		}
	}
}
