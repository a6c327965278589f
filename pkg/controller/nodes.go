package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// ReasonInvalidNetworkConfig is the reason of the Warning event recorded on a Node whose pod CIDR or
// VTEP annotations cannot be used.
const ReasonInvalidNetworkConfig = "InvalidNetworkConfig"

// ReasonCloudGatewayIsolated is the reason of the Warning event recorded on a cloud gateway node
// whose domain has no private line to any other domain: it cannot carry anything.
const ReasonCloudGatewayIsolated = "CloudGatewayIsolated"

// domainsKey is the queue key of the pass over domains_map, the local state and the host routes
// (no node is named so).
const domainsKey = "\x00domains"

// DomainModel is the domain configuration in force (DomainConfig).
type DomainModel interface {
	Model() *domain.Model
	HasSynced() bool
}

// errNotReady means a node has not published its pod CIDR or VTEP yet: nothing to do, nothing to report.
var errNotReady = errors.New("node network not published yet")

// LocalNode is this node as the agent configured it.
type LocalNode struct {
	Name        string
	NodeIP      netip.Addr   // this node's tunnel endpoint
	PodCIDR     netip.Prefix // this node's pod CIDR (ROUTE_LOCAL)
	ClusterCIDR netip.Prefix // peers' pod CIDRs must lie inside it
}

// NodeReconcilerConfig is what a NodeReconciler reads and writes.
type NodeReconcilerConfig struct {
	Local    LocalNode
	Informer cache.SharedIndexInformer // of Nodes
	Routes   RouteTable
	Nodes    NodeTable
	NextHop  NextHopResolver
	// Neighbours, optional, reports neighbours the kernel resolves, so that next hops are filled
	// as soon as they are known rather than at the next resync.
	Neighbours NeighbourWatcher
	Recorder   record.EventRecorder // events about this node (CloudGatewayIsolated)
	// ClusterRecorder records events about other nodes (InvalidNetworkConfig): in the agent, only
	// while it is the reporter (reporter.go). Nil: Recorder.
	ClusterRecorder record.EventRecorder
	Resync          time.Duration // full pass: re-resolves next hops and deletes stale entries
	Metrics         Metrics       // optional

	// Domains is the domain configuration; nil means the default model (every pool its own
	// domain, all pairs public).
	Domains DomainModel
	// DomainTable is domains_map; HostRoutes the kernel routes for unreachable or gatewayed pod
	// CIDRs; OnLocal receives this node's domain and gateway (node_cfg_map). All optional.
	DomainTable DomainTable
	HostRoutes  HostRoutes
	OnLocal     func(LocalState) error
	// NodeIndex receives the node set by name for edgeplanectl (optional).
	NodeIndex NodeIndex
}

// NodeReconciler keeps routes_map and nodes_map equal to the cluster's Nodes: a route per node pod
// CIDR toward that node's tunnel endpoint, and a node entry per tunnel endpoint with its VTEP MAC.
// A node whose configuration turns invalid keeps its last good entries and gets a Warning event.
type NodeReconciler struct {
	cfg    NodeReconcilerConfig
	lister corelisters.NodeLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	ready  chan struct{}

	mu     sync.Mutex
	peers  map[string]peer   // last good state by node name; what the maps must hold
	errs   map[string]string // last reported error by node name, so an event is recorded once
	pinned pinnedState       // map contents found at start, adopted for nodes that are invalid then
	local  localView         // this node's domain and labels, from its Node object
	state  LocalState        // last LocalState handed to OnLocal
	warned map[string]string // domain-level warnings in force by reason, so each is logged once
	// indexed is what NodeIndex last accepted; nil forces the next domains pass to write.
	indexed []NodeName
}

// localView is what the local Node object says about this node's place among the domains.
type localView struct {
	domain  string
	pool    string
	gateway bool
}

// peer is one node's desired map entries.
type peer struct {
	podCIDR netip.Prefix
	route   Route
	node    Node // unused for the local node
	// alias is the node's other tunnel address (its own underlay address when route.NodeIP is
	// its public-ip-overwrite, or the reverse), also keyed in nodes_map with the node's domain:
	// during a domain change a peer that has not applied it yet still sends from that address,
	// and node_ingress must know it as this node to answer it (bpf/lib/tunnel_unreach.h) instead
	// of dropping it as an unknown tunnel source. Invalid when the node has one address.
	alias   netip.Addr
	domain  string // its network domain
	pool    string // its node pool, for the name index
	gateway bool   // it carries the cloud gateway label
}

