package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// A peer's entries: from its Node object (pod CIDR, VTEP annotations, tunnel endpoint, next hop)
// to routes_map and nodes_map, written node entry first and released when no node refers to them.

// desired computes a peer's entries from its Node object.
func (r *NodeReconciler) desired(ctx context.Context, node *k8s.Node) (peer, error) {
	cidr, ok, err := k8s.NodePodCIDR(node)
	if err != nil {
		return peer{}, err
	}
	if !ok {
		return peer{}, errNotReady
	}
	if err := r.checkPodCIDR(node.Name, cidr); err != nil {
		return peer{}, err
	}
	vtep, err := k8s.NodeVTEP(node)
	if errors.Is(err, k8s.ErrNoVTEP) {
		return peer{}, errNotReady
	}
	if err != nil {
		return peer{}, err
	}
	// The tunnel endpoint is the address that reaches the node from here: its own underlay
	// address within a named domain (one L3 network) and across a private line (which routes
	// the domains' private addresses), else what Flannel would use: its public-ip-overwrite (a
	// NAT address) when set. Nodes in no pool are plain Kubernetes nodes that need not share a
	// network, as in Flannel.
	m := r.model()
	pool, _ := m.PoolOf(node.Labels)
	dom := m.DomainOfPool(pool)
	endpoint := vtep.Endpoint(m.Reachable(r.local.domain, dom) && !(dom == domain.Default && r.local.domain == domain.Default))
	id := domain.ID(dom)
	mac, err := r.cfg.NextHop.NextHop(endpoint)
	if err != nil {
		// Not fatal: without a next hop the datapath asks the kernel to resolve the neighbour.
		klog.FromContext(ctx).V(2).Info("Next hop not resolved", "node", node.Name, "ip", endpoint, "err", err)
		mac = nil
	}
	var alias netip.Addr
	for _, a := range []netip.Addr{vtep.LocalIP, vtep.IP} {
		if a.IsValid() && a != endpoint && a != r.cfg.Local.NodeIP {
			alias = a
		}
	}
	return peer{
		podCIDR:  cidr,
		alias:    alias,
		route:    Route{NodeIP: endpoint, Domain: id, Encap: r.encapTo(m, dom, node)},
		node:     Node{VTEPMAC: vtep.MAC, NextHopMAC: mac, Domain: id},
		domain:   dom,
		pool:     pool,
		gateway:  domain.IsGateway(node.Labels),
		from:     node,
		model:    m,
		localGen: r.localGen,
	}, nil
}

// encapTo is how pods reach the pods of peer node, in domain dom: without encapsulation between
// the nodes of one route-mode domain (its network routes the pod CIDRs, which the speakers
// advertise to its gateways), through VXLAN otherwise, across domains too: a private line carries
// the nodes' addresses, not necessarily the pod CIDRs of every domain (docs/domains.md, Route
// mode).
//
// Make before break: a speaking peer is sent to unencapsulated only once its speaker says its
// routers have its pod CIDR (k8s.RoutesAdvertisedAnnotation); until then, and from the moment
// its speaker is about to withdraw, through VXLAN, which every node keeps receiving in route
// mode. Without it, a domain switched to route mode would send to the gateway pods' packets for
// pod CIDRs the gateway has not learned yet (the speakers' first connection takes seconds).
func (r *NodeReconciler) encapTo(m *domain.Model, dom string, node *k8s.Node) Encap {
	if dom != r.local.domain || m.Encapsulation(dom) != domain.Route {
		return EncapVXLAN
	}
	if m.Speaks(node.Labels) && node.Annotations.Get(k8s.RoutesAdvertisedAnnotation) != dom {
		return EncapVXLAN
	}
	return EncapDirect
}

// checkPodCIDR refuses a pod CIDR outside the cluster CIDR or overlapping another node's.
func (r *NodeReconciler) checkPodCIDR(name string, cidr netip.Prefix) error {
	if c := r.cfg.Local.ClusterCIDR; !c.Contains(cidr.Addr()) || cidr.Bits() < c.Bits() {
		return fmt.Errorf("pod CIDR %s is outside the cluster CIDR %s", cidr, c)
	}
	if other, theirs, ok := r.index.overlapping(name, cidr); ok {
		return fmt.Errorf("pod CIDR %s overlaps node %s's pod CIDR %s", cidr, other, theirs)
	}
	return nil
}

func (r *NodeReconciler) applyLocal() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applyLocalLocked()
}

