package controller

import (
	"bytes"
	"context"
	"errors"
	"hash/maphash"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/edgeplane/edgeplane/pkg/internal/ipmap"
	"github.com/edgeplane/edgeplane/pkg/k8s"
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

// listedMaps is routes_map and nodes_map as last listed, with the reconciler's writes since: a
// 64-bit digest of each entry's value by key (routeDigest, nodeDigest), not the values, which at
// 5,000 nodes were ~1.3 MB kept beside the peers that hold the same entries. Two different
// values share a digest with a probability of 2^-64; a write skipped for that reason would be
// made by the next change of the entry.
type listedMaps struct {
	seed   maphash.Seed
	routes ipmap.PrefixMap[uint64]
	nodes  ipmap.Map[uint64]
}

// newListedMaps is an empty listedMaps sized for as many entries as last time (last nil: none).
func newListedMaps(seed maphash.Seed, last *listedMaps) *listedMaps {
	var routes, nodes int
	if last != nil {
		routes, nodes = last.routes.Len(), last.nodes.Len()
	}
	return &listedMaps{seed: seed, routes: ipmap.NewPrefixMap[uint64](routes), nodes: ipmap.NewMap[uint64](nodes)}
}

func (l *listedMaps) routeDigest(route Route) uint64 { return maphash.Comparable(l.seed, route) }

// nodeDigest is equal for values sameNode finds equal.
func (l *listedMaps) nodeDigest(n Node) uint64 {
	return maphash.Comparable(l.seed, struct {
		vtep, nextHop string
		domain        uint32
	}{string(n.VTEPMAC), string(n.NextHopMAC), n.Domain})
}

// listMaps walks routes_map and nodes_map into a listedMaps; nil when either could not be read.
func (r *NodeReconciler) listMaps() (*listedMaps, error) {
	l := newListedMaps(r.seed, r.listed)
	if err := WalkTable(r.cfg.Routes, func(cidr netip.Prefix, route Route) { l.routes.Set(cidr, l.routeDigest(route)) }); err != nil {
		return nil, err
	}
	if err := WalkTable(r.cfg.Nodes, func(addr netip.Addr, n Node) { l.nodes.Set(addr, l.nodeDigest(n)) }); err != nil {
		return nil, err
	}
	return l, nil
}

// resync lists the maps, reconciles every node in one batch (next hops may have been resolved or
// moved), then queues the domains pass and deletes stale entries. A peer whose Node object,
// domain model and local view are those its entries were derived from is not derived again:
// only its next hop is resolved again, and its entries are written if the listing lacks them.
// Stale entries are found in the same listing, kept up to date with the pass's writes.
func (r *NodeReconciler) resync(ctx context.Context) {
	logger := klog.FromContext(ctx)
	nodes, err := r.lister.List(labels.Everything())
	if err != nil {
		logger.Error(err, "Listing nodes")
		return
	}
	r.work.passes.Add(1)
	r.mu.Lock()
	// Listed under the lock, so that no write falls between the listing and its use.
	listed, listErr := r.listMaps()
	if listErr != nil {
		logger.Error(listErr, "Listing routes_map and nodes_map; every entry is written")
	}
	r.listed = listed // nil: unknown, write everything
	if !isIntact(r.cfg.NodeIndex) {
		r.indexed = nil // rewritten by the domains pass: the file was lost or changed
	}
	if !isIntact(r.cfg.HostRoutes) {
		r.hostSynced = nil // synced by the domains pass, in case a route was removed
	}
	r.mu.Unlock()
	for _, n := range nodes {
		start := time.Now()
		refreshed, err := r.refresh(ctx, n)
		if !refreshed {
			err = r.reconcile(ctx, n.Name)
		}
		observe(r.cfg.Metrics, NodesController, start, err)
		if err != nil {
			logger.Error(err, "Reconciling node; will retry", "node", n.Name)
			r.queue.AddRateLimited(n.Name)
		}
	}
	r.queue.Add(domainsKey)
	if listErr != nil {
		r.collectGarbage(ctx)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectListedLocked(ctx)
}

// refresh re-applies the peer of node with its next hop resolved again when its entries were
// derived from this very object under the domain model and local view in force; false when
// node must be reconciled in full.
func (r *NodeReconciler) refresh(ctx context.Context, node *k8s.Node) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.peers[node.Name]
	if !ok || p.from != node || p.model != r.model() || p.localGen != r.localGen || p.route.Local {
		return false, nil
	}
	if _, invalid := r.errs[node.Name]; invalid {
		return false, nil
	}
	mac, err := r.cfg.NextHop.NextHop(p.route.NodeIP)
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Next hop not resolved", "node", node.Name, "ip", p.route.NodeIP, "err", err)
		mac = nil
	}
	if !bytes.Equal(mac, p.node.NextHopMAC) {
		p.node.NextHopMAC = mac
	}
	return true, r.apply(node.Name, p)
}

