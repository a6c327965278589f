package k8s

import (
	"context"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// syncInformer is an informer whose handlers are called in its own processing, one after the
// other, as each event is taken from its queue: client-go's plain informer
// (cache.NewInformerWithOptions) with one handler that calls those registered. client-go's
// shared informer gives each handler a goroutine and an unbounded buffer of notifications
// instead, which a handler added after the start fills with every cached object at once and
// which never shrinks: ~0.9 MB for the agent's handlers at issue 18's scale (docs/benchmarks.md,
// "Scale"). The agent's handlers only queue keys and keep indexes, so calling them in line costs
// the informer nothing it would notice.
//
// A handler added once the informer runs is first given every cached object (OnAdd, in the
// initial list) under the lock the processing takes to call handlers. The events whose objects
// the store took before their handlers were called (one, or a batch of up to a thousand, or a
// whole relist) may then reach it twice (an add, then an add or update), and a delete may reach
// it for an object it was not given: the agent's handlers take both as they come.
type syncInformer struct {
	indexer    cache.Indexer
	controller cache.Controller

	mu       sync.Mutex // held while handlers are called
	handlers []cache.ResourceEventHandler
	stopped  atomic.Bool
}

func newSyncInformer(lw cache.ListerWatcher, obj runtime.Object, transform cache.TransformFunc) *syncInformer {
	s := &syncInformer{}
	store, controller := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw, ObjectType: obj, Handler: dispatch{s}, Indexers: cache.Indexers{}, Transform: transform,
	})
	s.indexer, s.controller = store.(cache.Indexer), controller
	return s
}

// AddEventHandler calls handler for every event from now on, after giving it every object
// cached so far.
func (s *syncInformer) AddEventHandler(handler cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, obj := range s.indexer.List() {
		handler.OnAdd(obj, true)
	}
	s.handlers = append(s.handlers, handler)
	return s, nil
}

func (s *syncInformer) GetStore() cache.Store     { return s.indexer }
func (s *syncInformer) GetIndexer() cache.Indexer { return s.indexer }
func (s *syncInformer) IsStopped() bool           { return s.stopped.Load() }

// HasSynced says the initial list was processed. The informer is its handlers' registration
// too: a handler was given every object cached when it was added and is called for each one
// processed since, so it has synced when the informer has.
func (s *syncInformer) HasSynced() bool                     { return synced(s.controller) }
func (s *syncInformer) HasSyncedChecker() cache.DoneChecker { return s.controller.HasSyncedChecker() }

func (s *syncInformer) RunWithContext(ctx context.Context) {
	s.controller.RunWithContext(ctx)
	s.stopped.Store(true)
}

// dispatch is the informer's one handler: it calls the registered ones, in order, under the lock.
type dispatch struct{ s *syncInformer }

func (d dispatch) each(call func(cache.ResourceEventHandler)) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	for _, h := range d.s.handlers {
		call(h)
	}
}

func (d dispatch) OnAdd(obj any, isInInitialList bool) {
	d.each(func(h cache.ResourceEventHandler) { h.OnAdd(obj, isInInitialList) })
}

func (d dispatch) OnUpdate(oldObj, newObj any) {
	d.each(func(h cache.ResourceEventHandler) { h.OnUpdate(oldObj, newObj) })
}

func (d dispatch) OnDelete(obj any) { d.each(func(h cache.ResourceEventHandler) { h.OnDelete(obj) }) }

// synced reports whether c's initial list has been processed, handlers included, without the
// lock of c's queue: client-go's HasSynced takes it, and its queue may hold it while processing
// (a large backlog, or feature gates an operator can set), that is while calling the handlers,
// one of which asks a registration whether it has synced (the route-mode view asks the domain
// configuration's) and would wait for itself.
func synced(c cache.Controller) bool {
	select {
	case <-c.HasSyncedChecker().Done():
		return true
	default:
		return false
	}
}
