package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// TestServicesStartupPassQueuesOnlyLaterEvents: until the start-up pass is over (from the
// reconciler's making on: the informers may replay their adds before Run), the informers' events
// do not queue their Service for a second reconcile; a Service named again after the pass
// reconciled it, or one the pass does not list, is queued when the pass ends.
func TestServicesStartupPassQueuesOnlyLaterEvents(t *testing.T) {
	for _, late := range []bool{false, true} {
		f := newSvcFixtureAtStart(t, webService(), threeEndpoints())
		f.r.enqueueService(k8stest.Cached(webService())) // the informers' initial adds
		f.r.sliceChanged(nil, k8stest.Cached(threeEndpoints()))
		gone := threeEndpoints()
		gone.Labels = map[string]string{"kubernetes.io/service-name": "gone"}
		f.r.sliceChanged(nil, k8stest.Cached(gone)) // a slice whose Service is not there
		if f.r.queue.Len() != 0 {
			t.Fatalf("queued %d keys during the pass", f.r.queue.Len())
		}
		f.r.syncAll(context.Background())
		if late {
			f.r.sliceChanged(nil, k8stest.Cached(threeEndpoints())) // changed after the pass reconciled it
		}
		f.r.endEarly()
		want := []string{"ns/gone"}
		if late {
			want = []string{"ns/gone", serviceKey}
		}
		if keys := f.drain(t); !slices.Equal(keys, want) {
			t.Errorf("late event %v: queued %v, want %v", late, keys, want)
		}
		// From now on events queue directly.
		f.r.enqueueService(k8stest.Cached(webService()))
		if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
			t.Errorf("after the pass: queued %v", keys)
		}
	}
}

// setWriter is a backend table that writes whole sets (BackendSetWriter), as maptables' does;
// a set write that fails (failing: a full map, which does not fail deletes) leaves the first slot
// written, as a batch cut short may.
type setWriter struct {
	BackendTable
	mem     *memTable[BackendSlot, service.Backend]
	sets    int
	failing error
}

func (w *setWriter) UpsertSet(id uint32, backends []service.Backend) error {
	w.sets++
	if err := w.failing; err != nil {
		w.mem.mu.Lock()
		w.mem.entries[BackendSlot{id, 0}] = backends[0]
		w.mem.mu.Unlock()
		return err
	}
	for slot, b := range backends {
		if err := w.BackendTable.Upsert(BackendSlot{id, uint32(slot)}, b); err != nil {
			return err
		}
	}
	return nil
}

// TestServicesWholeSets: with a table that writes whole sets, each frontend's set is one write,
// the maps end as with slot-by-slot writes, and a failed set write leaves nothing behind.
func TestServicesWholeSets(t *testing.T) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	w := &setWriter{BackendTable: f.r.cfg.Backends, mem: f.backends}
	f.r.cfg.Backends = w
	f.r.sets.backends = w // the sets were made with the table it wraps
	f.reconcile(t, serviceKey)
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + all, svcNP: "nodeport | " + all})
	if w.sets != 2 {
		t.Errorf("%d set writes for 2 frontends", w.sets)
	}
	before := f.state(t)
	f.seed(webSlice(endpointOn("10.244.0.5", "self", true)))
	w.failing = errors.New("updating lb_backend_map: the map is full")
	err := f.r.reconcile(context.Background(), serviceKey)
	if err == nil || !strings.Contains(err.Error(), "writing the 1 backends of set") || !strings.Contains(err.Error(), "the map is full") {
		t.Fatalf("error %v", err)
	}
	w.failing = nil
	if got := f.state(t); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("after a failed set write: %v, want %v", got, before)
	}
	f.reconcile(t, serviceKey)
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf, svcNP: "nodeport | " + beSelf})
}

// TestServicesStartupAdoptsPinned: after a restart, a frontend already right is kept as it is
// (same set, no write), a wrong one is rewritten under an id no previous set uses, and what no
// Service wants goes: stale frontends, slots of unused sets, affinity entries of unused sets.
func TestServicesStartupAdoptsPinned(t *testing.T) {
	for _, walk := range []bool{false, true} {
		t.Run(fmt.Sprintf("walk=%v", walk), func(t *testing.T) { testStartupAdoptsPinned(t, walk) })
	}
}

// walkingTable is a backend table visited slot by slot (BackendWalker), as maptables' is.
type walkingTable struct {
	BackendTable
	walks *int
}

