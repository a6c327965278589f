package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
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
	Informer k8s.Informer // of Nodes
	Routes   RouteTable
	Nodes    NodeTable
	NextHop  NextHopResolver
	// Neighbours, optional, reports neighbours the kernel resolves, so that next hops are filled
	// as soon as they are known rather than at the next resync.
	Neighbours NeighbourWatcher
	Recorder   k8s.EventRecorder // events about this node (CloudGatewayIsolated)
	// ClusterRecorder records events about other nodes (InvalidNetworkConfig): in the agent, only
	// while it is the reporter (reporter.go). Nil: Recorder.
	ClusterRecorder k8s.EventRecorder
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
	lister *k8s.NodeLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	ready  chan struct{}

	mu     sync.Mutex
	peers  map[string]peer   // last good state by node name; what the maps must hold (setPeer, deletePeer)
	index  peerIndex         // peers by pod CIDR, tunnel endpoint, domain, gateway label
	errs   map[string]string // last reported error by node name, so an event is recorded once
	pinned pinnedState       // map contents found at start, adopted for nodes that are invalid then
	local  localView         // this node's domain and labels, from its Node object
	// localGen counts the changes of local: peers derived under another view are derived again.
	localGen uint64
	state    LocalState        // last LocalState handed to OnLocal
	warned   map[string]string // domain-level warnings in force by reason, so each is logged once
	// indexed is a digest of what NodeIndex last accepted (digestNames); nil forces the next
	// domains pass to write. A digest, not a copy: 5,000 entries would be half a megabyte kept
	// only to be compared.
	indexed *uint64
	// listed is what routes_map and nodes_map hold (nodes_resync.go); nil when not known.
	listed *listedMaps
	// hostSynced is a digest of the host routes last synced (digestHostRoutes); nil forces the next
	// domains pass to sync them. A digest, not the map: ~4,750 routes at 5,000 nodes would be a
	// megabyte kept only to be compared.
	hostSynced *uint64
	// hostRouteCount is how many host routes the last domains pass wanted: the next one's map is
	// made that size rather than grown to it.
	hostRouteCount int
	// seed keys the digests.
	seed maphash.Seed

	// early holds the keys events name until the start-up pass is over (startupHold).
	early *startupHold
	// domainsWritten is domains_map as the last domains pass listed it, with the writes since.
	domainsWritten map[uint32]Domain

	work nodeResyncWork // what the periodic pass cost, counted for the tests
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
	// from is the Node object (the informer cache's, which replaces it on every change) these
	// entries were derived from, under domain model model and local view localGen: while all
	// three are the same, the periodic pass only resolves the next hop again (nodes_resync.go).
	// Nil for the local node and for adopted pinned state.
	from     *k8s.Node
	model    *domain.Model
	localGen uint64
}

// samePeer reports whether a and b ask for the same map entries and index the same way.
func samePeer(a, b peer) bool {
	return a.podCIDR == b.podCIDR && a.route == b.route && sameNode(a.node, b.node) && a.alias == b.alias &&
		a.domain == b.domain && a.pool == b.pool && a.gateway == b.gateway
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
		lister: k8s.NewNodeLister(cfg.Informer.GetIndexer()),
		synced: cfg.Informer.HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: NodesController, MetricsProvider: queueMetrics(cfg.Metrics)}),
		ready: make(chan struct{}),
		peers: map[string]peer{},
		index: newPeerIndex(),
		errs:  map[string]string{},

		warned: map[string]string{},
		seed:   maphash.MakeSeed(),
		early:  newStartupHold(),
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
	o, ok1 := oldObj.(*k8s.Node)
	n, ok2 := newObj.(*k8s.Node)
	if !ok1 || !ok2 {
		return true
	}
	return !slices.Equal(o.Annotations, n.Annotations) || !o.Labels.Equal(n.Labels) || o.Spec.PodCIDR != n.Spec.PodCIDR ||
		!slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) || !slices.Equal(o.Status.Addresses, n.Status.Addresses)
}

// Refresh re-reconciles every node and the domains: the domain configuration changed.
func (r *NodeReconciler) Refresh() {
	nodes, err := r.lister.List(labels.Everything())
	if err != nil {
		utilruntime.HandleError(err)
	}
	for _, n := range nodes {
		r.add(n.Name)
	}
	r.add(domainsKey)
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
	r.add(key)
}

func (r *NodeReconciler) add(key string)     { r.early.add(r.queue, key) }
func (r *NodeReconciler) passing(key string) { r.early.passing(key) }
func (r *NodeReconciler) endEarly()          { r.early.release(r.queue) }

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
	defer r.endEarly() // if the informers never sync
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

// neighbourResolved queues the peers a resolved neighbour may concern: the peer at ip when its
// next hop changed, every peer whose next hop is still unresolved and may be ip (ip is the peer
// or its gateway), and, where the resolver keeps the hops (HopCache), every peer behind ip whose
// next hop is not mac (the gateway came back with another MAC: a router replaced, a failover
// without the same MAC; the periodic pass would have fixed them only at its next run). Where it
// keeps them, an unresolved peer whose hop is known to be another neighbour, or none (no route
// through the underlay), is left alone: a node of a cluster with thousands of peers it has no
// route to (other sites) queued them all whenever a neighbour was resolved anew (first seen, or
// after it failed: a lossy edge link), each a full reconcile.
func (r *NodeReconciler) neighbourResolved(ip netip.Addr, mac net.HardwareAddr) {
	hops, _ := r.cfg.NextHop.(HopCache)
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, p := range r.peers {
		if p.route.Local {
			continue
		}
		var hop netip.Addr
		known := false
		if hops != nil {
			hop, known = hops.CachedHop(p.route.NodeIP)
		}
		switch {
		case p.route.NodeIP == ip || (known && hop == ip): // its own next hop, or its gateway's
			if !bytes.Equal(p.node.NextHopMAC, mac) {
				r.queue.Add(name)
			}
		case !known && p.node.NextHopMAC == nil: // ip may be its gateway
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
	defer r.add(domainsKey)
	node, err := r.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return r.forget(name)
	}
	if err != nil {
		return fmt.Errorf("getting node %s: %w", name, err)
	}
	r.work.derived.Add(1)
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
