package controller

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// The ServiceReconciler's event handlers: which Services a change of a Service, an EndpointSlice
// or a Node queues, the EndpointSlice index they keep, and the view of the nodes they invalidate.

// sliceServiceKey is the key ("namespace/name") of an EndpointSlice's Service, "" for none, as
// the cache holds the slice (k8s.EndpointSlice, the informers' transform) or whole (tests).
func sliceServiceKey(obj any) string {
	var ns, name string
	switch s := obj.(type) {
	case *k8s.EndpointSlice:
		ns, name = s.Namespace, s.ServiceName
	case *api.EndpointSlice:
		ns, name = s.Namespace, s.Labels[api.LabelServiceName]
	}
	if name == "" {
		return ""
	}
	return ns + "/" + name
}

func (r *ServiceReconciler) enqueueService(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	r.add(key)
}

// add queues key, or holds it until the start-up pass is over (startupHold).
func (r *ServiceReconciler) add(key string)     { r.early.add(r.queue, key) }
func (r *ServiceReconciler) passing(key string) { r.early.passing(key) }
func (r *ServiceReconciler) endEarly()          { r.early.release(r.queue) }

// sliceChanged keeps the slice indexes and queues the Services of a slice that was added (old
// nil), updated, or deleted (obj nil).
func (r *ServiceReconciler) sliceChanged(old, obj any) {
	for _, svc := range r.indexSlice(old, obj) {
		r.add(svc)
	}
}

// indexSlice keeps slicesOf and nodesOf for a slice that was added (old nil), updated, or
// deleted (obj nil), and returns the keys of the Services it concerns.
func (r *ServiceReconciler) indexSlice(old, obj any) []string {
	oldSvc, oldSlice := sliceOf(old)
	svc, slice := sliceOf(obj)
	r.nodesOf.move(oldSvc, sliceNodes(old), svc, sliceNodes(obj))
	var queue []string
	if oldSvc != "" && (oldSvc != svc || !sameSlice(oldSlice, slice)) {
		r.slicesOf.remove(oldSvc, oldSlice)
		queue = append(queue, oldSvc)
	}
	if svc != "" {
		if obj != nil {
			r.slicesOf.put(svc, slice)
		}
		queue = append(queue, svc)
	}
	return queue
}

// sliceOf is the key of an EndpointSlice's Service ("" for none) and the slice, unwrapped from
// a DeletedFinalStateUnknown.
func sliceOf(obj any) (svc string, slice any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if obj == nil {
		return "", nil
	}
	if svc = sliceServiceKey(obj); svc == "" {
		return "", nil
	}
	return svc, obj
}

// sliceName is an EndpointSlice's namespace and name.
func sliceName(obj any) (namespace, name string) {
	switch s := obj.(type) {
	case *k8s.EndpointSlice:
		return s.Namespace, s.Name
	case *api.EndpointSlice:
		return s.Namespace, s.Name
	}
	return "", ""
}

// sameSlice reports whether a and b are the same EndpointSlice (namespace and name), in any
// version.
func sameSlice(a, b any) bool {
	an, a1 := sliceName(a)
	bn, b1 := sliceName(b)
	return an == bn && a1 == b1
}

// sliceIndex is the EndpointSlices of each Service, "namespace/service name" (label
// kubernetes.io/service-name) -> the slices as their last event gave them (the cache's
// objects: the index holds no copy, not even of their keys, which were ~0.5 MB at 10,000
// slices), kept by the slice event handler. A Service's one slice, as most have, is the map's
// value itself; more are a *[]any. A client-go index would hold a set (a map) of keys per
// Service: ~150 bytes more a Service, 1.5 MiB at 10,000. It may lag the cache by an event: the
// event then queues the Service again.
type sliceIndex struct {
	mu    sync.Mutex
	bySvc map[string]any
}

// held is a copy of what bySvc holds for svc, as a list.
func (x *sliceIndex) held(svc string) []any {
	switch v := x.bySvc[svc].(type) {
	case nil:
		return nil
	case *[]any:
		return slices.Clone(*v)
	default:
		return []any{v}
	}
}

// hold makes svc's slices held; a list it is given is not changed afterwards.
func (x *sliceIndex) hold(svc string, held []any) {
	switch len(held) {
	case 0:
		delete(x.bySvc, svc)
	case 1:
		x.bySvc[svc] = held[0]
	default:
		x.bySvc[svc] = &held
	}
}

// put adds slice to svc's, or replaces the version it holds.
func (x *sliceIndex) put(svc string, slice any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.bySvc == nil {
		x.bySvc = map[string]any{}
	}
	held := x.held(svc)
	if i := slices.IndexFunc(held, func(o any) bool { return sameSlice(o, slice) }); i >= 0 {
		held[i] = slice
	} else {
		held = append(held, slice)
	}
	x.hold(svc, held)
}

// remove drops slice (any version of it) from svc's.
func (x *sliceIndex) remove(svc string, slice any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.hold(svc, slices.DeleteFunc(x.held(svc), func(o any) bool { return sameSlice(o, slice) }))
}

// get is a copy of the Service's slices.
func (x *sliceIndex) get(svc string) []any {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.held(svc)
}

