package controller

import (
	"fmt"
	"sync"
	"sync/atomic"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// RouteModeView is this node's view of its domain's routing (domain.NodeRouting): the domain's
// encapsulation and, in route mode, whether this node speaks BGP and to which peers. It follows
// the local Node object (pool and speaker labels) and the domain configuration, logs each change,
// and hands it to the listeners registered with OnChange, the BGP speaker and the route-mode
// datapath to come (issue 16). It writes nothing itself.
//
// There is no view until both the domain configuration synced and the local Node was seen: a
// route-mode node must not look like a vxlan node of the default domain for the moment its
// informers take at start (a speaker would withdraw and re-advertise). A deleted Node keeps the
// last view.
type RouteModeView struct {
	nodeName string
	lister   *k8s.NodeLister
	domains  DomainModel // nil: the default model

	view atomic.Pointer[domain.NodeRouting] // nil: not known yet

	mu        sync.Mutex // serialises Refresh, so listeners see changes in order
	listeners []func(domain.NodeRouting)
}

// NewRouteModeView registers on an informer of Nodes; domains is the configuration (nil: the
// default model, every domain vxlan). The agent calls Refresh once domains synced as well.
func NewRouteModeView(nodeName string, informer k8s.Informer, domains DomainModel) (*RouteModeView, error) {
	v := &RouteModeView{nodeName: nodeName, lister: k8s.NewNodeLister(informer.GetIndexer()), domains: domains}
	_, err := informer.AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: v.isLocal,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { v.Refresh() },
			UpdateFunc: func(_, _ any) { v.Refresh() },
		},
	})
	if err != nil {
		return nil, fmt.Errorf("adding node event handler for the route-mode view: %w", err)
	}
	return v, nil
}

func (v *RouteModeView) isLocal(obj any) bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*k8s.Node)
	return ok && n.Name == v.nodeName
}

// View is this node's routing as last computed; false until it is known.
func (v *RouteModeView) View() (domain.NodeRouting, bool) {
	p := v.view.Load()
	if p == nil {
		return domain.NodeRouting{}, false
	}
	return *p, true
}

// OnChange registers fn, called with the view (from an informer's goroutine, one call at a time)
// when it becomes known and whenever it changes. A view already known when fn is registered is
// handed to it at once: the Node informer may run before the agent registers its listeners, and
// a view that then does not change would never reach them.
func (v *RouteModeView) OnChange(fn func(domain.NodeRouting)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.listeners = append(v.listeners, fn)
	if known := v.view.Load(); known != nil {
		fn(*known)
	}
}

// Refresh recomputes the view from the local Node and the configuration in force; the agent
// calls it when the domain configuration changed.
func (v *RouteModeView) Refresh() {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := domain.DefaultModel()
	if v.domains != nil {
		if !v.domains.HasSynced() {
			return
		}
		m = v.domains.Model()
	}
	node, err := v.lister.Get(v.nodeName)
	if err != nil { // not seen yet, or deleted: keep what we have
		return
	}
	next := m.NodeRouting(node.Labels)
	if prev := v.view.Load(); prev != nil && prev.Equal(next) {
		return
	}
	v.view.Store(&next)
	peers := make([]string, 0, len(next.Peers))
	for _, p := range next.Peers {
		peers = append(peers, p.String())
	}
	klog.InfoS("Domain routing", "domain", next.Domain, "encapsulation", next.Encapsulation,
		"bgpSpeaker", next.Speaker, "advertiseNonSpeakers", next.AdvertiseNonSpeakers, "peers", peers)
	for _, fn := range v.listeners {
		fn(next)
	}
}
