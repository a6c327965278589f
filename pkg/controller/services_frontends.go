package controller

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// The frontends of lb_svc_map as the ServiceReconciler programs them: which Service owns each,
// what each holds, and the order of writes that keeps established flows from seeing a blink.

// programmed is one frontend as lb_svc_map holds it.
type programmed struct {
	owner    string // namespace/name; "" for what a previous agent pinned, until a Service adopts it
	entry    ServiceEntry
	backends []slotBackend // slot order
	lost     bool          // the map no longer holds entry: rewrite
	held     bool          // the last resync's walk of the map met it as written
}

// slotBackend is a backend as programmed keeps it: 6 bytes, as lb_backend_map holds it, where a
// service.Backend takes 32 (its netip.Addr is 24); with 10,000 Services of 10 endpoints that is
// ~0.6 MiB of the agent's live heap instead of ~3. Backends are IPv4: the model keeps no other
// endpoint (pkg/service) and the maps hold no other.
type slotBackend struct {
	ip   [4]byte
	port uint16
}

func packBackend(b service.Backend) slotBackend {
	return slotBackend{ip: b.IP.As4(), port: b.Port}
}

func (b slotBackend) backend() service.Backend {
	return service.Backend{IP: netip.AddrFrom4(b.ip), Port: b.port}
}

// packBackends is backends as programmed keeps them.
func packBackends(backends []service.Backend) []slotBackend {
	out := make([]slotBackend, 0, len(backends))
	for _, b := range backends {
		if b.IP.Is4() {
			out = append(out, packBackend(b))
		}
	}
	return out
}

// holds reports whether p holds f as it is: its flags, affinity timeout and backends (in the
// model's order, CompareBackends, the slot order this reconciler writes; a previous agent's
// sets are compared the same way, in any order). The count of unreachable backends is not
// compared: it is rewritten in place (writeLocked).
func (p *programmed) holds(f service.Frontend) bool {
	if p.entry.Flags != f.Flags || p.entry.AffinityTimeout != f.AffinityTimeout || len(p.backends) != len(f.Backends) {
		return false
	}
	have := p.backends
	if !slices.IsSortedFunc(have, compareSlotBackends) {
		have = slices.SortedFunc(slices.Values(have), compareSlotBackends)
	}
	for i, b := range f.Backends {
		if !b.IP.Is4() || packBackend(b) != have[i] {
			return false
		}
	}
	return true
}

// compareSlotBackends orders as service.CompareBackends does: by address, then port.
func compareSlotBackends(a, b slotBackend) int {
	return cmp.Or(bytes.Compare(a.ip[:], b.ip[:]), cmp.Compare(a.port, b.port))
}

func (r *ServiceReconciler) ownLocked(key string, k service.FrontendKey) {
	if st := r.stateLocked(key); !slices.Contains(st.owned, k) {
		st.owned = append(st.owned, k)
		r.ownedGen++
	}
}

// applyLocked makes the Service's frontends want (nil: none), deleting those it no longer wants.
// A frontend another Service owns is left to it (the first to claim it keeps it) and reported in
// events; this Service is requeued when it is released.
func (r *ServiceReconciler) applyLocked(ctx context.Context, key string, want map[service.FrontendKey]service.Frontend, events *eventSet) error {
	var errs []error
	var conflicts []string
	for _, k := range slices.SortedFunc(maps.Keys(want), compareFrontendKeys) {
		if p := r.programmed.get(k); p != nil && p.owner != "" && p.owner != key {
			if r.waiting[k] == nil {
				r.waiting[k] = map[string]bool{}
			}
			r.waiting[k][key] = true
			conflicts = append(conflicts, fmt.Sprintf("%s (Service %s)", k, p.owner))
			continue
		}
		if w := r.waiting[k]; w != nil {
			delete(w, key)
		}
		if err := r.writeLocked(ctx, key, k, want[k]); err != nil {
			errs = append(errs, err)
		}
		if r.programmed.get(k) != nil { // written now, or earlier and kept
			r.ownLocked(key, k)
		}
	}
	var owned []service.FrontendKey
	if st := r.states[key]; st != nil {
		owned = st.owned
	}
	had := len(owned)
	kept := owned[:0] // filtered in place
	for _, k := range owned {
		if _, ok := want[k]; ok {
			kept = append(kept, k)
			continue
		}
		if err := r.deleteFrontendLocked(ctx, k); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", key, err))
			kept = append(kept, k)
		}
	}
	if len(kept) != had {
		r.ownedGen++
	}
	if st := r.states[key]; st != nil {
		st.owned = kept
		if len(kept) == 0 {
			st.owned = nil
			r.dropStateLocked(key)
		}
	}
	for k, w := range r.waiting {
		if _, ok := want[k]; !ok {
			delete(w, key)
		}
		if len(w) == 0 {
			delete(r.waiting, k)
		}
	}
	if len(conflicts) > 0 && events != nil {
		events.add(ReasonFrontendConflict, "frontends already programmed for another Service are left to it: "+strings.Join(conflicts, ", "))
	}
	return errors.Join(errs...)
}

