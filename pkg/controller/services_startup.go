package controller

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// The start-up pass: adopt what a previous agent pinned where it is still right, rewrite the
// rest, and collect what no Service wants.

// syncAll is the start-up pass: load what is pinned, reconcile every Service (oldest first, so
// that of two Services claiming one frontend the older keeps it), then delete what none wants.
func (r *ServiceReconciler) syncAll(ctx context.Context) {
	logger := klog.FromContext(ctx)
	r.loadPinned(ctx)
	type svcOrder struct {
		created         time.Time
		namespace, name string
	}
	var svcs []svcOrder
	for _, obj := range r.services.List() {
		switch s := obj.(type) {
		case *k8s.Service:
			svcs = append(svcs, svcOrder{time.Unix(s.Created, 0), s.Namespace, s.Name})
		case *api.Service:
			svcs = append(svcs, svcOrder{s.CreationTimestamp.Time, s.Namespace, s.Name})
		}
	}
	slices.SortFunc(svcs, func(a, b svcOrder) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.namespace, b.namespace), strings.Compare(a.name, b.name))
	})
	for _, s := range svcs {
		key := s.namespace + "/" + s.name
		r.passing(key)
		start := time.Now()
		err := r.reconcile(ctx, key)
		observe(r.cfg.Metrics, ServicesController, start, err)
		if err != nil {
			logger.Error(err, "Reconciling service; will retry", "service", key)
			r.queue.AddRateLimited(key)
		}
	}
	r.collectPinned(ctx)
}

// loadPinned reads the maps as the previous agent left them: every frontend becomes adoptable
// (owner ""), with the backends of its set in slot order. The backend slots are visited once and
// placed into their frontends' sets (WalkTable), not listed into a map first.
func (r *ServiceReconciler) loadPinned(ctx context.Context) {
	logger := klog.FromContext(ctx)
	frontends, err := r.cfg.Frontends.List()
	if err != nil {
		logger.Error(err, "Listing pinned service frontends; they will be rewritten")
	} else {
		r.frontendsListed(maps.All(frontends))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	bySet := make(map[uint32][]*programmed, len(frontends)) // a set is one frontend's, unless a crash left it shared
	filled := make(map[*programmed]int, len(frontends))
	for k, e := range frontends {
		p := &programmed{entry: e, backends: make([]slotBackend, e.Count)}
		r.programmed.set(k, p)
		bySet[e.ID] = append(bySet[e.ID], p)
		r.sets.reserve(e.ID)
	}
	var leftovers []BackendSlot
	backendsErr := WalkTable(r.cfg.Backends, func(slot BackendSlot, b service.Backend) {
		// New sets take ids above every pinned one, frontends' or not (slots a crash left behind).
		r.sets.keepAbove(slot.ID)
		var count uint16
		for _, p := range bySet[slot.ID] {
			count = max(count, p.entry.Count)
			if slot.Slot < uint32(p.entry.Count) && b.IP.Is4() {
				p.backends[slot.Slot] = packBackend(b)
				filled[p]++
			}
		}
		if slot.Slot >= uint32(count) {
			leftovers = append(leftovers, slot)
		}
	})
	if backendsErr != nil {
		logger.Error(backendsErr, "Listing pinned service backends; their frontends will be rewritten")
		filled, leftovers = nil, nil
	}
	r.leftovers, r.leftoversListed = leftovers, backendsErr == nil
	for _, ps := range bySet {
		for _, p := range ps {
			if filled[p] != int(p.entry.Count) {
				// A slot is missing: never adopt this set as it is. What it held up to the
				// first gap is what the set is known to hold.
				p.lost = true
				if i := slices.Index(p.backends, slotBackend{}); i >= 0 {
					p.backends = p.backends[:i]
				}
			}
		}
	}
	if len(frontends) > 0 {
		logger.Info("Found pinned service frontends from a previous agent", "frontends", len(frontends))
	}
}

// collectPinned ends the start-up pass: frontends no Service adopted go, then backend slots and
// affinity entries of sets no frontend uses.
func (r *ServiceReconciler) collectPinned(ctx context.Context) {
	logger := klog.FromContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	stale := 0
	for k, p := range r.programmed.all() {
		if p.owner != "" {
			continue
		}
		if err := r.deleteFrontendLocked(ctx, k); err != nil {
			logger.Error(err, "Deleting a stale service frontend")
		}
		stale++
	}
	// The sets of pinned frontends went with their frontends (deleteFrontendLocked, writeLocked):
	// what is left is the slots outside them, which the start-up listing found, so the 100,000
	// slots the pass may have written are not read again.
	r.sets.collectUnused(ctx, r.leftovers, r.leftoversListed)
	r.leftovers, r.leftoversListed = nil, true
	if stale > 0 {
		logger.Info("Deleted pinned service frontends no Service wants", "frontends", stale)
	}
}

// pinnedListenLocked is whether this node listened on the Service's node ports, from the node
// port frontends a previous agent pinned and no Service adopted yet.
func (r *ServiceReconciler) pinnedListenLocked(svc *api.Service) (service.Listen, bool) {
	for _, port := range svc.Spec.Ports {
		for _, proto := range service.Protos {
			if port.NodePort < 1 || port.NodePort > 65535 {
				continue
			}
			k := service.FrontendKey{VIP: service.NodePortVIP, Port: uint16(port.NodePort), Proto: proto, Scope: service.ScopeExternal}
			if p := r.programmed.get(k); p != nil && p.owner == "" {
				if p.entry.Flags&service.FlagClosed != 0 {
					return service.ListenNowhere, true
				}
				return service.ListenEverywhere, true
			}
		}
	}
	return service.Listen{}, false
}

// adoptPinnedLocked keeps, for a Service the model refuses, the frontends it owns and, at
// start-up, the pinned frontends at its ClusterIP (the previous agent's last good state).
func (r *ServiceReconciler) adoptPinnedLocked(key string, svc *api.Service) {
	ips := append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...)
	for k, p := range r.programmed.all() {
		if p.owner == "" && slices.Contains(ips, k.VIP.String()) {
			p.owner = key
			r.ownLocked(key, k)
		}
	}
}