func (w walkingTable) Walk(fn func(BackendSlot, service.Backend)) error {
	*w.walks++
	all, err := w.List()
	for slot, b := range all {
		fn(slot, b)
	}
	return err
}

func testStartupAdoptsPinned(t *testing.T, walk bool) {
	f := newSvcFixture(t, webService(), threeEndpoints())
	walks := 0
	if walk {
		f.r.cfg.Backends = walkingTable{f.r.cfg.Backends, &walks}
	}
	ip := netip.MustParseAddr
	cipKey := service.FrontendKey{VIP: ip("10.96.0.10"), Port: 80, Proto: service.ProtoTCP, Scope: service.ScopeInternal}
	npKey := service.FrontendKey{VIP: service.NodePortVIP, Port: 30080, Proto: service.ProtoTCP, Scope: service.ScopeExternal}
	staleKey := service.FrontendKey{VIP: ip("10.96.0.99"), Port: 53, Proto: service.ProtoUDP, Scope: service.ScopeInternal}
	be := func(s string) service.Backend {
		ap := netip.MustParseAddrPort(s)
		return service.Backend{IP: ap.Addr(), Port: ap.Port()}
	}
	// The ClusterIP's set in another slot order than the model's: still the same set.
	f.frontends.entries[cipKey] = ServiceEntry{ID: 40, Count: 3}
	f.backends.entries[BackendSlot{40, 0}] = be(beN3)
	f.backends.entries[BackendSlot{40, 1}] = be(beSelf)
	f.backends.entries[BackendSlot{40, 2}] = be(beN2)
	// The node port's set misses an endpoint.
	f.frontends.entries[npKey] = ServiceEntry{ID: 41, Count: 1, Flags: service.FlagNodePort}
	f.backends.entries[BackendSlot{41, 0}] = be(beSelf)
	f.frontends.entries[staleKey] = ServiceEntry{ID: 42, Count: 1}
	f.backends.entries[BackendSlot{42, 0}] = be("10.244.9.9:53")
	f.backends.entries[BackendSlot{77, 0}] = be("10.244.9.9:53") // a set no frontend uses
	f.affinity.entries[AffinityKey{77, ip("10.244.5.5")}] = Affinity{Backend: be("10.244.9.9:53")}

	f.r.syncAll(context.Background())
	all := beSelf + "," + beN2 + "," + beN3
	f.expect(t, map[string]string{svcCIP: "- | " + beN3 + "," + beSelf + "," + beN2, svcNP: "nodeport | " + all})
	if e := f.entry(t, svcCIP); e.ID != 40 {
		t.Errorf("the ClusterIP frontend moved to set %d", e.ID)
	}
	if e := f.entry(t, svcNP); e.ID <= 77 {
		t.Errorf("the node port's new set %d may collide with a pinned one", e.ID)
	}
	for _, op := range f.log.take() {
		if strings.Contains(op, "10.96.0.10") || strings.Contains(op, "{40 ") {
			t.Errorf("the adopted frontend was touched: %s", op)
		}
	}
	if aff, _ := f.affinity.List(); len(aff) != 0 {
		t.Errorf("stale affinity entries left: %v", aff)
	}
	select {
	case <-f.r.Ready():
		t.Error("Ready before Run")
	default:
	}
	if walk && walks != 1 {
		t.Errorf("the pinned slots were walked %d times, want once", walks)
	}
}

// TestServicesStartupKeepsListenDecision: a Service whose listen annotation is invalid when the
// agent restarts keeps what the previous agent decided for this node.
func TestServicesStartupKeepsListenDecision(t *testing.T) {
	for _, closed := range []bool{false, true} {
		f := newSvcFixture(t, webService(withAnnotation(service.ListenAnnotation, "bad value")), threeEndpoints())
		npKey := service.FrontendKey{VIP: service.NodePortVIP, Port: 30080, Proto: service.ProtoTCP, Scope: service.ScopeExternal}
		entry := ServiceEntry{ID: 5, Flags: service.FlagNodePort}
		if closed {
			entry.Flags |= service.FlagClosed
		}
		f.frontends.entries[npKey] = entry
		f.r.syncAll(context.Background())
		got := f.state(t)[svcNP]
		if want := map[bool]string{false: "nodeport | " + beSelf + "," + beN2 + "," + beN3, true: "nodeport,closed | "}[closed]; got != want {
			t.Errorf("closed=%v: node port %q, want %q", closed, got, want)
		}
		if ev := f.events(); len(ev) != 1 || !strings.Contains(ev[0], "this node's previous decision") {
			t.Errorf("events %v", ev)
		}
	}
}