type pinnedState struct {
	routes map[netip.Prefix]Route
	nodes  map[netip.Addr]Node
}

// NewNodeReconciler registers its event handlers on the informer; Run starts it.
func NewNodeReconciler(cfg NodeReconcilerConfig) (*NodeReconciler, error) {
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	r := &NodeReconciler{
		cfg:    cfg,
		lister: corelisters.NewNodeLister(cfg.Informer.GetIndexer()),
		synced: cfg.Informer.HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: NodesController, MetricsProvider: queueMetrics(cfg.Metrics)}),
		ready: make(chan struct{}),
		peers: map[string]peer{},
		errs:  map[string]string{},

		warned: map[string]string{},
	}
	_, err := cfg.Informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: r.enqueue,
		UpdateFunc: func(old, obj any) {
			if networkChanged(old, obj) {
				r.enqueue(obj)
			}
		},
		// DeleteFunc below; labels (pool, gateway) are part of networkChanged.
		DeleteFunc: r.enqueue,
	})
	if err != nil {
		return nil, fmt.Errorf("adding node event handler: %w", err)
	}
	return r, nil
}

// networkChanged filters out the frequent Node status updates that cannot change the maps.
func networkChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*corev1.Node)
	n, ok2 := newObj.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	return !maps.Equal(o.Annotations, n.Annotations) || !maps.Equal(o.Labels, n.Labels) || o.Spec.PodCIDR != n.Spec.PodCIDR ||
		!slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) || !slices.Equal(o.Status.Addresses, n.Status.Addresses)
}

// Refresh re-reconciles every node and the domains: the domain configuration changed.
func (r *NodeReconciler) Refresh() {
	nodes, err := r.lister.List(labels.Everything())
	if err != nil {
		utilruntime.HandleError(err)
	}
	for _, n := range nodes {
		r.queue.Add(n.Name)
	}
	r.queue.Add(domainsKey)
}

func (r *NodeReconciler) model() *domain.Model {
	if r.cfg.Domains == nil {
		return domain.DefaultModel()
	}
	return r.cfg.Domains.Model()
}

// Ready is closed once the maps hold every node after start-up and stale entries are gone.
func (r *NodeReconciler) Ready() <-chan struct{} { return r.ready }

func (r *NodeReconciler) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	r.queue.Add(key)
}

// Run waits for the informer, programs every node, deletes stale entries, then follows changes
// until ctx is done. It returns early only if the informer never syncs, and never leaves a worker
// writing to the maps behind.
func (r *NodeReconciler) Run(ctx context.Context) error {
	var workers sync.WaitGroup
	defer workers.Wait()
	defer r.queue.ShutDown()
	synced := []cache.InformerSynced{r.synced}
	if r.cfg.Domains != nil {
		synced = append(synced, r.cfg.Domains.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return errors.New("node or domain configuration informer did not sync")
	}
	r.syncAll(ctx)
	close(r.ready)
	workers.Go(func() { wait.UntilWithContext(ctx, r.runWorker, time.Second) })
	if r.cfg.Neighbours != nil {
		workers.Go(func() {
			if err := r.cfg.Neighbours.WatchResolved(ctx, r.neighbourResolved); err != nil {
				klog.FromContext(ctx).Error(err, "Watching neighbours; next hops are resolved at each resync only")
			}
		})
	}
	ticker := time.NewTicker(r.cfg.Resync)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			r.resync(ctx)
		}
	}
}

// syncAll is the start-up pass: adopt what is pinned, reconcile every node, delete the rest.
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
	for _, n := range nodes {
		start := time.Now()
		err := r.reconcile(ctx, n.Name)
		observe(r.cfg.Metrics, NodesController, start, err)
		if err != nil {
			logger.Error(err, "Reconciling node; will retry", "node", n.Name)
			r.queue.AddRateLimited(n.Name)
		}
	}
	if err := r.reconcile(ctx, domainsKey); err != nil {
		logger.Error(err, "Programming domains and host routes; will retry")
		r.queue.AddRateLimited(domainsKey)
	}
	r.collectGarbage(ctx)
	r.mu.Lock()
	r.pinned = pinnedState{}
	r.mu.Unlock()
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
	r.mu.Unlock()
}

