package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/edgeplane/edgeplane/pkg/service"
)

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
	if cur.Flags != service.FlagAffinity || cur.AffinityTimeout != service.DefaultAffinityTimeout {
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
		if k.Scope == service.ScopeInternal {
			delete(f.frontends.entries, k)
		}
	}
	foreign := service.FrontendKey{VIP: netip.MustParseAddr("10.96.9.9"), Port: 1, Proto: service.ProtoTCP}
	f.frontends.entries[foreign] = ServiceEntry{ID: 999}
	f.r.resync(context.Background())
	f.drain(t)
	got := f.state(t)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after resync %v, want %v", got, want)
	}
}

// TestServicesUnusedBackends: the garbage collector's view, only once the start-up pass is over,
// and only of the backends it asks about.
func TestServicesUnusedBackends(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	used := BackendKey{service.Backend{IP: netip.MustParseAddr("10.244.1.5"), Port: 8080}, service.ProtoTCP}
	otherProto := BackendKey{used.Backend, service.ProtoUDP}
	gone := BackendKey{service.Backend{IP: netip.MustParseAddr("10.244.9.9"), Port: 8080}, service.ProtoTCP}
	candidates := map[BackendKey]bool{used: true, otherProto: true, gone: true}
	if _, ok := f.r.UnusedBackends(candidates); ok {
		t.Fatal("unused backends judged before the start-up pass")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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

// TestServicesResyncOfIdleClusterComputesNothing: the periodic pass queues no Service whose
// objects and frontends are as its last reconcile left them; it queues the one whose frontend the
// map lost, and one whose EndpointSlice changed without its event being handled.
func TestServicesResyncOfIdleClusterComputesNothing(t *testing.T) {
	other := webService(func(s *corev1.Service) {
		s.Name, s.Spec.ClusterIP, s.Spec.ClusterIPs = "other", "10.96.0.11", []string{"10.96.0.11"}
		s.Spec.Ports[0].NodePort = 30081
	})
	f := newSvcFixture(t, webService(), threeEndpoints(), other)
	f.reconcile(t, serviceKey)
	f.reconcile(t, "ns/other")
	ctx := context.Background()
	f.r.resync(ctx)
	if keys := f.drain(t); len(keys) != 0 || f.r.resynced.Load() != 0 {
		t.Errorf("idle periodic pass queued %v, want nothing", keys)
	}

	for k := range f.frontends.entries {
		if k.Scope == service.ScopeInternal && k.VIP == netip.MustParseAddr("10.96.0.11") {
			delete(f.frontends.entries, k)
		}
	}
	f.r.resync(ctx)
	if keys := f.drain(t); !slices.Equal(keys, []string{"ns/other"}) {
		t.Errorf("after a frontend of ns/other was lost the periodic pass queued %v, want [ns/other]", keys)
	}
	if _, err := f.frontends.List(); len(f.frontends.entries) != 4 || err != nil {
		t.Errorf("%d frontends after the repair, want 4", len(f.frontends.entries))
	}

	changed := threeEndpoints()
	changed.ResourceVersion = "2"
	changed.Endpoints = changed.Endpoints[:2]
	f.seed(changed) // the cache changed; its event was not handled
	f.r.resync(ctx)
	if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
		t.Errorf("after ns/web's EndpointSlice changed the periodic pass queued %v, want [ns/web]", keys)
	}
	f.r.resync(ctx)
	if keys := f.drain(t); len(keys) != 0 {
		t.Errorf("second idle periodic pass queued %v, want nothing", keys)
	}
}
