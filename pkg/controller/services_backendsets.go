package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// backendSets manages the backend sets of lb_backend_map for the ServiceReconciler: a set is the
// slots 0..count-1 under one id, which one frontend points at. It hands out ids (never 0, never one
// in use, counting up so that a released id is not reused at once), writes sets, moves the
// affinity entries of sticky clients from an old set to its successor, and deletes sets with
// their affinity entries; a set whose deletion failed is an orphan, its id kept in use until
// retryOrphans deletes it. It is not safe for concurrent use: the ServiceReconciler's mutex
// guards it.
type backendSets struct {
	backends BackendTable
	affinity AffinityTable // optional

	ids     map[uint32]bool   // ids in use
	orphans map[uint32]orphan // sets whose deletion failed, by id
	nextID  uint32            // the next id to try
}

// orphan is a set whose deletion failed: what release must delete again.
type orphan struct {
	count    uint32
	affinity bool
}

func newBackendSets(backends BackendTable, affinity AffinityTable) *backendSets {
	return &backendSets{
		backends: backends,
		affinity: affinity,
		ids:      map[uint32]bool{},
		orphans:  map[uint32]orphan{},
		nextID:   1,
	}
}

// reserve marks id, a set a previous agent pinned, in use.
func (s *backendSets) reserve(id uint32) {
	s.ids[id] = true
	s.keepAbove(id)
}

// keepAbove makes new ids start above id (slots a crash left behind, outside every set in use).
func (s *backendSets) keepAbove(id uint32) {
	s.nextID = max(s.nextID, id+1)
}

// inUse reports whether set id is in use (allocated, reserved, or an orphan).
func (s *backendSets) inUse(id uint32) bool { return s.ids[id] }

// alloc is a fresh id, in use from now on.
func (s *backendSets) alloc() uint32 {
	for s.nextID == 0 || s.ids[s.nextID] {
		s.nextID++
	}
	id := s.nextID
	s.nextID++
	s.ids[id] = true
	return id
}

// write writes set id, in one call where the table writes whole sets, and says how many slots may
// hold something (to release on error).
func (s *backendSets) write(id uint32, backends []service.Backend) (uint32, error) {
	if w, ok := s.backends.(BackendSetWriter); ok {
		if err := w.UpsertSet(id, backends); err != nil {
			return uint32(len(backends)), fmt.Errorf("writing the %d backends of set %d: %w", len(backends), id, err)
		}
		return uint32(len(backends)), nil
	}
	for slot, b := range backends {
		if err := s.backends.Upsert(BackendSlot{id, uint32(slot)}, b); err != nil {
			return uint32(slot), fmt.Errorf("writing backend %s to slot %d of set %d: %w", b, slot, id, err)
		}
	}
	return uint32(len(backends)), nil
}

// release deletes set id's count slots and, for a set with affinity, the affinity entries that
// point into it, and frees id. What fails makes the set an orphan, retried by retryOrphans.
func (s *backendSets) release(ctx context.Context, id, count uint32, affinity bool) {
	var errs []error
	for slot := range count {
		if err := s.backends.Delete(BackendSlot{id, slot}); err != nil {
			errs = append(errs, err)
		}
	}
	if affinity && s.affinity != nil {
		entries, err := s.affinity.List()
		errs = append(errs, err)
		for k := range entries {
			if k.ID == id {
				errs = append(errs, s.affinity.Delete(k))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		klog.FromContext(ctx).Error(err, "Deleting a service backend set; retrying at the next resync", "id", id)
		s.orphans[id] = orphan{count: count, affinity: affinity}
		return
	}
	delete(s.ids, id)
}

// retryOrphans releases again every set whose deletion failed (at resync).
func (s *backendSets) retryOrphans(ctx context.Context) {
	for id, o := range s.orphans {
		delete(s.orphans, id)
		s.release(ctx, id, o.count, o.affinity)
	}
}

// moveAffinity copies the affinity entries of set from whose backend is still in backends to set
// to, before the frontend switches to it, so that sticky clients stay on their backend. Entries
// the programs create for from in between are lost: those clients choose again.
func (s *backendSets) moveAffinity(ctx context.Context, from, to uint32, backends []service.Backend) {
	if s.affinity == nil {
		return
	}
	entries, err := s.affinity.List()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Listing affinity entries; clients of the service choose their backend again", "id", from)
		return
	}
	for k, v := range entries {
		if k.ID != from || !slices.Contains(backends, v.Backend) {
			continue
		}
		if err := s.affinity.Upsert(AffinityKey{ID: to, Client: k.Client}, v); err != nil {
			klog.FromContext(ctx).Error(err, "Moving an affinity entry; the client chooses its backend again", "client", k.Client)
		}
	}
}

// collectUnused deletes, at the end of the start-up pass, the backend slots and affinity entries
// of sets not in use. The slots are leftovers, those the start-up listing found outside every
// pinned set (the sets of pinned frontends went with their frontends), so that the slots the pass
// wrote are not read again; when that listing failed (listed false) the table is listed now.
func (s *backendSets) collectUnused(ctx context.Context, leftovers []BackendSlot, listed bool) {
	logger := klog.FromContext(ctx)
	if !listed {
		if backends, err := s.backends.List(); err != nil {
			logger.Error(err, "Listing service backends")
		} else {
			leftovers = slices.Collect(maps.Keys(backends))
		}
	}
	for _, slot := range leftovers {
		if !s.ids[slot.ID] {
			if err := s.backends.Delete(slot); err != nil {
				logger.Error(err, "Deleting a stale backend slot", "id", slot.ID, "slot", slot.Slot)
			}
		}
	}
	if s.affinity == nil {
		return
	}
	entries, err := s.affinity.List()
	if err != nil {
		logger.Error(err, "Listing affinity entries")
		return
	}
	for k := range entries {
		if !s.ids[k.ID] {
			if err := s.affinity.Delete(k); err != nil {
				logger.Error(err, "Deleting a stale affinity entry")
			}
		}
	}
}
