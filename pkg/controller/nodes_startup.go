package controller

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// The NodeReconciler's start-up pass and garbage collection: adopt what a previous agent pinned
// for nodes that are invalid now, then delete the entries no node refers to.

// syncAll is the start-up pass: adopt what is pinned, reconcile every node, delete the rest; then
// the events held since the reconciler was made (add) that named a node after its reconcile here
// are queued, and events queue directly.
func (r *NodeReconciler) syncAll(ctx context.Context) {
	logger := klog.FromContext(ctx)
	r.loadPinned(ctx)
	if err := r.applyLocal(); err != nil {
		logger.Error(err, "Programming the local pod CIDR route; will retry")
		r.queue.AddRateLimited(r.cfg.Local.Name)
	}
	nodes, err := r.lister.List(labels.Everything())
	if err != nil {
		logger.Error(err, "Listing nodes")
	}
	r.reconcileAll(ctx, nodes)
	r.passing(domainsKey)
	if err := r.reconcile(ctx, domainsKey); err != nil {
		logger.Error(err, "Programming domains and host routes; will retry")
		r.queue.AddRateLimited(domainsKey)
	}
	r.collectGarbage(ctx)
	r.mu.Lock()
	r.pinned = pinnedState{}
	r.mu.Unlock()
	r.endEarly()
}

func (r *NodeReconciler) loadPinned(ctx context.Context) {
	routes, err := r.cfg.Routes.List()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Listing pinned routes")
	}
	nodes, err := r.cfg.Nodes.List()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Listing pinned nodes")
	}
	r.mu.Lock()
	r.pinned = pinnedState{routes: routes, nodes: nodes}
	r.listed = nil // unknown: write everything
	if routes != nil && nodes != nil {
		r.listed = newListedMaps(r.seed, nil)
		for cidr, route := range routes {
			r.listed.routes.Set(cidr, r.listed.routeDigest(route))
		}
		for addr, n := range nodes {
			r.listed.nodes.Set(addr, r.listed.nodeDigest(n))
		}
	}
	r.mu.Unlock()
}

func (r *NodeReconciler) adoptPinned(node *k8s.Node) (peer, bool) {
	cidr, ok, err := k8s.NodePodCIDR(node)
	if err != nil || !ok || r.checkPodCIDR(node.Name, cidr) != nil {
		return peer{}, false
	}
	route, ok := r.pinned.routes[cidr]
	if !ok || route.Local {
		return peer{}, false
	}
	n, ok := r.pinned.nodes[route.NodeIP]
	if !ok {
		return peer{}, false
	}
	return peer{podCIDR: cidr, route: route, node: n}, true
}

// collectGarbage deletes map entries that belong to no node.
func (r *NodeReconciler) collectGarbage(ctx context.Context) {
	logger := klog.FromContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	routes, nodes := map[netip.Prefix]bool{}, map[netip.Addr]bool{}
	for _, p := range r.peers {
		routes[p.podCIDR] = true
		if !p.route.Local {
			nodes[p.route.NodeIP] = true
		}
		if p.alias.IsValid() {
			nodes[p.alias] = true
		}
	}
	if err := deleteStale(r.cfg.Routes.List, r.deleteRoute, routes); err != nil {
		logger.Error(err, "Deleting stale routes")
	}
	if err := deleteStale(r.cfg.Nodes.List, r.deleteNode, nodes); err != nil {
		logger.Error(err, "Deleting stale nodes")
	}
}

// deleteStale deletes every listed key that keep does not hold.
func deleteStale[K comparable, V any](list func() (map[K]V, error), del func(K) error, keep map[K]bool) error {
	have, err := list()
	if err != nil {
		return err
	}
	var errs []error
	for k := range have {
		if !keep[k] {
			errs = append(errs, del(k))
		}
	}
	return errors.Join(errs...)
}

// reconcileAll reconciles each of nodes in turn, in one pass rather than through the queue; a
// node that fails is queued for a retry.
func (r *NodeReconciler) reconcileAll(ctx context.Context, nodes []*k8s.Node) {
	logger := klog.FromContext(ctx)
	for _, n := range nodes {
		start := time.Now()
		r.passing(n.Name)
		err := r.reconcile(ctx, n.Name)
		observe(r.cfg.Metrics, NodesController, start, err)
		if err != nil {
			logger.Error(err, "Reconciling node; will retry", "node", n.Name)
			r.queue.AddRateLimited(n.Name)
		}
	}
}
