package controller

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/domain"
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
	cm := func(name, yaml string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"}, Data: map[string]string{domain.ConfigKey: yaml}}
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