// applyLocalLocked writes this node's own route and follows its domain: when the local Node
// object moves to another domain (a pool label or the configuration changed), every peer's
// entries are recomputed, since reachability and tunnel endpoints are relative to it.
func (r *NodeReconciler) applyLocalLocked() error {
	l := r.cfg.Local
	view := r.local
	if node, err := r.lister.Get(l.Name); err == nil {
		m := r.model()
		pool, _ := m.PoolOf(node.Labels)
		view = localView{domain: m.DomainOfPool(pool), pool: pool, gateway: domain.IsGateway(node.Labels)}
	} else if view.domain == "" {
		view.domain = domain.Default
	}
	if view != r.local {
		r.local = view
		r.localGen++
		for name := range r.peers {
			if name != l.Name {
				r.add(name)
			}
		}
		if nodes, err := r.lister.List(labels.Everything()); err == nil {
			for _, n := range nodes {
				r.add(n.Name)
			}
		}
		r.add(domainsKey)
	}
	return r.apply(l.Name, peer{
		podCIDR: l.PodCIDR, route: Route{NodeIP: l.NodeIP, Domain: domain.ID(view.domain), Local: true},
		domain: view.domain, pool: view.pool, gateway: view.gateway,
	})
}

// apply writes want for the node named name and removes what its previous state left unreferenced.
// It writes what the maps do not hold as last listed (nodes_resync.go): an entry lost from a map
// comes back on the next periodic pass. The node entry goes
// first so that a route never points at a missing node.
func (r *NodeReconciler) apply(name string, want peer) error {
	if err := r.writeDomain(want.domain); err != nil {
		return err
	}
	if !want.route.Local {
		if err := r.upsertNode(want.route.NodeIP, want.node); err != nil {
			return fmt.Errorf("writing node %s (%s): %w", name, want.route.NodeIP, err)
		}
	}
	if want.alias.IsValid() && !r.isPrimary(name, want.alias) {
		// Only recognised, never sent to: no next hop (the datapath asks the kernel).
		if err := r.upsertNode(want.alias, Node{VTEPMAC: want.node.VTEPMAC, Domain: want.node.Domain}); err != nil {
			return fmt.Errorf("writing node %s (%s, its other address): %w", name, want.alias, err)
		}
	}
	if err := r.upsertRoute(want.podCIDR, want.route); err != nil {
		return fmt.Errorf("writing route %s -> node %s: %w", want.podCIDR, name, err)
	}
	old, had := r.peers[name]
	if had && samePeer(old, want) {
		// Nothing to index or release (a periodic pass, an event that changed nothing of it):
		// keep what it was derived from up to date.
		r.peers[name] = want
		return nil
	}
	r.work.indexed.Add(1)
	r.setPeer(name, want)
	if had {
		return r.release(name, old)
	}
	return nil
}

// forget removes a deleted node's entries.
func (r *NodeReconciler) forget(name string) error {
	old, had := r.peers[name]
	if !had {
		return nil
	}
	r.deletePeer(name)
	delete(r.errs, name)
	if err := r.release(name, old); err != nil {
		r.setPeer(name, old) // retry the removal
		return err
	}
	return nil
}

// isPrimary reports whether addr is the tunnel endpoint of a node other than name: an alias
// never takes the place of another node's entry.
func (r *NodeReconciler) isPrimary(name string, addr netip.Addr) bool {
	use, _ := r.index.byEndpoint.Get(addr)
	_, ok := use.primaries.otherThan(name)
	return ok
}

// nodeKeyUsed reports whether a node in r.peers keys addr in nodes_map (endpoint or alias).
func (r *NodeReconciler) nodeKeyUsed(addr netip.Addr) bool {
	use, _ := r.index.byEndpoint.Get(addr)
	return use.refs > 0
}

// release deletes old's entries that no node in r.peers refers to any more.
func (r *NodeReconciler) release(name string, old peer) error {
	if !old.route.Local && !r.routeUsed(old.podCIDR) {
		if err := r.deleteRoute(old.podCIDR); err != nil {
			return fmt.Errorf("deleting route %s of node %s: %w", old.podCIDR, name, err)
		}
	}
	if !old.route.Local && !r.nodeKeyUsed(old.route.NodeIP) {
		if err := r.deleteNode(old.route.NodeIP); err != nil {
			return fmt.Errorf("deleting node %s (%s): %w", name, old.route.NodeIP, err)
		}
	}
	if old.alias.IsValid() && !r.nodeKeyUsed(old.alias) {
		if err := r.deleteNode(old.alias); err != nil {
			return fmt.Errorf("deleting node %s (%s, its other address): %w", name, old.alias, err)
		}
	}
	return nil
}

// reportInvalid records a Warning event once per distinct error and, at start-up, adopts what the
// previous agent pinned for this node so that its pods stay reachable.
func (r *NodeReconciler) reportInvalid(ctx context.Context, node *k8s.Node, err error) {
	if r.errs[node.Name] != err.Error() {
		r.errs[node.Name] = err.Error()
		klog.FromContext(ctx).Error(err, "Ignoring node network configuration; keeping its last good state", "node", node.Name)
		r.recordInvalidLocked(node, err.Error())
	}
	if _, had := r.peers[node.Name]; had {
		return
	}
	if p, ok := r.adoptPinned(node); ok {
		r.setPeer(node.Name, p)
	}
}
