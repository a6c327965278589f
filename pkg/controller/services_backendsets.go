package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// Backend sets: the slots of lb_backend_map under one id, the ids in use, the affinity entries
// that follow a set, and the sets whose deletion failed (orphans), deleted again at resync.

type orphan struct {
	count    uint32
	affinity bool
}

// writeSet writes backend set id, in one call where the table writes whole sets, and says how many
// slots may hold something (to release on error).
func (r *ServiceReconciler) writeSet(id uint32, backends []service.Backend) (uint32, error) {
	if w, ok := r.cfg.Backends.(BackendSetWriter); ok {
		if err := w.UpsertSet(id, backends); err != nil {
			return uint32(len(backends)), fmt.Errorf("writing the %d backends of set %d: %w", len(backends), id, err)
		}
		return uint32(len(backends)), nil
	}
	for slot, b := range backends {
		if err := r.cfg.Backends.Upsert(BackendSlot{id, uint32(slot)}, b); err != nil {
			return uint32(slot), fmt.Errorf("writing backend %s to slot %d of set %d: %w", b, slot, id, err)
		}
	}
	return uint32(len(backends)), nil
}

func (r *ServiceReconciler) allocIDLocked() uint32 {
	for r.nextID == 0 || r.ids[r.nextID] {
		r.nextID++
	}
	id := r.nextID
	r.nextID++
	r.ids[id] = true
	return id
}

// releaseSetLocked deletes backend set id's count slots and, for a set with affinity, the
// affinity entries that point into it. What fails is retried at the next resync.
func (r *ServiceReconciler) releaseSetLocked(ctx context.Context, id, count uint32, affinity bool) {
	var errs []error
	for slot := range count {
		if err := r.cfg.Backends.Delete(BackendSlot{id, slot}); err != nil {
			errs = append(errs, err)
		}
	}
	if affinity && r.cfg.Affinity != nil {
		entries, err := r.cfg.Affinity.List()
		errs = append(errs, err)
		for k := range entries {
			if k.ID == id {
				errs = append(errs, r.cfg.Affinity.Delete(k))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		klog.FromContext(ctx).Error(err, "Deleting a service backend set; retrying at the next resync", "id", id)
		r.orphans[id] = orphan{count: count, affinity: affinity}
		return
	}
	delete(r.ids, id)
}

// moveAffinityLocked copies the affinity entries of set from whose backend is still in backends
// to set to, before the frontend switches to it, so that sticky clients stay on their backend.
// Entries the programs create for from in between are lost: those clients choose again.
func (r *ServiceReconciler) moveAffinityLocked(ctx context.Context, from, to uint32, backends []service.Backend) {
	if r.cfg.Affinity == nil {
		return
	}
	entries, err := r.cfg.Affinity.List()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Listing affinity entries; clients of the service choose their backend again", "id", from)
		return
	}
	for k, v := range entries {
		if k.ID != from || !slices.Contains(backends, v.Backend) {
			continue
		}
		if err := r.cfg.Affinity.Upsert(AffinityKey{ID: to, Client: k.Client}, v); err != nil {
			klog.FromContext(ctx).Error(err, "Moving an affinity entry; the client chooses its backend again", "client", k.Client)
		}
	}
}