func compareFrontendKeys(a, b service.FrontendKey) int {
	return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Scope, b.Scope))
}

// writeLocked makes frontend k hold f: nothing to do when it already does; else a fresh backend
// set, the frontend, then the old set's slots.
func (r *ServiceReconciler) writeLocked(ctx context.Context, owner string, k service.FrontendKey, f service.Frontend) error {
	old := r.programmed.get(k)
	if old != nil {
		old.owner = owner // even if the rewrite fails: its pinned state is this Service's last good one
		if !old.lost && old.holds(f) {
			if old.entry.Unreachable == f.Unreachable {
				return nil
			}
			// Only the count of backends left out changed, which the programs do not read:
			// the entry in place, the same set.
			entry := old.entry
			entry.Unreachable = f.Unreachable
			if err := r.cfg.Frontends.Upsert(k, entry); err != nil {
				return fmt.Errorf("service %s: writing frontend %s: %w", owner, k, err)
			}
			r.frontendWritten(k, entry)
			old.entry = entry
			return nil
		}
	}
	id := r.sets.alloc()
	if written, err := r.sets.write(id, f.Backends); err != nil {
		r.sets.release(ctx, id, written, false)
		return fmt.Errorf("service %s: frontend %s: %w", owner, k, err)
	}
	if f.Flags&service.FlagAffinity != 0 && old != nil && old.entry.Flags&service.FlagAffinity != 0 {
		r.sets.moveAffinity(ctx, old.entry.ID, id, f.Backends)
	}
	entry := ServiceEntry{ID: id, Count: uint16(len(f.Backends)), Flags: f.Flags, AffinityTimeout: f.AffinityTimeout, Unreachable: f.Unreachable}
	if err := r.cfg.Frontends.Upsert(k, entry); err != nil {
		r.sets.release(ctx, id, uint32(len(f.Backends)), f.Flags&service.FlagAffinity != 0)
		return fmt.Errorf("service %s: writing frontend %s: %w", owner, k, err)
	}
	r.frontendWritten(k, entry)
	r.programmed.set(k, &programmed{owner: owner, entry: entry, backends: packBackends(f.Backends)})
	if old != nil {
		r.sets.release(ctx, old.entry.ID, uint32(old.entry.Count), old.entry.Flags&service.FlagAffinity != 0)
	}
	return nil
}

// deleteFrontendLocked deletes frontend k, then its backend set, and requeues the Services that
// wait for it.
func (r *ServiceReconciler) deleteFrontendLocked(ctx context.Context, k service.FrontendKey) error {
	p := r.programmed.get(k)
	if p == nil {
		return nil
	}
	if err := r.cfg.Frontends.Delete(k); err != nil {
		return fmt.Errorf("deleting frontend %s: %w", k, err)
	}
	r.frontendDeleted(k)
	r.programmed.remove(k)
	r.sets.release(ctx, p.entry.ID, uint32(p.entry.Count), p.entry.Flags&service.FlagAffinity != 0)
	for key := range r.waiting[k] {
		r.queue.Add(key)
	}
	delete(r.waiting, k)
	return nil
}

// frontendWritten, frontendDeleted and frontendsListed tell the FrontendHook what lb_svc_map now
// holds, after each successful write or read of it.
func (r *ServiceReconciler) frontendWritten(k service.FrontendKey, e ServiceEntry) {
	if r.cfg.FrontendHook != nil {
		r.cfg.FrontendHook.FrontendWritten(k, e)
	}
}

func (r *ServiceReconciler) frontendDeleted(k service.FrontendKey) {
	if r.cfg.FrontendHook != nil {
		r.cfg.FrontendHook.FrontendDeleted(k)
	}
}

func (r *ServiceReconciler) frontendsListed(all iter.Seq2[service.FrontendKey, ServiceEntry]) {
	if r.cfg.FrontendHook != nil {
		r.cfg.FrontendHook.FrontendsListed(all)
	}
}

// listedFrontend is an entry of lb_svc_map as a resync's walk met it.
type listedFrontend struct {
	key   service.FrontendKey
	entry ServiceEntry
}

// heldFrontendsLocked is every frontend the map held at the last resync's walk: those held as
// written, and the others as the walk met them.
func (r *ServiceReconciler) heldFrontendsLocked(others []listedFrontend) iter.Seq2[service.FrontendKey, ServiceEntry] {
	return func(yield func(service.FrontendKey, ServiceEntry) bool) {
		for k, p := range r.programmed.all() {
			if p.held && !yield(k, p.entry) {
				return
			}
		}
		for _, f := range others {
			if !yield(f.key, f.entry) {
				return
			}
		}
	}
}
