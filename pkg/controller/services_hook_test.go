package controller

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// hookLog is a FrontendHook that logs what it is told into the tables' log, after their writes:
// "hook+<key>", "hook-<key>", "hook list <n>"; lists keeps each listing.
type hookLog struct {
	log   *opLog
	lists []map[service.FrontendKey]ServiceEntry
}

func (h *hookLog) FrontendWritten(k service.FrontendKey, e ServiceEntry) {
	h.log.add(fmt.Sprintf("hook+%v", k))
}

func (h *hookLog) FrontendDeleted(k service.FrontendKey) { h.log.add(fmt.Sprintf("hook-%v", k)) }

func (h *hookLog) FrontendsListed(all iter.Seq2[service.FrontendKey, ServiceEntry]) {
	listed := maps.Collect(all)
	h.log.add(fmt.Sprintf("hook list %d", len(listed)))
	h.lists = append(h.lists, listed)
}

// followedByHook checks that every write of lb_svc_map in ops is told to the hook right after it,
// and returns how many were.
func followedByHook(t *testing.T, ops []string) int {
	t.Helper()
	n := 0
	for i, op := range ops {
		var want string
		if k, ok := strings.CutPrefix(op, "svc+"); ok {
			want = "hook+" + k
		} else if k, ok := strings.CutPrefix(op, "svc-"); ok {
			want = "hook-" + k
		} else {
			continue
		}
		if i+1 >= len(ops) || ops[i+1] != want {
			t.Errorf("%s not followed by %s: %v", op, want, ops)
		}
		n++
	}
	return n
}

// TestServicesFrontendHook: the reconciler tells its FrontendHook (the agent's external-IP host
// routes) of every frontend it writes or deletes, after the write, and of the whole map whenever
// it lists it: at start-up (loadPinned) and at each resync, where a foreign entry it deletes is
// told first. A failed write is not told.
func TestServicesFrontendHook(t *testing.T) {
	extIP := func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.2"} }
	f := newSvcFixture(t, webService(extIP), threeEndpoints())
	hook := &hookLog{log: f.log}
	f.r.cfg.FrontendHook = hook

	f.r.loadPinned(context.Background())
	if ops := f.log.take(); !slices.Equal(ops, []string{"hook list 0"}) {
		t.Errorf("start-up: %v, want one listing of the empty map", ops)
	}
	f.reconcile(t, serviceKey)
	// ClusterIP, NodePort, and the externalIP's INTERNAL and EXTERNAL frontends.
	if n := followedByHook(t, f.log.take()); n != 4 {
		t.Errorf("%d frontend writes told, want 4", n)
	}

	foreign := service.FrontendKey{VIP: netip.MustParseAddr("10.96.9.9"), Port: 1, Proto: 6}
	f.frontends.entries[foreign] = ServiceEntry{ID: 999}
	f.r.resync(context.Background())
	ops := f.log.take()
	if len(ops) < 3 || ops[0] != "svc-"+foreign.String() || ops[1] != "hook-"+foreign.String() || ops[2] != "hook list 4" {
		t.Errorf("resync: %v, want the foreign frontend's deletion told, then the listing of the 4 frontends written", ops)
	}
	if listed := hook.lists[len(hook.lists)-1]; len(listed) != 4 || listed[foreign] != (ServiceEntry{}) {
		t.Errorf("resync listed %v", listed)
	}
	// A frontend the map lost is not in the listing, one changed in the map is there as the map
	// holds it; the Service writes both again.
	keys := slices.SortedFunc(maps.Keys(hook.lists[len(hook.lists)-1]), compareFrontendKeys)
	lost, changed := keys[0], keys[1]
	written := f.frontends.entries[changed]
	delete(f.frontends.entries, lost)
	tampered := written
	tampered.Flags ^= service.FlagExternalIP
	f.frontends.entries[changed] = tampered
	f.r.resync(context.Background())
	if listed := hook.lists[len(hook.lists)-1]; len(listed) != 3 || listed[lost] != (ServiceEntry{}) || listed[changed] != tampered {
		t.Errorf("resync after %v was lost and %v changed listed %v", lost, changed, listed)
	}
	f.drain(t)
	if _, ok := f.frontends.entries[lost]; !ok {
		t.Errorf("%v not written again", lost)
	}
	if again := f.frontends.entries[changed]; again.Flags != written.Flags || again.Count != written.Count {
		t.Errorf("%v holds %+v, not written again as %+v (in a fresh set)", changed, again, written)
	}
	f.drain(t)
	f.log.take()

	f.remove(webService())
	f.reconcile(t, serviceKey)
	if n := followedByHook(t, f.log.take()); n != 4 {
		t.Errorf("%d frontend deletions told, want 4", n)
	}

	// A write that fails is not told.
	f.frontends.failing = errors.New("map full")
	f.seed(webService(extIP))
	if err := f.r.reconcile(context.Background(), serviceKey); err == nil {
		t.Fatal("reconcile with a failing frontend table succeeded")
	}
	for _, op := range f.log.take() {
		if _, ok := strings.CutPrefix(op, "hook+"); ok {
			t.Errorf("a failed write told: %s", op)
		}
	}
}