// resync re-queues every node (next hops may have been resolved or moved) and deletes stale entries.
func (r *NodeReconciler) resync(ctx context.Context) {
	nodes, err := r.lister.List(labels.Everything())
	if err != nil {
		klog.FromContext(ctx).Error(err, "Listing nodes")
		return
	}
	for _, n := range nodes {
		r.queue.Add(n.Name)
	}
	r.queue.Add(domainsKey)
	r.mu.Lock()
	r.indexed = nil // rewritten by that pass, in case the file was lost
	r.mu.Unlock()
	r.collectGarbage(ctx)
}

// neighbourResolved queues the peers a resolved neighbour may concern: every peer whose next hop
// is still unresolved (the neighbour may be its gateway), and the peer at ip when its next hop
// changed.
func (r *NodeReconciler) neighbourResolved(ip netip.Addr, mac net.HardwareAddr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, p := range r.peers {
		if p.route.Local {
			continue
		}
		if p.node.NextHopMAC == nil || (p.route.NodeIP == ip && !bytes.Equal(p.node.NextHopMAC, mac)) {
			r.queue.Add(name)
		}
	}
}

func (r *NodeReconciler) runWorker(ctx context.Context) {
	for r.processNext(ctx) {
	}
}

func (r *NodeReconciler) processNext(ctx context.Context) bool {
	return processNext(ctx, r.queue, r.cfg.Metrics, NodesController, "Reconciling node",
		func(name string) []any { return []any{"node", name} }, r.reconcile)
}

// reconcile makes the maps hold what the node named name asks for now.
func (r *NodeReconciler) reconcile(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch name {
	case domainsKey:
		return r.syncDomainsLocked(ctx)
	case r.cfg.Local.Name:
		return r.applyLocalLocked()
	}
	// Any change of a peer may change the gateway or a host route.
	defer r.queue.Add(domainsKey)
	node, err := r.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return r.forget(name)
	}
	if err != nil {
		return fmt.Errorf("getting node %s: %w", name, err)
	}
	want, err := r.desired(ctx, node)
	switch {
	case errors.Is(err, errNotReady):
		// Never published, or withdrawn (edgeplane-agent --uninstall removes its annotations):
		// either way no traffic may be tunnelled to it any more.
		return r.forget(name)
	case err != nil:
		r.reportInvalid(ctx, node, err)
		return nil
	}
	delete(r.errs, name)
	return r.apply(name, want)
}

// desired computes a peer's entries from its Node object.
func (r *NodeReconciler) desired(ctx context.Context, node *corev1.Node) (peer, error) {
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
	dom := m.DomainOf(node)
	pool, _ := m.PoolOf(node)
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
		podCIDR: cidr,
		alias:   alias,
		route:   Route{NodeIP: endpoint, Domain: id, Encap: EncapVXLAN},
		node:    Node{VTEPMAC: vtep.MAC, NextHopMAC: mac, Domain: id},
		domain:  dom,
		pool:    pool,
		gateway: domain.IsGateway(node),
	}, nil
}

// checkPodCIDR refuses a pod CIDR outside the cluster CIDR or overlapping another node's.
func (r *NodeReconciler) checkPodCIDR(name string, cidr netip.Prefix) error {
	if c := r.cfg.Local.ClusterCIDR; !c.Contains(cidr.Addr()) || cidr.Bits() < c.Bits() {
		return fmt.Errorf("pod CIDR %s is outside the cluster CIDR %s", cidr, c)
	}
	for other, p := range r.peers {
		if other != name && p.podCIDR.Overlaps(cidr) {
			return fmt.Errorf("pod CIDR %s overlaps node %s's pod CIDR %s", cidr, other, p.podCIDR)
		}
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
		pool, _ := r.model().PoolOf(node)
		view = localView{domain: r.model().DomainOf(node), pool: pool, gateway: domain.IsGateway(node)}
	} else if view.domain == "" {
		view.domain = domain.Default
	}
	if view != r.local {
		r.local = view
		for name := range r.peers {
			if name != l.Name {
				r.queue.Add(name)
			}
		}
		if nodes, err := r.lister.List(labels.Everything()); err == nil {
			for _, n := range nodes {
				r.queue.Add(n.Name)
			}
		}
		r.queue.Add(domainsKey)
	}
	return r.apply(l.Name, peer{
		podCIDR: l.PodCIDR, route: Route{NodeIP: l.NodeIP, Domain: domain.ID(view.domain), Local: true},
		domain: view.domain, pool: view.pool, gateway: view.gateway,
	})
}

