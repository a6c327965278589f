package controller

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// The NodeReconciler's domains pass: domains_map, this node's LocalState (its domain and cloud
// gateway), the kernel host routes toward other domains, the node name index and the domain-level
// warnings.

// writeDomain writes the domains_map entry of the domain a route is about to name, so that a
// route never refers to a domain the datapath does not know (which it would treat as unreachable),
// unless the table holds it already as the last domains pass listed it or a write left it.
func (r *NodeReconciler) writeDomain(name string) error {
	if r.cfg.DomainTable == nil || name == "" {
		return nil
	}
	local := r.local.domain
	if local == "" {
		local = domain.Default
	}
	d := Domain{Name: name, Reachable: r.model().Reachable(local, name), Local: name == local}
	id := domain.ID(name)
	if have, ok := r.domainsWritten[id]; ok && have == d {
		return nil
	}
	if err := r.cfg.DomainTable.Upsert(id, d); err != nil {
		return fmt.Errorf("writing domain %s: %w", name, err)
	}
	if r.domainsWritten == nil {
		r.domainsWritten = map[uint32]Domain{}
	}
	r.domainsWritten[id] = d
	return nil
}

// syncDomainsLocked is the pass over everything that depends on the set of domains and nodes as a
// whole: domains_map (every domain a node or the configuration names; stale ones deleted), this
// node's LocalState (its domain, its domain's cloud gateway) and the kernel routes for peers'
// pod CIDRs.
func (r *NodeReconciler) syncDomainsLocked(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	r.syncIndexLocked(ctx)
	m := r.model()
	local := r.local.domain
	if local == "" {
		local = domain.Default
	}
	names := append(m.Configured(), local)
	for d := range r.index.domains {
		names = append(names, d)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if names[0] == "" {
		names = names[1:]
	}
	var errs []error
	if err := domain.CheckIDs(names); err != nil {
		r.warnOnce(nil, warnDomainIDs, err.Error())
		errs = append(errs, err)
	} else {
		r.clearWarning(warnDomainIDs)
	}
	if r.cfg.DomainTable != nil {
		// What the table holds now: an entry lost or changed is written again.
		have, err := r.cfg.DomainTable.List()
		errs = append(errs, err)
		r.domainsWritten = have
		want := map[uint32]bool{}
		for _, n := range names {
			want[domain.ID(n)] = true
			errs = append(errs, r.writeDomain(n))
		}
		for id := range have {
			if !want[id] {
				errs = append(errs, r.cfg.DomainTable.Delete(id))
				delete(r.domainsWritten, id)
			}
		}
	}

	state := LocalState{Domain: local, DomainID: domain.ID(local)}
	gw, gwPeer, ok := r.gateway(local)
	switch {
	case !ok:
	case gw == r.cfg.Local.Name:
		state.IsGateway = true
	default:
		state.Gateway = gwPeer.route.NodeIP
	}
	isolated := state.IsGateway && !slices.ContainsFunc(names, func(n string) bool { return n != local && m.Reachable(local, n) })
	if isolated {
		msg := fmt.Sprintf("this node is the cloud gateway of domain %s, but no other domain has a private line to it "+
			"(connectivity is public): the gateway cannot carry cloud hosts' traffic to edge pods", local)
		r.warnOnce(r.localNodeObject(), ReasonCloudGatewayIsolated, msg)
	} else if r.clearWarning(ReasonCloudGatewayIsolated) {
		logger.Info("This node's domain has a private line again (or it is no cloud gateway any more): no longer isolated",
			"reason", ReasonCloudGatewayIsolated)
	}
	if state != r.state && r.cfg.OnLocal != nil {
		if err := r.cfg.OnLocal(state); err != nil {
			errs = append(errs, fmt.Errorf("writing local domain state: %w", err))
		} else {
			via := "none"
			if state.Gateway.IsValid() {
				via = state.Gateway.String()
			}
			logger.Info("Network domain", "domain", state.Domain, "id", state.DomainID,
				"cloudGateway", state.IsGateway, "via", via)
			r.state = state
		}
	} else if r.cfg.OnLocal == nil {
		r.state = state
	}
	if r.cfg.HostRoutes != nil {
		// Synced again only when they change, or at the periodic pass (which clears hostSynced, in
		// case a route was removed by hand): listing thousands of kernel routes after every
		// Node event cost more than the event.
		want := r.hostRoutes(m, local, state)
		if digest := r.digestHostRoutes(want); r.hostSynced == nil || *r.hostSynced != digest {
			err := r.cfg.HostRoutes.Sync(want) // it may change want
			errs = append(errs, err)
			r.hostSynced = nil
			if err == nil {
				r.hostSynced = &digest
			}
		}
	}
	return errors.Join(errs...)
}

// syncIndexLocked hands the node set to NodeIndex when it differs from what it last accepted. The
// domains pass runs after every change of a peer, so this is "after each change". A failure is
// logged, not returned: the index only names things for edgeplanectl, and the next pass retries.
func (r *NodeReconciler) syncIndexLocked(ctx context.Context) {
	if r.cfg.NodeIndex == nil {
		return
	}
	entries := make([]NodeName, 0, len(r.peers))
	for name, p := range r.peers {
		entries = append(entries, NodeName{Name: name, NodeIP: p.route.NodeIP, PodCIDR: p.podCIDR,
			Pool: p.pool, Domain: p.domain, Local: p.route.Local})
	}
	slices.SortFunc(entries, func(a, b NodeName) int { return strings.Compare(a.Name, b.Name) })
	digest := r.digestNames(entries)
	if r.indexed != nil && *r.indexed == digest {
		return
	}
	if err := r.cfg.NodeIndex.Sync(entries); err != nil {
		klog.FromContext(ctx).Error(err, "Writing the node name index for edgeplanectl; retrying at the next change or resync")
		r.indexed = nil
		return
	}
	r.indexed = &digest
}

// digestNames is a 64-bit digest of the sorted entries: equal lists have equal digests, and
// different ones (a node added, renamed, moved) differ but with a chance of 2^-64.
func (r *NodeReconciler) digestNames(entries []NodeName) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	for _, e := range entries {
		maphash.WriteComparable(&h, e)
	}
	return h.Sum64()
}

