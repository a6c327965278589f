package k8s

import (
	"context"
	"sync"

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
