package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// TestServicesStartupPassQueuesOnlyLaterEvents: while the start-up pass runs (from Run on), the
// informers' events do not queue their Service for a second reconcile; a Service named again
// after the pass reconciled it, or one the pass does not list, is queued when the pass ends.
func TestServicesStartupPassQueuesOnlyLaterEvents(t *testing.T) {
	for _, late := range []bool{false, true} {
		f := newSvcFixture(t, webService(), threeEndpoints())
		f.r.early = map[string]bool{}    // as Run does before the caches sync
		f.r.enqueueService(webService()) // the informers' initial adds
		f.r.sliceChanged(nil, threeEndpoints())
		gone := threeEndpoints()
		gone.Labels = map[string]string{"kubernetes.io/service-name": "gone"}
		f.r.sliceChanged(nil, gone) // a slice whose Service is not there
		if f.r.queue.Len() != 0 {
			t.Fatalf("queued %d keys during the pass", f.r.queue.Len())
		}
		f.r.syncAll(context.Background())
		if late {
			f.r.sliceChanged(nil, threeEndpoints()) // changed after the pass reconciled it
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
		f.r.enqueueService(webService())
		if keys := f.drain(t); !slices.Equal(keys, []string{serviceKey}) {
			t.Errorf("after the pass: queued %v", keys)
		}
	}
}

// setWriter is a backend table that writes whole sets (BackendSetWriter), as pkg/agent's does;
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