// digestHostRoutes is a 64-bit digest of routes, whatever the map's order: the sum of its
// entries' hashes, and its length.
func (r *NodeReconciler) digestHostRoutes(routes map[netip.Prefix]netdev.HostRoute) uint64 {
	type entry struct {
		dst   netip.Prefix
		route netdev.HostRoute
	}
	sum := uint64(len(routes))
	for dst, route := range routes {
		sum += maphash.Comparable(r.seed, entry{dst, route})
	}
	return sum
}

// gateway is the cloud gateway of domain dom: of its nodes carrying the label, the first by name
// (one carries the traffic; the others stand by and take over when its label goes).
func (r *NodeReconciler) gateway(dom string) (string, peer, bool) {
	var names []string
	for name := range r.index.gateways {
		if r.peers[name].domain == dom {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "", peer{}, false
	}
	slices.Sort(names)
	return names[0], r.peers[names[0]], true
}

// hostRoutes are the kernel routes for peers outside this node's domain: "unreachable" toward
// domains without a private line, so host sockets fail at once and forwarded cloud-host traffic
// gets ICMP from the kernel; through the domain's cloud gateway otherwise, when that is another
// node (the gateway itself forwards into the overlay through the cluster route).
func (r *NodeReconciler) hostRoutes(m *domain.Model, local string, state LocalState) map[netip.Prefix]netdev.HostRoute {
	want := make(map[netip.Prefix]netdev.HostRoute, r.hostRouteCount) // as many as last time, most likely
	for name, p := range r.peers {
		if name == r.cfg.Local.Name || p.route.Local || p.domain == local {
			continue
		}
		switch {
		case !m.Reachable(local, p.domain):
			want[p.podCIDR] = netdev.HostRoute{Unreachable: true}
		case state.Gateway.IsValid():
			want[p.podCIDR] = netdev.HostRoute{Via: state.Gateway}
		}
	}
	r.hostRouteCount = len(want)
	return want
}

func (r *NodeReconciler) localNodeObject() *k8s.Node {
	n, err := r.lister.Get(r.cfg.Local.Name)
	if err != nil {
		return nil
	}
	return n
}

// warnDomainIDs keys the warning about colliding domain IDs in NodeReconciler.warned.
const warnDomainIDs = "DomainIDCollision"

// warnOnce logs msg at Warning level (and records an event on obj when there is one) unless it is
// the warning of this reason already in force: a condition is reported when it starts or its
// message changes, and again after it cleared (clearWarning) and came back.
func (r *NodeReconciler) warnOnce(obj *k8s.Node, reason, msg string) {
	if r.warned[reason] == msg {
		return
	}
	r.warned[reason] = msg
	klog.Warningf("%s (reason %s)", msg, reason)
	if obj != nil && r.cfg.Recorder != nil {
		r.cfg.Recorder.Event(obj.Ref(), api.EventTypeWarning, reason, msg)
	}
}

// clearWarning forgets the warning of reason: its condition is over. It reports whether there was one.
func (r *NodeReconciler) clearWarning(reason string) bool {
	_, had := r.warned[reason]
	delete(r.warned, reason)
	return had
}