// apply writes want for the node named name and removes what its previous state left unreferenced.
// It always writes, so an entry lost from a map comes back on the next pass. The node entry goes
// first so that a route never points at a missing node.
func (r *NodeReconciler) apply(name string, want peer) error {
	if err := r.writeDomain(want.domain); err != nil {
		return err
	}
	if !want.route.Local {
		if err := r.cfg.Nodes.Upsert(want.route.NodeIP, want.node); err != nil {
			return fmt.Errorf("writing node %s (%s): %w", name, want.route.NodeIP, err)
		}
	}
	if want.alias.IsValid() && !r.isPrimary(name, want.alias) {
		// Only recognised, never sent to: no next hop (the datapath asks the kernel).
		if err := r.cfg.Nodes.Upsert(want.alias, Node{VTEPMAC: want.node.VTEPMAC, Domain: want.node.Domain}); err != nil {
			return fmt.Errorf("writing node %s (%s, its other address): %w", name, want.alias, err)
		}
	}
	if err := r.cfg.Routes.Upsert(want.podCIDR, want.route); err != nil {
		return fmt.Errorf("writing route %s -> node %s: %w", want.podCIDR, name, err)
	}
	old, had := r.peers[name]
	r.peers[name] = want
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
	delete(r.peers, name)
	delete(r.errs, name)
	if err := r.release(name, old); err != nil {
		r.peers[name] = old // retry the removal
		return err
	}
	return nil
}

// isPrimary reports whether addr is the tunnel endpoint of a node other than name: an alias
// never takes the place of another node's entry.
func (r *NodeReconciler) isPrimary(name string, addr netip.Addr) bool {
	for n, p := range r.peers {
		if n != name && !p.route.Local && p.route.NodeIP == addr {
			return true
		}
	}
	return false
}

// nodeKeyUsed reports whether a node in r.peers keys addr in nodes_map (endpoint or alias).
func (r *NodeReconciler) nodeKeyUsed(addr netip.Addr) bool {
	for _, p := range r.peers {
		if (!p.route.Local && p.route.NodeIP == addr) || p.alias == addr {
			return true
		}
	}
	return false
}

// release deletes old's entries that no node in r.peers refers to any more.
func (r *NodeReconciler) release(name string, old peer) error {
	routeUsed := old.route.Local
	for _, p := range r.peers {
		routeUsed = routeUsed || p.podCIDR == old.podCIDR
	}
	if !routeUsed {
		if err := r.cfg.Routes.Delete(old.podCIDR); err != nil {
			return fmt.Errorf("deleting route %s of node %s: %w", old.podCIDR, name, err)
		}
	}
	if !old.route.Local && !r.nodeKeyUsed(old.route.NodeIP) {
		if err := r.cfg.Nodes.Delete(old.route.NodeIP); err != nil {
			return fmt.Errorf("deleting node %s (%s): %w", name, old.route.NodeIP, err)
		}
	}
	if old.alias.IsValid() && !r.nodeKeyUsed(old.alias) {
		if err := r.cfg.Nodes.Delete(old.alias); err != nil {
			return fmt.Errorf("deleting node %s (%s, its other address): %w", name, old.alias, err)
		}
	}
	return nil
}

// reportInvalid records a Warning event once per distinct error and, at start-up, adopts what the
// previous agent pinned for this node so that its pods stay reachable.
func (r *NodeReconciler) reportInvalid(ctx context.Context, node *corev1.Node, err error) {
	if r.errs[node.Name] != err.Error() {
		r.errs[node.Name] = err.Error()
		klog.FromContext(ctx).Error(err, "Ignoring node network configuration; keeping its last good state", "node", node.Name)
		r.recordInvalidLocked(node, err.Error())
	}
	if _, had := r.peers[node.Name]; had {
		return
	}
	if p, ok := r.adoptPinned(node); ok {
		r.peers[node.Name] = p
	}
}

func (r *NodeReconciler) adoptPinned(node *corev1.Node) (peer, bool) {
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
	if err := deleteStale(r.cfg.Routes.List, r.cfg.Routes.Delete, routes); err != nil {
		logger.Error(err, "Deleting stale routes")
	}
	if err := deleteStale(r.cfg.Nodes.List, r.cfg.Nodes.Delete, nodes); err != nil {
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
