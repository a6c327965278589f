package controller

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// processNext takes one item off queue and runs reconcile on it, observing it under controller's
// name; a failure is logged with what ("reconciling service") and the item's log key, and the
// item is retried with backoff. It returns false once the queue is shut down.
func processNext[T comparable](ctx context.Context, queue workqueue.TypedRateLimitingInterface[T], metrics Metrics,
	controller, what string, logKey func(T) []any, reconcile func(context.Context, T) error) bool {
	item, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(item)
	start := time.Now()
	err := reconcile(ctx, item)
	observe(metrics, controller, start, err)
	if err != nil {
		klog.FromContext(ctx).Error(err, what+"; will retry", logKey(item)...)
		queue.AddRateLimited(item)
		return true
	}
	queue.Forget(item)
	return true
}

// startupHold holds the keys a reconciler's events name from its making until its start-up pass
// is over. The agent starts the informers first, and they replay their initial lists to the
// handlers (10,000 Services, 5,000 Nodes at scale) before the pass, which reconciles every object
// of the synced cache anyway: queued, each would be reconciled a second time after it. Only a key
// named again after its reconcile in the pass (passing), or one the pass does not list, is queued
// when it ends (release). Both reconcilers use one.
type startupHold struct {
	mu   sync.Mutex
	keys map[string]bool // nil once released
}

func newStartupHold() *startupHold { return &startupHold{keys: map[string]bool{}} }

// add queues key on queue, or holds it until release.
func (h *startupHold) add(queue workqueue.TypedInterface[string], key string) {
	h.mu.Lock()
	if h.keys != nil {
		h.keys[key] = true
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	queue.Add(key)
}

// passing marks key as reconciled by the start-up pass from now on: only later events requeue it.
func (h *startupHold) passing(key string) {
	h.mu.Lock()
	delete(h.keys, key)
	h.mu.Unlock()
}

// release queues on queue what is held, and lets add queue directly from then on.
func (h *startupHold) release(queue workqueue.TypedInterface[string]) {
	h.mu.Lock()
	keys := h.keys
	h.keys = nil
	h.mu.Unlock()
	for key := range keys {
		queue.Add(key)
	}
}