// collectListedLocked deletes the entries of the pass's listing that belong to no node, as
// collectGarbage does without listing the maps again.
func (r *NodeReconciler) collectListedLocked(ctx context.Context) {
	logger := klog.FromContext(ctx)
	l := r.listed
	if l == nil {
		return
	}
	var errs []error
	for cidr := range l.routes.All() {
		if !r.routeUsed(cidr) {
			errs = append(errs, r.deleteRoute(cidr))
		}
	}
	for addr := range l.nodes.All() {
		if !r.nodeKeyUsed(addr) {
			errs = append(errs, r.deleteNode(addr))
		}
	}
	if err := errors.Join(errs...); err != nil {
		logger.Error(err, "Deleting stale routes and nodes")
	}
}

// nodeResyncWork counts what the periodic pass cost, for the tests that hold an idle pass to
// what changed (nodes_scale_test.go): derivations of a peer's entries from its Node object, and
// changes of the peer set (index updates).
type nodeResyncWork struct {
	passes  atomic.Int64
	derived atomic.Int64
	indexed atomic.Int64
}

// upsertRoute and upsertNode write an entry unless the maps hold it with that value already.
func (r *NodeReconciler) upsertRoute(cidr netip.Prefix, route Route) error {
	var digest uint64
	if l := r.listed; l != nil {
		digest = l.routeDigest(route)
		if have, ok := l.routes.Get(cidr); ok && have == digest {
			return nil
		}
	}
	if err := r.cfg.Routes.Upsert(cidr, route); err != nil {
		return err
	}
	if l := r.listed; l != nil {
		l.routes.Set(cidr, digest)
	}
	return nil
}

func (r *NodeReconciler) upsertNode(addr netip.Addr, n Node) error {
	var digest uint64
	if l := r.listed; l != nil {
		digest = l.nodeDigest(n)
		if have, ok := l.nodes.Get(addr); ok && have == digest {
			return nil
		}
	}
	if err := r.cfg.Nodes.Upsert(addr, n); err != nil {
		return err
	}
	if l := r.listed; l != nil {
		l.nodes.Set(addr, digest)
	}
	return nil
}

func (r *NodeReconciler) deleteRoute(cidr netip.Prefix) error {
	if l := r.listed; l != nil {
		l.routes.Delete(cidr)
	}
	return r.cfg.Routes.Delete(cidr)
}

func (r *NodeReconciler) deleteNode(addr netip.Addr) error {
	if l := r.listed; l != nil {
		l.nodes.Delete(addr)
	}
	return r.cfg.Nodes.Delete(addr)
}

// sameNode: an unresolved next hop (nil) reads back from nodes_map as nil as well.
func sameNode(a, b Node) bool {
	return a.Domain == b.Domain && bytes.Equal(a.VTEPMAC, b.VTEPMAC) && bytes.Equal(a.NextHopMAC, b.NextHopMAC)
}
