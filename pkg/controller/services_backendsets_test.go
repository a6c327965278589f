package controller

import (
	"context"
	"errors"
	"maps"
	"math"
	"net/netip"
	"slices"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/service"
)

func backendsOf(addrs ...string) []service.Backend {
	out := make([]service.Backend, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, service.Backend{IP: netip.MustParseAddr(a), Port: 8080})
	}
	return out
}

// setSlots is the slots of set id in t, in slot order, failing the test on a gap.
func setSlots(t *testing.T, table *memTable[BackendSlot, service.Backend], id uint32) []service.Backend {
	t.Helper()
	var out []service.Backend
	for slot := range uint32(len(table.entries)) {
		b, ok := table.entries[BackendSlot{id, slot}]
		if !ok {
			break
		}
		out = append(out, b)
	}
	for k := range table.entries {
		if k.ID == id && k.Slot >= uint32(len(out)) {
			t.Fatalf("set %d: slot %d written after a gap at %d", id, k.Slot, len(out))
		}
	}
	return out
}

// TestBackendSetsIDs: ids start at 1 and count up; a released id is not reused at once, only once
// the count wraps; 0 and ids in use (allocated, pinned, or orphans) are never handed out.
func TestBackendSetsIDs(t *testing.T) {
	s := newBackendSets(newMemTable[BackendSlot, service.Backend](), nil)
	ctx := context.Background()
	for want := uint32(1); want <= 3; want++ {
		if id := s.alloc(); id != want {
			t.Fatalf("alloc = %d, want %d", id, want)
		}
	}
	s.release(ctx, 2, 0, false)
	if s.inUse(2) || !s.inUse(1) || !s.inUse(3) {
		t.Fatalf("in use after releasing 2: 1 %v, 2 %v, 3 %v", s.inUse(1), s.inUse(2), s.inUse(3))
	}
	if id := s.alloc(); id != 4 {
		t.Errorf("alloc after releasing 2 = %d, want 4 (no immediate reuse)", id)
	}

	// A previous agent's sets: new ids go above the highest, and a stray slot's id counts too.
	s.reserve(10)
	s.keepAbove(20)
	if s.inUse(20) {
		t.Errorf("a stray slot's id is not a set in use")
	}
	if id := s.alloc(); id != 21 {
		t.Errorf("alloc after reserving 10 and a stray slot of 20 = %d, want 21", id)
	}

	// The count wraps: 0 is skipped, 1 and 3 are in use, 2 was released: it is reused.
	s.nextID = math.MaxUint32
	if id := s.alloc(); id != math.MaxUint32 {
		t.Errorf("alloc = %d, want %d", id, uint32(math.MaxUint32))
	}
	if id := s.alloc(); id != 2 {
		t.Errorf("alloc after wrapping = %d, want 2 (0 skipped, 1 in use, 2 free)", id)
	}
	if id := s.alloc(); id != 5 {
		t.Errorf("alloc = %d, want 5 (3 and 4 in use)", id)
	}
	s.reserve(math.MaxUint32) // keepAbove(MaxUint32) must not wrap nextID back to 0
	if id := s.alloc(); id != 6 {
		t.Errorf("alloc after reserving the last id = %d, want 6", id)
	}
}

// failingAfter is a backend table whose writes fail after the first n.
type failingAfter struct {
	*memTable[BackendSlot, service.Backend]
	n int
}

func (f *failingAfter) Upsert(k BackendSlot, b service.Backend) error {
	if f.n == 0 {
		return errors.New("the map is full")
	}
	f.n--
	return f.memTable.Upsert(k, b)
}

// TestBackendSetsWriteAndRelease: a set is its backends in slots 0..n-1; release deletes exactly
// its slots and frees its id; a write that fails part-way says how many slots to release, and
// releasing them leaves nothing behind.
func TestBackendSetsWriteAndRelease(t *testing.T) {
	ctx := context.Background()
	table := newMemTable[BackendSlot, service.Backend]()
	s := newBackendSets(table, nil)
	a, b := s.alloc(), s.alloc()
	want := backendsOf("10.244.0.5", "10.244.1.5", "10.244.2.5")
	if n, err := s.write(a, want); err != nil || n != 3 {
		t.Fatalf("write = %d, %v", n, err)
	}
	if n, err := s.write(b, want[:1]); err != nil || n != 1 {
		t.Fatalf("write = %d, %v", n, err)
	}
	if got := setSlots(t, table, a); !slices.Equal(got, want) {
		t.Errorf("set %d holds %v, want %v", a, got, want)
	}
	s.release(ctx, a, 3, false)
	if got := slices.Collect(maps.Keys(table.entries)); !slices.Equal(got, []BackendSlot{{b, 0}}) {
		t.Errorf("after releasing set %d the table holds %v, want only set %d's slot", a, got, b)
	}
	if s.inUse(a) || !s.inUse(b) {
		t.Errorf("in use: %d %v, %d %v", a, s.inUse(a), b, s.inUse(b))
	}

	full := &failingAfter{memTable: newMemTable[BackendSlot, service.Backend](), n: 2}
	s = newBackendSets(full, nil)
	id := s.alloc()
	n, err := s.write(id, want)
	if err == nil || n != 2 {
		t.Fatalf("write to a full map = %d, %v; want 2 slots written and an error", n, err)
	}
	s.release(ctx, id, n, false)
	if len(full.entries) != 0 || s.inUse(id) {
		t.Errorf("after releasing a half-written set: %v, in use %v", full.entries, s.inUse(id))
	}
}

