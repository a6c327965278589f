package controller

import (
	"time"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// What the agent's connection tracking garbage collector (pkg/controller/conntrackgc) asks the
// reconciler. It asks every pass, so the answers are kept small: the collector names the few
// backends it wonders about instead of receiving every programmed backend (100,000 of them with
// 10,000 Services of 10 endpoints, a map of several MiB it would hold for a whole sweep).

// BackendKey is a backend as connection tracking knows it.
type BackendKey struct {
	service.Backend
	Proto service.Proto
}

// UnusedBackends answers which of the candidates' keys no frontend uses now, as a new set
// (candidates is not changed); ok is false until the start-up pass is over, when the garbage
// collector must not judge flows by it. The collector asks about the backends of the UDP and SCTP
// flows of one batch, usually few: the walk skips the frontends of other protocols (most are TCP)
// and stops once every candidate was found in use.
func (r *ServiceReconciler) UnusedBackends(candidates map[BackendKey]bool) (unused map[BackendKey]bool, ok bool) {
	select {
	case <-r.ready:
	default:
		return nil, false
	}
	unused = make(map[BackendKey]bool, len(candidates))
	var protos [256]bool
	for k := range candidates {
		unused[k] = true
		protos[k.Proto] = true
	}
	if len(unused) == 0 {
		return unused, true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range r.programmed.all() {
		if !protos[k.Proto] {
			continue
		}
		for _, b := range p.backends {
			delete(unused, BackendKey{b.backend(), k.Proto})
		}
		if len(unused) == 0 {
			break
		}
	}
	return unused, true
}

// AffinityTimeouts are the affinity timeouts of the backend sets with sessionAffinity, by id.
func (r *ServiceReconciler) AffinityTimeouts() map[uint32]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[uint32]time.Duration{}
	for _, p := range r.programmed.all() {
		if p.entry.Flags&service.FlagAffinity != 0 {
			out[p.entry.ID] = time.Duration(p.entry.AffinityTimeout) * time.Second
		}
	}
	return out
}
