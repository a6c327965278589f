package controller

import (
	"context"
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