// TestBackendSetsOrphans: a set whose deletion fails stays in use (its id is not handed out again)
// until retryOrphans deletes it.
func TestBackendSetsOrphans(t *testing.T) {
	ctx := context.Background()
	table := newMemTable[BackendSlot, service.Backend]()
	affinity := newMemTable[AffinityKey, Affinity]()
	s := newBackendSets(table, affinity)
	id := s.alloc()
	if _, err := s.write(id, backendsOf("10.244.0.5", "10.244.1.5")); err != nil {
		t.Fatal(err)
	}
	client := AffinityKey{id, netip.MustParseAddr("10.244.0.100")}
	affinity.entries[client] = Affinity{Backend: backendsOf("10.244.0.5")[0]}

	table.failing = errors.New("deleting from lb_backend_map: busy")
	affinity.failing = errors.New("deleting from lb_affinity_map: busy")
	s.release(ctx, id, 2, true)
	if !s.inUse(id) || len(s.orphans) != 1 {
		t.Fatalf("a set whose deletion failed: in use %v, orphans %v", s.inUse(id), s.orphans)
	}
	if next := s.alloc(); next == id {
		t.Errorf("alloc handed out orphan %d", id)
	}
	if _, ok := affinity.entries[client]; !ok {
		t.Fatalf("the affinity entry went although its deletion failed")
	}
	table.failing, affinity.failing = nil, nil
	s.retryOrphans(ctx)
	if s.inUse(id) || len(s.orphans) != 0 {
		t.Errorf("after retryOrphans: in use %v, orphans %v", s.inUse(id), s.orphans)
	}
	if len(table.entries) != 0 {
		t.Errorf("orphan's slots left: %v", table.entries)
	}
	if _, ok := affinity.entries[client]; ok {
		t.Errorf("orphan's affinity entry left")
	}
}

// TestBackendSetsMoveAffinity: clients whose backend is in the new set move to it; the others
// stay with the old set (and go with it), and other sets' clients are untouched.
func TestBackendSetsMoveAffinity(t *testing.T) {
	ctx := context.Background()
	affinity := newMemTable[AffinityKey, Affinity]()
	s := newBackendSets(newMemTable[BackendSlot, service.Backend](), affinity)
	from, other := s.alloc(), s.alloc()
	ip := netip.MustParseAddr
	be := backendsOf("10.244.0.5", "10.244.1.5", "10.244.2.5")
	stays := Affinity{Backend: be[0], LastSeen: 7}
	affinity.entries[AffinityKey{from, ip("10.244.0.100")}] = stays
	affinity.entries[AffinityKey{from, ip("10.244.0.101")}] = Affinity{Backend: be[1], LastSeen: 8}
	affinity.entries[AffinityKey{other, ip("10.244.0.102")}] = Affinity{Backend: be[0], LastSeen: 9}

	to := s.alloc()
	s.moveAffinity(ctx, from, to, []service.Backend{be[0], be[2]})
	want := map[AffinityKey]Affinity{
		{from, ip("10.244.0.100")}:  stays,
		{from, ip("10.244.0.101")}:  {Backend: be[1], LastSeen: 8},
		{other, ip("10.244.0.102")}: {Backend: be[0], LastSeen: 9},
		{to, ip("10.244.0.100")}:    stays,
	}
	if !maps.Equal(affinity.entries, want) {
		t.Errorf("after the move: %v, want %v", affinity.entries, want)
	}
	s.release(ctx, from, 0, true)
	delete(want, AffinityKey{from, ip("10.244.0.100")})
	delete(want, AffinityKey{from, ip("10.244.0.101")})
	if !maps.Equal(affinity.entries, want) {
		t.Errorf("after releasing the old set: %v, want %v", affinity.entries, want)
	}

	// Without an affinity table there is nothing to move.
	newBackendSets(newMemTable[BackendSlot, service.Backend](), nil).moveAffinity(ctx, from, to, be)
}

// TestBackendSetsCollectUnused: at the end of the start-up pass the leftover slots and the
// affinity entries of sets not in use go; those of sets in use stay. When the start-up listing
// failed, the table is listed instead.
func TestBackendSetsCollectUnused(t *testing.T) {
	ctx := context.Background()
	ip := netip.MustParseAddr
	be := backendsOf("10.244.0.5")[0]
	for _, listed := range []bool{true, false} {
		table := newMemTable[BackendSlot, service.Backend]()
		affinity := newMemTable[AffinityKey, Affinity]()
		s := newBackendSets(table, affinity)
		s.reserve(7) // a pinned frontend's set
		for _, k := range []BackendSlot{{7, 0}, {7, 3}, {9, 0}, {9, 1}} {
			table.entries[k] = be
		}
		affinity.entries[AffinityKey{7, ip("10.244.0.100")}] = Affinity{Backend: be}
		affinity.entries[AffinityKey{9, ip("10.244.0.101")}] = Affinity{Backend: be}
		var leftovers []BackendSlot
		if listed {
			// Slot 3 of set 7 is outside its frontend's count 1; set 9 has no frontend.
			leftovers = []BackendSlot{{7, 3}, {9, 0}, {9, 1}}
		}
		s.collectUnused(ctx, leftovers, listed)

		wantSlots := []BackendSlot{{7, 0}, {7, 3}} // set 7 is in use: its slots are its frontend's business
		got := slices.SortedFunc(maps.Keys(table.entries), func(a, b BackendSlot) int {
			return int(a.ID)*100 + int(a.Slot) - int(b.ID)*100 - int(b.Slot)
		})
		if !slices.Equal(got, wantSlots) {
			t.Errorf("listed %v: slots %v, want %v", listed, got, wantSlots)
		}
		if _, ok := affinity.entries[AffinityKey{9, ip("10.244.0.101")}]; ok || len(affinity.entries) != 1 {
			t.Errorf("listed %v: affinity %v, want only set 7's client", listed, affinity.entries)
		}
	}
}
