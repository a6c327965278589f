package agent

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/service"
	"github.com/edgeplane/edgeplane/pkg/snapshot"
)

// After a reboot the agent may get its objects from a cache that answers for the API server
// (OpenYurt's YurtHub while the cloud is unreachable): the informers sync, and the EndpointSlices
// name this node's pods at the addresses they had before the reboot, while the pods came back
// through the CNI plugin under new ones (openyurt#2810). The agent knows where its own pods are:
// the name index. From a start without pins and with a snapshot of the last good state, every
// backend the reconcilers write at the old address of one of this node's pods (the snapshot's
// PodBackends) that the name index now holds under a new address is written at the new address.
// Which pods back a Service stays the API server's (or the cache's) to say; only where this node's
// own pod is follows the node. A local pod that holds the old address again keeps it.

// podMoves is what the name index says about the snapshot's pods: old address -> new address.
type podMoves struct {
	owners []snapshot.PodBackend // this node's pods that were Service backends before the reboot
	runDir string

	mu    sync.RWMutex
	moved map[netip.Addr]netip.Addr
}

// translate returns b at its pod's new address, if it moved.
func (m *podMoves) translate(b service.Backend) service.Backend {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if to, ok := m.moved[b.IP]; ok {
		b.IP = to
	}
	return b
}

// followMovedPods returns t with its backend writes translated (movedTables) and, until the
// returned stop is called, follows the name index every repairInterval, rewriting the backends
// already written at an address that moved. Without a snapshot read at a start without pins, t
// is returned as it is.
func (a *Agent) followMovedPods(ctx context.Context, t mapTables) (mapTables, func()) {
	if a.moves == nil || len(a.moves.owners) == 0 {
		return t, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var following sync.WaitGroup
	following.Go(func() { a.moves.follow(ctx, t) })
	return movedTables{t, a.moves}, func() { cancel(); following.Wait() }
}

// follow recomputes the moves from the name index every repairInterval until ctx is done, and
// rewrites t's backends at the addresses that moved.
func (m *podMoves) follow(ctx context.Context, t mapTables) {
	logger := klog.FromContext(ctx)
	for {
		pods, err := localPods(m.runDir, t.Endpoints())
		if err != nil {
			logger.Error(err, "Reading the name index for re-created pods")
		} else {
			moved := movedPods(m.owners, pods)
			for from := range moved {
				if _, ok := pods[from]; ok { // a local pod holds the old address again
					delete(moved, from)
				}
			}
			m.mu.RLock()
			same := maps.Equal(moved, m.moved)
			m.mu.RUnlock()
			if !same {
				m.mu.Lock()
				m.moved = moved
				m.mu.Unlock()
				if err := rewriteMoved(t.Backends(), moved); err != nil {
					logger.Error(err, "Rewriting the Service backends of re-created pods; will retry")
					m.mu.Lock()
					m.moved = nil // retried at the next pass
					m.mu.Unlock()
				} else {
					logger.Info("Service backends of this node's pods re-created under new addresses follow them (the name index), whatever the objects still name",
						"moved", moved)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(repairInterval):
		}
	}
}

// rewriteMoved writes every backend of t at an address in moved at its new address.
func rewriteMoved(t controller.BackendTable, moved map[netip.Addr]netip.Addr) error {
	if len(moved) == 0 {
		return nil
	}
	rewrite := map[controller.BackendSlot]service.Backend{}
	err := controller.WalkTable(t, func(k controller.BackendSlot, b service.Backend) {
		if to, ok := moved[b.IP]; ok {
			b.IP = to
			rewrite[k] = b
		}
	})
	errs := []error{err}
	for k, b := range rewrite {
		errs = append(errs, t.Upsert(k, b))
	}
	return errors.Join(errs...)
}

// movedTables are tables whose backend writes follow the moved pods.
type movedTables struct {
	mapTables
	moves *podMoves
}

func (t movedTables) Backends() controller.BackendTable {
	return movedBackends{t.mapTables.Backends(), t.moves}
}

// movedBackends translates every backend written; it keeps the table's batch operations.
type movedBackends struct {
	controller.BackendTable
	moves *podMoves
}

func (t movedBackends) Upsert(k controller.BackendSlot, b service.Backend) error {
	return t.BackendTable.Upsert(k, t.moves.translate(b))
}

func (t movedBackends) UpsertSet(id uint32, backends []service.Backend) error {
	translated := make([]service.Backend, len(backends))
	for i, b := range backends {
		translated[i] = t.moves.translate(b)
	}
	if w, ok := t.BackendTable.(controller.BackendSetWriter); ok {
		return w.UpsertSet(id, translated)
	}
	var errs []error
	for i, b := range translated {
		errs = append(errs, t.BackendTable.Upsert(controller.BackendSlot{ID: id, Slot: uint32(i)}, b))
	}
	return errors.Join(errs...)
}

func (t movedBackends) Walk(fn func(controller.BackendSlot, service.Backend)) error {
	return controller.WalkTable(t.BackendTable, fn)
}