// each calls fn with each slice of svc, under the index's lock: fn must not call back.
func (x *sliceIndex) each(svc string, fn func(any)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	switch v := x.bySvc[svc].(type) {
	case nil:
	case *[]any:
		for _, o := range *v {
			fn(o)
		}
	default:
		fn(v)
	}
}

func (r *ServiceReconciler) model() *domain.Model {
	if r.cfg.Domains == nil {
		return domain.DefaultModel()
	}
	return r.cfg.Domains.Model()
}

func (r *ServiceReconciler) poolLabel() string { return r.model().PoolLabel() }

// placementChanged filters Node updates down to those that move a node: its pool or zone label,
// or its pod CIDR (where its pods are, for reachability).
func (r *ServiceReconciler) placementChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*k8s.Node)
	n, ok2 := newObj.(*k8s.Node)
	if !ok1 || !ok2 {
		return true
	}
	pool := r.poolLabel()
	if o.Labels.Get(pool) != n.Labels.Get(pool) || o.Labels.Get(service.ZoneLabel) != n.Labels.Get(service.ZoneLabel) {
		return true
	}
	oldCIDR, _, _ := k8s.NodePodCIDR(o)
	newCIDR, _, _ := k8s.NodePodCIDR(n)
	return oldCIDR != newCIDR
}

// localDomain is this node's network domain, as the node reconciler places it: the default
// domain while its Node object is not known.
func (r *ServiceReconciler) localDomain(m *domain.Model) string {
	if n, err := r.nodes.Get(r.cfg.NodeName); err == nil {
		return m.DomainOf(n.Labels)
	}
	return domain.Default
}

// nodeAdded is the Node add handler. A Node of the informers' initial list is no change: the
// start-up pass, after every cache synced, builds the node view from the whole cache once
// (without this, 5,000 Nodes' adds would each cost something of every Service or node).
func (r *ServiceReconciler) nodeAdded(obj any, initial bool) {
	if !initial {
		r.nodeChanged(obj)
	}
}

// nodeUpdated is the Node update handler: only moves count (placementChanged).
func (r *ServiceReconciler) nodeUpdated(oldObj, obj any) {
	if r.placementChanged(oldObj, obj) {
		r.nodeChanged(obj)
	}
}

// nodeChanged places a node that came, went or moved in the node view and requeues the
// Services it can change: all of them when it is this node (its pool decides NodePort
// isolation, topology and which domains it reaches, its zone trafficDistribution), else those
// with endpoints on it (nodesOf): whether this node reaches them, and their pool for a
// topology. The node is marked for the view before the index is read: a Service whose slice
// names the node after that is queued by its slice event, and its reconcile places the node.
func (r *ServiceReconciler) nodeChanged(obj any) {
	var name string
	switch o := obj.(type) {
	case cache.DeletedFinalStateUnknown:
		name = o.Key // a Node's key is its name
	case *k8s.Node:
		name = o.Name
	default:
		return
	}
	if name == r.cfg.NodeName {
		r.nodeDirty.Store(true)
		for _, s := range r.services.List() {
			r.work.services.Add(1)
			r.enqueueService(s)
		}
		return
	}
	r.moved.add(name)
	for _, key := range r.nodesOf.servicesOn(name) {
		r.work.services.Add(1)
		r.add(key)
	}
}

// clusterLocked is the view of the nodes: built whole for the start-up pass and after this node
// moved or the domain configuration changed (nodeDirty), else brought up to date by placing the
// nodes that changed since (moved), each read from the cache once however many events it had.
func (r *ServiceReconciler) clusterLocked() *service.Cluster {
	full := r.nodeDirty.Swap(false) || r.cluster == nil
	moved := r.moved.take() // before reading the cache: a later change marks its node again
	if !full && len(moved) == 0 {
		return r.cluster
	}
	m := r.model()
	local := r.localDomain(m)
	changed := false
	if full {
		nodes, err := r.nodes.List(labels.Everything())
		if err != nil {
			utilruntime.HandleError(err)
		}
		r.work.viewBuilds.Add(1)
		r.work.viewNodes.Add(int64(len(nodes)))
		c := service.NewCluster(r.cfg.NodeName, k8s.LabelsOfNodes(nodes), m.PoolLabel())
		for _, n := range nodes {
			if n.Name == r.cfg.NodeName || m.Reachable(local, m.DomainOf(n.Labels)) {
				continue
			}
			if cidr, ok, err := k8s.NodePodCIDR(n); err == nil && ok {
				c.SetUnreachable(n.Name, cidr)
			}
		}
		changed = (r.cluster == nil && c.UnreachableCount() > 0) || (r.cluster != nil && !r.cluster.SameUnreachable(c))
		r.cluster = c
	} else {
		for name := range moved {
			r.work.viewNodes.Add(1)
			n, err := r.nodes.Get(name)
			if err != nil {
				changed = r.cluster.Remove(name) || changed // deleted
				continue
			}
			pool, _ := m.PoolOf(n.Labels)
			cidr, hasPods, err := k8s.NodePodCIDR(n)
			unreachable := err == nil && hasPods && !m.Reachable(local, m.DomainOfPool(pool))
			changed = r.cluster.Place(name, pool, unreachable, cidr) || changed
		}
	}
	if changed {
		klog.Background().Info("Service backends on nodes this node cannot reach are left out",
			"domain", local, "unreachableNodes", r.cluster.UnreachableCount())
	}
	return r.cluster
}
