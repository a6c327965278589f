package k8s

import (
	"context"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// Informer is what the agent's reconcilers use of an informer. The agent's are Informers'; tests
// may give client-go's (cache.SharedIndexInformer has it all).
type Informer interface {
	AddEventHandler(handler cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error)
	GetStore() cache.Store
	GetIndexer() cache.Indexer
	HasSynced() bool
	RunWithContext(ctx context.Context)
	// IsStopped reports whether it ran and stopped.
	IsStopped() bool
}

// Informers makes the agent's informers on first use and starts those made so far, as client-go's
// informer factory does, for the few resources the agent watches. Every informer trims objects
// with TrimForCache before they enter its cache and keeps no index: the agent reads Nodes, Pods
// and the ConfigMap by name or all at once, Services by key, and EndpointSlices through the
// service reconciler's own index; with 10,000 Services a namespace index only costs memory.
// Their handlers are called one after the other as each event is processed (syncInformer).
type Informers struct {
	api      API
	nodeName string

	mu           sync.Mutex
	informers    map[informerKey]*syncInformer
	started      map[informerKey]bool
	shuttingDown bool
	running      sync.WaitGroup
}

// informerKey is what an informer lists: one per key.
type informerKey struct {
	resource                 Resource
	namespace, fieldSelector string
}

// NewInformers returns the informers of the agent of the node nodeName; call Start after
// registering handlers, and Shutdown once their context is done.
func NewInformers(api API, nodeName string) *Informers {
	return &Informers{
		api: api, nodeName: nodeName,
		informers: map[informerKey]*syncInformer{}, started: map[informerKey]bool{},
	}
}

// Nodes is the informer of every Node, cached as the compact Node of this package: its watches
// decode Nodes as such (nodedecode.go), and the reflector checks that each event's object is of
// the informer's type.
func (i *Informers) Nodes() Informer {
	return i.informer(Nodes, "", fields.Everything(), &Node{})
}

// Pods is the informer of the Pods bound to this node: a large cluster does not stream every Pod to
// every node.
func (i *Informers) Pods() Informer {
	return i.informer(Pods, "", fields.OneTermEqualSelector("spec.nodeName", i.nodeName), &api.Pod{})
}

// Services is the informer of every Service, cached as the compact Service of this package.
func (i *Informers) Services() Informer {
	return i.informer(Services, "", fields.Everything(), &Service{})
}

// EndpointSlices is the informer of every EndpointSlice, cached as the compact EndpointSlice of
// this package.
func (i *Informers) EndpointSlices() Informer {
	return i.informer(EndpointSlices, "", fields.Everything(), &EndpointSlice{})
}

// ConfigMap is the informer of the one ConfigMap namespace/name: the agent's RBAC grants exactly
// that one.
func (i *Informers) ConfigMap(namespace, name string) Informer {
	return i.informer(ConfigMaps, namespace, fields.OneTermEqualSelector("metadata.name", name), &api.ConfigMap{})
}

func (i *Informers) informer(resource Resource, namespace string, fieldSelector fields.Selector, obj runtime.Object) Informer {
	i.mu.Lock()
	defer i.mu.Unlock()
	key := informerKey{resource: resource, namespace: namespace, fieldSelector: fieldSelector.String()}
	if informer, ok := i.informers[key]; ok {
		return informer
	}
	informer := newSyncInformer(i.api.ListerWatcher(resource, namespace, fieldSelector), obj, TrimForCache)
	i.informers[key] = informer
	return informer
}

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
	return registration{s.controller}, nil
}

func (s *syncInformer) GetStore() cache.Store     { return s.indexer }
func (s *syncInformer) GetIndexer() cache.Indexer { return s.indexer }
func (s *syncInformer) HasSynced() bool           { return synced(s.controller) }
func (s *syncInformer) IsStopped() bool           { return s.stopped.Load() }

func (s *syncInformer) RunWithContext(ctx context.Context) {
	s.controller.RunWithContext(ctx)
	s.stopped.Store(true)
}

// dispatch is the informer's one handler: it calls the registered ones.
type dispatch struct{ s *syncInformer }

func (d dispatch) OnAdd(obj any, isInInitialList bool) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	for _, h := range d.s.handlers {
		h.OnAdd(obj, isInInitialList)
	}
}

func (d dispatch) OnUpdate(oldObj, newObj any) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	for _, h := range d.s.handlers {
		h.OnUpdate(oldObj, newObj)
	}
}

func (d dispatch) OnDelete(obj any) {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	for _, h := range d.s.handlers {
		h.OnDelete(obj)
	}
}

// registration is a handler's: synced once the informer is, as the handler was given every
// object cached when it was added and is called for each one processed since.
type registration struct{ controller cache.Controller }

func (r registration) HasSynced() bool                     { return synced(r.controller) }
func (r registration) HasSyncedChecker() cache.DoneChecker { return r.controller.HasSyncedChecker() }

// Start starts every informer made since the last Start; they run until ctx is done.
func (i *Informers) Start(ctx context.Context) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.shuttingDown {
		return
	}
	for key, informer := range i.informers {
		if !i.started[key] {
			i.running.Go(func() { informer.RunWithContext(ctx) })
			i.started[key] = true
		}
	}
}

// Shutdown waits for the informers to stop (their context is done) and starts no more.
func (i *Informers) Shutdown() {
	i.mu.Lock()
	i.shuttingDown = true
	i.mu.Unlock()
	i.running.Wait()
}

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
