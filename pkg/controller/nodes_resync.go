package controller

import (
	"bytes"
	"context"
	"net/netip"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
)

// The NodeReconciler's periodic pass and its view of the maps. The reconciler keeps what routes_map
// and nodes_map hold as it last listed them (at start-up, then at each periodic pass), with its own
// writes since, and writes an entry only when it differs from that: a Node event that changes
// nothing of a peer's entries, the events queued by the informer's initial list after the
// start-up pass, and the periodic pass of an idle cluster write nothing (no map write per Node
// every period, and nothing for the snapshot, which pkg/agent rewrites after any write). An
// entry lost from a map (deleted by hand, a map replaced) is written again by the next periodic
// pass, which lists the maps again.

// listedMaps is routes_map and nodes_map as last listed, with the reconciler's writes since.
type listedMaps struct {
	routes map[netip.Prefix]Route
	nodes  map[netip.Addr]Node
}

// resync lists the maps, reconciles every node in one batch (next hops may have been resolved or
// moved), then queues the domains pass and deletes
// stale entries.
func (r *NodeReconciler) resync(ctx context.Context) {
	logger := klog.FromContext(ctx)
	nodes, err := r.lister.List(labels.Everything())
	if err != nil {
		logger.Error(err, "Listing nodes")
		return
	}
	routes, routesErr := r.cfg.Routes.List()
	entries, nodesErr := r.cfg.Nodes.List()
	r.mu.Lock()
	r.listed = nil // unknown: write everything
	if routesErr == nil && nodesErr == nil {
		r.listed = &listedMaps{routes: routes, nodes: entries}
	}
	r.indexed = nil    // rewritten by the domains pass, in case the file was lost
	r.hostSynced = nil // synced by the domains pass, in case a route was removed
	r.mu.Unlock()
	r.reconcileAll(ctx, nodes)
	r.queue.Add(domainsKey)
	r.collectGarbage(ctx)
}

// upsertRoute and upsertNode write an entry unless the maps hold it with that value already.
func (r *NodeReconciler) upsertRoute(cidr netip.Prefix, route Route) error {
	if l := r.listed; l != nil {
		if have, ok := l.routes[cidr]; ok && have == route {
			return nil
		}
	}
	if err := r.cfg.Routes.Upsert(cidr, route); err != nil {
		return err
	}
	if l := r.listed; l != nil {
		l.routes[cidr] = route
	}
	return nil
}

func (r *NodeReconciler) upsertNode(addr netip.Addr, n Node) error {
	if l := r.listed; l != nil {
		if have, ok := l.nodes[addr]; ok && sameNode(have, n) {
			return nil
		}
	}
	if err := r.cfg.Nodes.Upsert(addr, n); err != nil {
		return err
	}
	if l := r.listed; l != nil {
		l.nodes[addr] = n
	}
	return nil
}

func (r *NodeReconciler) deleteRoute(cidr netip.Prefix) error {
	if l := r.listed; l != nil {
		delete(l.routes, cidr)
	}
	return r.cfg.Routes.Delete(cidr)
}

func (r *NodeReconciler) deleteNode(addr netip.Addr) error {
	if l := r.listed; l != nil {
		delete(l.nodes, addr)
	}
	return r.cfg.Nodes.Delete(addr)
}

// sameNode: an unresolved next hop (nil) reads back from nodes_map as nil as well.
func sameNode(a, b Node) bool {
	return a.Domain == b.Domain && bytes.Equal(a.VTEPMAC, b.VTEPMAC) && bytes.Equal(a.NextHopMAC, b.NextHopMAC)
}
