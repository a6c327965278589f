package controller

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
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
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// ServicesController names the service reconciler in metrics.
const ServicesController = "services"

// Reasons of the Warning events recorded on Services.
const (
	// ReasonInvalidServiceAnnotation: an OpenYurt annotation does not parse; the last valid value
	// (or the safe default) applies.
	ReasonInvalidServiceAnnotation = "InvalidServiceAnnotation"
	// ReasonFrontendConflict: another Service already has this address, port and protocol.
	ReasonFrontendConflict = "FrontendConflict"
	// ReasonInvalidService and ReasonTooManyEndpoints come from the model (pkg/service).
	ReasonInvalidService   = service.ReasonInvalidService
	ReasonTooManyEndpoints = service.ReasonTooManyEndpoints
)

// ServiceReconcilerConfig is what a ServiceReconciler reads and writes.
type ServiceReconcilerConfig struct {
	NodeName  string                    // this node
	Services  cache.SharedIndexInformer // of Services
	Slices    cache.SharedIndexInformer // of EndpointSlices
	Nodes     cache.SharedIndexInformer // of Nodes: pools and zones; may be shared with the NodeReconciler
	Frontends FrontendTable
	Backends  BackendTable
	Affinity  AffinityTable // optional: affinity entries follow their backend set
	Recorder  record.EventRecorder
	Resync    time.Duration // full pass: every Service, and a check of lb_svc_map
	Metrics   Metrics       // optional
	// Domains gives the pool label; nil means the default model.
	Domains DomainModel
	// MaxBackends caps the backends of a frontend; 0 means the datapath's limit (lb.MaxBackends).
	MaxBackends int
	// Index, optional, receives the frontends each Service owns (namespace/name -> frontends),
	// at most once a second when they changed and at every resync, for edgeplanectl's names.
	Index ServiceIndex
	// HealthChecks, optional, receives after each reconcile of a Service its health check node
	// port on this node and its ready local endpoints (service.HealthCheckOf); port 0 when it
	// needs none or is gone (svc nil).
	HealthChecks HealthCheckSink
}

// HealthCheckSink serves the health check node ports (pkg/svchealth).
type HealthCheckSink interface {
	SetHealthCheck(key string, svc *corev1.Service, hc service.HealthCheck)
}

// ServiceIndex is where the frontends' owners are published (pkg/names' services.json).
type ServiceIndex interface {
	Sync(map[string][]service.FrontendKey) error
}

// ServiceReconciler keeps lb_svc_map and lb_backend_map equal to what this node must program for
// every Service (pkg/service): one Service per reconcile, level-triggered, keyed namespace/name.
//
// A frontend whose content changes gets its backend set under a fresh id first, then the frontend
// points at it, then the old id's slots go; a frontend whose content is unchanged is not written,
// so established flows never see it blink. sessionAffinity entries whose backend is still in the
// new set move to the new id before the switch; the others go with the old id.
//
// After a restart the maps hold what the previous agent wrote: the start-up pass adopts frontends
// that are still right as they are, rewrites the others, and deletes what no Service wants.
type ServiceReconciler struct {
	cfg       ServiceReconcilerConfig
	services  cache.Indexer // *k8s.Service (the agent's cache) or *corev1.Service (tests); read through k8s.ServiceObject
	slices    cache.Indexer
	slicesOf  sliceIndex // EndpointSlice keys by Service key
	nodes     corelisters.NodeLister
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
	ready     chan struct{}
	nodeDirty atomic.Bool // the cluster view must be rebuilt

	mu         sync.Mutex
	programmed map[service.FrontendKey]*programmed     // what lb_svc_map holds, by frontend
	owned      map[string][]service.FrontendKey        // by Service (a slice: most own one or two frontends)
	ownedGen   uint64                                  // counts changes of owned, for publishing the index
	waiting    map[service.FrontendKey]map[string]bool // services that want a frontend another owns
	policies   map[string]validPolicy                  // last valid annotations by Service
	reported   map[string]map[string]bool              // events recorded by Service, "reason\x00message"
	ids        map[uint32]bool                         // backend set ids in use
	orphans    map[uint32]orphan                       // sets whose deletion failed, retried at resync
	nextID     uint32
	cluster    *service.Cluster

	// leftovers are the pinned backend slots outside every pinned frontend's set (what a crash
	// left behind), from the start-up listing, for collectPinned; listed again if that failed.
	leftovers       []BackendSlot
	leftoversListed bool

	// early holds, from Run until the start-up pass is over, the keys events named (nil the rest
	// of the time): the pass reconciles every Service anyway, so only a key named again after
	// its reconcile in the pass is queued when the pass ends, instead of all 10,000 of the
	// informers' initial adds being reconciled a second time.
	earlyMu sync.Mutex
	early   map[string]bool
}

// programmed is one frontend as lb_svc_map holds it.
type programmed struct {
	owner    string // namespace/name; "" for what a previous agent pinned, until a Service adopts it
	entry    ServiceEntry
	backends []slotBackend // slot order
	lost     bool          // the map no longer holds entry: rewrite
}

// slotBackend is a backend as programmed keeps it: 6 bytes, as lb_backend_map holds it, where a
// service.Backend takes 32 (its netip.Addr is 24); with 10,000 Services of 10 endpoints that is
// ~0.6 MiB of the agent's live heap instead of ~3. Backends are IPv4: the model keeps no other
// endpoint (pkg/service) and the maps hold no other.
type slotBackend struct {
	ip   [4]byte
	port uint16
}

func packBackend(b service.Backend) slotBackend {
	return slotBackend{ip: b.IP.As4(), port: b.Port}
}

func (b slotBackend) backend() service.Backend {
	return service.Backend{IP: netip.AddrFrom4(b.ip), Port: b.port}
}

// packBackends is backends as programmed keeps them.
func packBackends(backends []service.Backend) []slotBackend {
	out := make([]slotBackend, 0, len(backends))
	for _, b := range backends {
		if b.IP.Is4() {
			out = append(out, packBackend(b))
		}
	}
	return out
}

// holds reports whether p holds f as it is: its flags, affinity timeout and backends (in the
// model's order, CompareBackends, the slot order this reconciler writes; a previous agent's
// sets are compared the same way, in any order). The count of unreachable backends is not
// compared: it is rewritten in place (writeLocked).
func (p *programmed) holds(f service.Frontend) bool {
	if p.entry.Flags != f.Flags || p.entry.AffinityTimeout != f.AffinityTimeout || len(p.backends) != len(f.Backends) {
		return false
	}
	have := p.backends
	if !slices.IsSortedFunc(have, compareSlotBackends) {
		have = slices.SortedFunc(slices.Values(have), compareSlotBackends)
	}
	for i, b := range f.Backends {
		if !b.IP.Is4() || packBackend(b) != have[i] {
			return false
		}
	}
	return true
}

// compareSlotBackends orders as service.CompareBackends does: by address, then port.
func compareSlotBackends(a, b slotBackend) int {
	return cmp.Or(bytes.Compare(a.ip[:], b.ip[:]), cmp.Compare(a.port, b.port))
}

type orphan struct {
	count    uint32
	affinity bool
}

// NewServiceReconciler registers its event handlers and the EndpointSlice index; Run starts it.
func NewServiceReconciler(cfg ServiceReconcilerConfig) (*ServiceReconciler, error) {
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	r := &ServiceReconciler{
		cfg:      cfg,
		services: cfg.Services.GetIndexer(),
		slices:   cfg.Slices.GetIndexer(),
		nodes:    corelisters.NewNodeLister(cfg.Nodes.GetIndexer()),
		synced:   []cache.InformerSynced{cfg.Services.HasSynced, cfg.Slices.HasSynced, cfg.Nodes.HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: ServicesController, MetricsProvider: queueMetrics(cfg.Metrics)}),
		ready:      make(chan struct{}),
		programmed: map[service.FrontendKey]*programmed{},
		owned:      map[string][]service.FrontendKey{},
		waiting:    map[service.FrontendKey]map[string]bool{},
		policies:   map[string]validPolicy{},
		reported:   map[string]map[string]bool{},
		ids:        map[uint32]bool{},
		orphans:    map[uint32]orphan{},
		nextID:     1,
	}
	if cfg.Domains != nil {
		r.synced = append(r.synced, cfg.Domains.HasSynced)
	}
	r.nodeDirty.Store(true)
	if _, err := cfg.Services.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.enqueueService,
		UpdateFunc: func(_, obj any) { r.enqueueService(obj) },
		DeleteFunc: r.enqueueService,
	}); err != nil {
		return nil, fmt.Errorf("adding service event handler: %w", err)
	}
	sliceHandler, err := cfg.Slices.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.sliceChanged(nil, obj) },
		UpdateFunc: r.sliceChanged,
		DeleteFunc: func(obj any) { r.sliceChanged(obj, nil) },
	})
	if err != nil {
		return nil, fmt.Errorf("adding endpointslice event handler: %w", err)
	}
	// The start-up pass reads slices through slicesOf, which this handler keeps: it waits until
	// the handler has seen the initial list, not only until the cache holds it.
	r.synced = append(r.synced, sliceHandler.HasSynced)
	// A node of the initial list is no change: the start-up pass, after every cache synced, reads
	// the whole cluster anyway (without this, each unreachable node of the list would requeue
	// every Service: nodes x Services queue adds at start).
	if _, err := cfg.Nodes.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc:    func(obj any, initial bool) { r.nodeChanged(obj, !initial && r.unreachable(obj)) },
		UpdateFunc: r.nodeUpdated,
		DeleteFunc: func(obj any) { r.nodeChanged(obj, r.unreachable(obj)) },
	}); err != nil {
		return nil, fmt.Errorf("adding node event handler: %w", err)
	}
	return r, nil
}

// sliceServiceKey is the key ("namespace/name") of an EndpointSlice's Service, "" for none, as
// the cache holds the slice (k8s.EndpointSlice, the informers' transform) or whole (tests).
func sliceServiceKey(obj any) string {
	var ns, name string
	switch s := obj.(type) {
	case *k8s.EndpointSlice:
		ns, name = s.Namespace, s.ServiceName
	case *discoveryv1.EndpointSlice:
		ns, name = s.Namespace, s.Labels[discoveryv1.LabelServiceName]
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

// add queues key, or holds it until the start-up pass is over (early).
func (r *ServiceReconciler) add(key string) {
	r.earlyMu.Lock()
	if r.early != nil {
		r.early[key] = true
		r.earlyMu.Unlock()
		return
	}
	r.earlyMu.Unlock()
	r.queue.Add(key)
}

// passing marks key as reconciled by the start-up pass from now on: only later events requeue it.
func (r *ServiceReconciler) passing(key string) {
	r.earlyMu.Lock()
	delete(r.early, key)
	r.earlyMu.Unlock()
}

// endEarly queues what events named during the start-up pass after its reconcile, and
// queues directly from then on.
func (r *ServiceReconciler) endEarly() {
	r.earlyMu.Lock()
	keys := r.early
	r.early = nil
	r.earlyMu.Unlock()
	for key := range keys {
		r.queue.Add(key)
	}
}

// sliceChanged keeps slicesOf and queues the Services of a slice that was added (old nil),
// updated, or deleted (obj nil).
func (r *ServiceReconciler) sliceChanged(old, obj any) {
	oldSvc, oldKey := sliceKeys(old)
	svc, key := sliceKeys(obj)
	if oldSvc != "" && (oldSvc != svc || oldKey != key) {
		r.slicesOf.remove(oldSvc, oldKey)
		r.add(oldSvc)
	}
	if svc != "" {
		if obj != nil {
			r.slicesOf.put(svc, key)
		}
		r.add(svc)
	}
}

// sliceKeys is the key of an EndpointSlice's Service ("" for none) and its own.
func sliceKeys(obj any) (svc, key string) {
	if obj == nil {
		return "", ""
	}
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, key = t.Obj, t.Key
	}
	if svc = sliceServiceKey(obj); svc == "" {
		return "", ""
	}
	if key == "" {
		var err error
		if key, err = cache.MetaNamespaceKeyFunc(obj); err != nil {
			return "", ""
		}
	}
	return svc, key
}

// sliceIndex is the EndpointSlices of each Service, "namespace/service name" (label
// kubernetes.io/service-name) -> the slices' keys, kept by the slice event handler. A client-go
// index would hold a set (a map) per Service: ~150 bytes more a Service, 1.5 MiB at 10,000. It
// may lag the cache by an event: the event then queues the Service again.
type sliceIndex struct {
	mu    sync.Mutex
	bySvc map[string][]string
}

func (x *sliceIndex) put(svc, key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.bySvc == nil {
		x.bySvc = map[string][]string{}
	}
	if !slices.Contains(x.bySvc[svc], key) {
		x.bySvc[svc] = append(x.bySvc[svc], key)
	}
}

func (x *sliceIndex) remove(svc, key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	keys := slices.DeleteFunc(x.bySvc[svc], func(k string) bool { return k == key })
	if len(keys) == 0 {
		delete(x.bySvc, svc)
	} else {
		x.bySvc[svc] = keys
	}
}

// get is a copy of the Service's slice keys.
func (x *sliceIndex) get(svc string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.bySvc[svc])
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
	o, ok1 := oldObj.(*corev1.Node)
	n, ok2 := newObj.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	pool := r.poolLabel()
	if o.Labels[pool] != n.Labels[pool] || o.Labels[service.ZoneLabel] != n.Labels[service.ZoneLabel] {
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
		return m.DomainOf(n)
	}
	return domain.Default
}

// unreachable reports whether obj is a node with pods this node cannot reach (its domain is
// public to this node's, and it has a pod CIDR): a Service with endpoints there changes when it
// comes, goes or moves.
func (r *ServiceReconciler) unreachable(obj any) bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok || n.Name == r.cfg.NodeName {
		return false
	}
	if _, hasPods, err := k8s.NodePodCIDR(n); err != nil || !hasPods {
		return false
	}
	m := r.model()
	return !m.Reachable(r.localDomain(m), m.DomainOf(n))
}

// nodeUpdated is the Node update handler: only moves count (placementChanged).
func (r *ServiceReconciler) nodeUpdated(oldObj, obj any) {
	if r.placementChanged(oldObj, obj) {
		r.nodeChanged(obj, r.unreachable(oldObj) || r.unreachable(obj))
	}
}

// nodeChanged requeues the Services a node's move can change: all of them when it is this node
// (its pool decides NodePort isolation, topology and which domains it reaches, its zone
// trafficDistribution) or a node it cannot reach, before or after the change (its endpoints are
// left out or come back), else those with a topology annotation (the endpoints of a pool).
func (r *ServiceReconciler) nodeChanged(obj any, unreachable bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	r.nodeDirty.Store(true)
	node, ok := obj.(*corev1.Node)
	all := unreachable || (ok && node.Name == r.cfg.NodeName)
	for _, s := range r.services.List() {
		if all {
			r.enqueueService(s)
		} else if m, err := meta.Accessor(s); err == nil {
			if _, topology := m.GetAnnotations()[service.TopologyAnnotation]; topology {
				r.enqueueService(s)
			}
		}
	}
}

// Refresh re-reconciles every Service: the domain configuration (the pool label) changed.
func (r *ServiceReconciler) Refresh() {
	r.nodeDirty.Store(true)
	for _, s := range r.services.List() {
		r.enqueueService(s)
	}
}

// Ready is closed once the start-up pass has programmed every Service and deleted stale entries.
func (r *ServiceReconciler) Ready() <-chan struct{} { return r.ready }

// Pending is how many Services wait for a reconcile (the proxy health server's staleness signal).
func (r *ServiceReconciler) Pending() int { return r.queue.Len() }

// Run waits for the informers, runs the start-up pass, then follows changes until ctx is done. It
// never leaves a worker writing to the maps behind.
func (r *ServiceReconciler) Run(ctx context.Context) error {
	var workers sync.WaitGroup
	defer workers.Wait()
	defer r.queue.ShutDown()
	start := time.Now()
	r.earlyMu.Lock()
	r.early = map[string]bool{}
	r.earlyMu.Unlock()
	defer r.endEarly() // if the informers never sync
	// Every 10 ms rather than cache.WaitForCacheSync's 100: readiness waits on this pass, and a
	// HasSynced check costs nothing.
	err := wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
		for _, synced := range r.synced {
			if !synced() {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return errors.New("service, endpointslice, node or domain configuration informer did not sync")
	}
	synced := time.Now()
	r.syncAll(ctx)
	r.endEarly()
	close(r.ready)
	// The cold-start benchmark (tests/bench) stamps "programmed" with this line.
	frontends, slots := r.programmedCount()
	klog.FromContext(ctx).Info("Start-up pass done: every Service programmed", "frontends", frontends,
		"backendSlots", slots, "informerSync", synced.Sub(start), "pass", time.Since(synced))
	workers.Go(func() { wait.UntilWithContext(ctx, r.runWorker, time.Second) })
	ticker := time.NewTicker(r.cfg.Resync)
	defer ticker.Stop()
	index := time.NewTicker(time.Second)
	defer index.Stop()
	// The index is written when ownership changed since the last write (a generation count: a
	// copy of 10,000 Services' frontends every second, to compare, would be garbage), and at every
	// resync whatever happened to the file.
	var published uint64
	written := false
	publish := func(force bool) {
		if r.cfg.Index == nil {
			return
		}
		if !force && written && r.ownedGeneration() == published {
			return
		}
		now, gen := r.owners()
		if err := r.cfg.Index.Sync(now); err != nil {
			klog.FromContext(ctx).Error(err, "Writing the services name index; edgeplanectl shows no service names until it works")
			return
		}
		published, written = gen, true
	}
	publish(true)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-index.C:
			publish(false)
		case <-ticker.C:
			r.resync(ctx)
			publish(true)
		}
	}
}

// programmedCount is how many frontends and backend slots the maps hold for Services.
func (r *ServiceReconciler) programmedCount() (frontends, slots int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.programmed {
		slots += int(p.entry.Count)
	}
	return len(r.programmed), slots
}

// owners is the frontends each Service owns, sorted, and the generation of owned they are.
func (r *ServiceReconciler) owners() (map[string][]service.FrontendKey, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]service.FrontendKey, len(r.owned))
	for key, fs := range r.owned {
		out[key] = slices.SortedFunc(slices.Values(fs), compareFrontendKeys)
	}
	return out, r.ownedGen
}

func (r *ServiceReconciler) ownedGeneration() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ownedGen
}

func (r *ServiceReconciler) runWorker(ctx context.Context) {
	for r.processNext(ctx) {
	}
}

func (r *ServiceReconciler) processNext(ctx context.Context) bool {
	return processNext(ctx, r.queue, r.cfg.Metrics, ServicesController, "Reconciling service",
		func(key string) []any { return []any{"service", key} }, r.reconcile)
}

// syncAll is the start-up pass: load what is pinned, reconcile every Service (oldest first, so
// that of two Services claiming one frontend the older keeps it), then delete what none wants.
func (r *ServiceReconciler) syncAll(ctx context.Context) {
	logger := klog.FromContext(ctx)
	r.loadPinned(ctx)
	type svcOrder struct {
		created         time.Time
		namespace, name string
	}
	var svcs []svcOrder
	for _, obj := range r.services.List() {
		switch s := obj.(type) {
		case *k8s.Service:
			svcs = append(svcs, svcOrder{time.Unix(s.Created, 0), s.Namespace, s.Name})
		case *corev1.Service:
			svcs = append(svcs, svcOrder{s.CreationTimestamp.Time, s.Namespace, s.Name})
		}
	}
	slices.SortFunc(svcs, func(a, b svcOrder) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.namespace, b.namespace), strings.Compare(a.name, b.name))
	})
	for _, s := range svcs {
		key := s.namespace + "/" + s.name
		r.passing(key)
		start := time.Now()
		err := r.reconcile(ctx, key)
		observe(r.cfg.Metrics, ServicesController, start, err)
		if err != nil {
			logger.Error(err, "Reconciling service; will retry", "service", key)
			r.queue.AddRateLimited(key)
		}
	}
	r.collectPinned(ctx)
}

// loadPinned reads the maps as the previous agent left them: every frontend becomes adoptable
// (owner ""), with the backends of its set in slot order. The backend slots are visited once and
// placed into their frontends' sets (walkBackends), not listed into a map first.
func (r *ServiceReconciler) loadPinned(ctx context.Context) {
	logger := klog.FromContext(ctx)
	frontends, err := r.cfg.Frontends.List()
	if err != nil {
		logger.Error(err, "Listing pinned service frontends; they will be rewritten")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	bySet := make(map[uint32][]*programmed, len(frontends)) // a set is one frontend's, unless a crash left it shared
	filled := make(map[*programmed]int, len(frontends))
	for k, e := range frontends {
		p := &programmed{entry: e, backends: make([]slotBackend, e.Count)}
		r.programmed[k] = p
		bySet[e.ID] = append(bySet[e.ID], p)
		r.ids[e.ID] = true
		r.nextID = max(r.nextID, e.ID+1)
	}
	var leftovers []BackendSlot
	backendsErr := walkBackends(r.cfg.Backends, func(slot BackendSlot, b service.Backend) {
		// New sets take ids above every pinned one, frontends' or not (slots a crash left behind).
		r.nextID = max(r.nextID, slot.ID+1)
		var count uint16
		for _, p := range bySet[slot.ID] {
			count = max(count, p.entry.Count)
			if slot.Slot < uint32(p.entry.Count) && b.IP.Is4() {
				p.backends[slot.Slot] = packBackend(b)
				filled[p]++
			}
		}
		if slot.Slot >= uint32(count) {
			leftovers = append(leftovers, slot)
		}
	})
	if backendsErr != nil {
		logger.Error(backendsErr, "Listing pinned service backends; their frontends will be rewritten")
		filled, leftovers = nil, nil
	}
	r.leftovers, r.leftoversListed = leftovers, backendsErr == nil
	for _, ps := range bySet {
		for _, p := range ps {
			if filled[p] != int(p.entry.Count) {
				// A slot is missing: never adopt this set as it is. What it held up to the
				// first gap is what the set is known to hold.
				p.lost = true
				if i := slices.Index(p.backends, slotBackend{}); i >= 0 {
					p.backends = p.backends[:i]
				}
			}
		}
	}
	if len(frontends) > 0 {
		logger.Info("Found pinned service frontends from a previous agent", "frontends", len(frontends))
	}
}

// collectPinned ends the start-up pass: frontends no Service adopted go, then backend slots and
// affinity entries of sets no frontend uses.
func (r *ServiceReconciler) collectPinned(ctx context.Context) {
	logger := klog.FromContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	stale := 0
	for k, p := range r.programmed {
		if p.owner != "" {
			continue
		}
		if err := r.deleteFrontendLocked(ctx, k); err != nil {
			logger.Error(err, "Deleting a stale service frontend")
		}
		stale++
	}
	// The sets of pinned frontends went with their frontends (deleteFrontendLocked, writeLocked):
	// what is left is the slots outside them, which the start-up listing found, so the 100,000
	// slots the pass may have written are not read again.
	leftovers := r.leftovers
	if !r.leftoversListed {
		if backends, err := r.cfg.Backends.List(); err != nil {
			logger.Error(err, "Listing service backends")
		} else {
			leftovers = slices.Collect(maps.Keys(backends))
		}
	}
	for _, slot := range leftovers {
		if !r.ids[slot.ID] {
			if err := r.cfg.Backends.Delete(slot); err != nil {
				logger.Error(err, "Deleting a stale backend slot", "id", slot.ID, "slot", slot.Slot)
			}
		}
	}
	r.leftovers, r.leftoversListed = nil, true
	if r.cfg.Affinity != nil {
		if entries, err := r.cfg.Affinity.List(); err != nil {
			logger.Error(err, "Listing affinity entries")
		} else {
			for k := range entries {
				if !r.ids[k.ID] {
					if err := r.cfg.Affinity.Delete(k); err != nil {
						logger.Error(err, "Deleting a stale affinity entry")
					}
				}
			}
		}
	}
	if stale > 0 {
		logger.Info("Deleted pinned service frontends no Service wants", "frontends", stale)
	}
}

// resync re-queues every Service and checks lb_svc_map against what was written: an entry
// someone deleted or changed is rewritten by its Service's next reconcile, one that nobody
// wrote is deleted. Backend sets whose deletion failed are deleted again.
func (r *ServiceReconciler) resync(ctx context.Context) {
	logger := klog.FromContext(ctx)
	svcs := r.services.List()
	r.mu.Lock()
	defer r.mu.Unlock()
	have, err := r.cfg.Frontends.List()
	if err != nil {
		logger.Error(err, "Listing service frontends")
	} else {
		for k, p := range r.programmed {
			if e, ok := have[k]; !ok || e != p.entry {
				p.lost = true
			}
		}
		for k := range have {
			if _, ok := r.programmed[k]; !ok {
				logger.Info("Deleting a service frontend edgeplane did not write", "frontend", k)
				if err := r.cfg.Frontends.Delete(k); err != nil {
					logger.Error(err, "Deleting a service frontend", "frontend", k)
				}
			}
		}
	}
	for id, o := range r.orphans {
		delete(r.orphans, id)
		r.releaseSetLocked(ctx, id, o.count, o.affinity)
	}
	for _, s := range svcs {
		r.enqueueService(s)
	}
}

// clusterLocked is the view of the nodes, rebuilt after a node moved or the domain
// configuration changed.
func (r *ServiceReconciler) clusterLocked() *service.Cluster {
	if r.cluster == nil || r.nodeDirty.Swap(false) {
		nodes, err := r.nodes.List(labels.Everything())
		if err != nil {
			utilruntime.HandleError(err)
		}
		m := r.model()
		c := service.NewCluster(r.cfg.NodeName, nodes, m.PoolLabel())
		local := r.localDomain(m)
		for _, n := range nodes {
			if n.Name == r.cfg.NodeName || m.Reachable(local, m.DomainOf(n)) {
				continue
			}
			if cidr, ok, err := k8s.NodePodCIDR(n); err == nil && ok {
				c.SetUnreachable(n.Name, cidr)
			}
		}
		if (r.cluster == nil && len(c.Unreachable()) > 0) || (r.cluster != nil && !slices.Equal(r.cluster.Unreachable(), c.Unreachable())) {
			klog.Background().Info("Service backends on nodes this node cannot reach are left out",
				"domain", local, "unreachableNodes", len(c.Unreachable()))
		}
		r.cluster = c
	}
	return r.cluster
}

// reconcile makes the maps hold what the Service key asks of this node now.
func (r *ServiceReconciler) reconcile(ctx context.Context, key string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	obj, exists, err := r.services.GetByKey(key)
	if err != nil {
		return fmt.Errorf("getting service %s: %w", key, err)
	}
	svc := k8s.ServiceObject(obj) // rebuilt for this reconcile only
	if !exists || svc == nil {
		r.forgetLocked(key)
		return r.applyLocked(ctx, key, nil, nil)
	}
	if _, ignored := service.Ignored(svc); ignored {
		r.forgetLocked(key)
		return r.applyLocked(ctx, key, nil, nil)
	}
	events := &eventSet{}
	defer func() { r.recordLocked(ctx, key, svc, *events) }()
	policy := r.policyLocked(key, svc, events)
	keys := r.slicesOf.get(key)
	endpointSlices := make([]*discoveryv1.EndpointSlice, 0, len(keys))
	for _, k := range keys {
		o, exists, err := r.slices.GetByKey(k)
		if err != nil {
			return fmt.Errorf("getting endpointslice %s of service %s: %w", k, key, err)
		}
		if !exists {
			continue // deleted; its event updates slicesOf and queues the Service
		}
		switch s := o.(type) {
		case *k8s.EndpointSlice:
			endpointSlices = append(endpointSlices, s.Object()) // for this reconcile only
		case *discoveryv1.EndpointSlice:
			endpointSlices = append(endpointSlices, s)
		}
	}
	res, err := service.Frontends(service.Input{
		Service: svc, Slices: endpointSlices, Cluster: r.clusterLocked(), Policy: policy, MaxBackends: r.cfg.MaxBackends,
	})
	if err != nil {
		// Nothing of it can be programmed: keep what it had (its last good state).
		events.add(ReasonInvalidService, "edgeplane keeps this Service's last programmed state: "+err.Error())
		r.adoptPinnedLocked(key, svc)
		return nil
	}
	r.healthCheckLocked(key, svc, service.Input{Service: svc, Slices: endpointSlices, Cluster: r.clusterLocked(), Policy: policy})
	for _, w := range res.Warnings {
		events.add(w.Reason, w.Message)
	}
	return r.applyLocked(ctx, key, res.Frontends, events)
}

// forgetLocked drops what is remembered about a Service that is gone or not edgeplane's.
func (r *ServiceReconciler) forgetLocked(key string) {
	delete(r.policies, key)
	delete(r.reported, key)
	r.healthCheckLocked(key, nil, service.Input{})
}

// healthCheckLocked hands the Service's health check to the sink, computed from the input its
// frontends were (in.Service nil: none).
func (r *ServiceReconciler) healthCheckLocked(key string, svc *corev1.Service, in service.Input) {
	if r.cfg.HealthChecks == nil {
		return
	}
	var hc service.HealthCheck
	if in.Service != nil {
		hc = service.HealthCheckOf(in)
	}
	r.cfg.HealthChecks.SetHealthCheck(key, svc, hc)
}

// policyLocked reads the Service's OpenYurt annotations. One that does not parse is reported and
// replaced by its last valid value; a Service that never had one gets the safe default: no
// topology (as OpenYurt reads an unknown key), and node ports closed on every node in a pool (the
// annotation exists to restrict where a node port is open: an error must not open it wider). At
// start-up, the previous agent's decision for this node, read from its pinned node port
// frontends, is the last valid value.
func (r *ServiceReconciler) policyLocked(key string, svc *corev1.Service, events *eventSet) service.Policy {
	valid := r.policies[key]
	var p service.Policy
	var err error
	if p.Topology, err = service.TopologyOf(svc); err == nil {
		valid.topology, valid.hasTopology = p.Topology, true
	} else {
		keep := "no topology (every endpoint)"
		if valid.hasTopology {
			p.Topology, keep = valid.topology, fmt.Sprintf("the last valid topology (%s)", valid.topology)
		}
		events.add(ReasonInvalidServiceAnnotation, fmt.Sprintf("%v; edgeplane applies %s", err, keep))
	}
	if p.Listen, err = service.ListenOf(svc); err == nil {
		valid.listen, valid.hasListen = p.Listen, true
	} else if hasNodePorts(svc) {
		keep := "node ports closed on nodes in a pool"
		if valid.hasListen {
			p.Listen, keep = valid.listen, fmt.Sprintf("the last valid value (%q)", valid.listen.String())
		} else if pinned, found := r.pinnedListenLocked(svc); found {
			p.Listen, keep = pinned, "this node's previous decision"
		}
		events.add(ReasonInvalidServiceAnnotation, fmt.Sprintf("%v; edgeplane applies %s", err, keep))
	}
	r.policies[key] = valid
	return p
}

// validPolicy is the last valid value of each annotation of a Service (has*: one was seen). Held
// by value: 10,000 Services would otherwise cost two small allocations each.
type validPolicy struct {
	topology    service.Topology
	listen      service.Listen
	hasTopology bool
	hasListen   bool
}

func hasNodePorts(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
}

// pinnedListenLocked is whether this node listened on the Service's node ports, from the node
// port frontends a previous agent pinned and no Service adopted yet.
func (r *ServiceReconciler) pinnedListenLocked(svc *corev1.Service) (service.Listen, bool) {
	for _, port := range svc.Spec.Ports {
		for _, proto := range []lb.Proto{lb.ProtoTCP, lb.ProtoUDP, lb.ProtoSCTP} {
			if port.NodePort < 1 || port.NodePort > 65535 {
				continue
			}
			k := service.FrontendKey{VIP: service.NodePortVIP, Port: uint16(port.NodePort), Proto: proto, Scope: lb.ScopeExternal}
			if p, ok := r.programmed[k]; ok && p.owner == "" {
				if p.entry.Flags&lb.FlagClosed != 0 {
					return service.ListenNowhere, true
				}
				return service.ListenEverywhere, true
			}
		}
	}
	return service.Listen{}, false
}

// adoptPinnedLocked keeps, for a Service the model refuses, the frontends it owns and, at
// start-up, the pinned frontends at its ClusterIP (the previous agent's last good state).
func (r *ServiceReconciler) adoptPinnedLocked(key string, svc *corev1.Service) {
	ips := append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...)
	for k, p := range r.programmed {
		if p.owner == "" && slices.Contains(ips, k.VIP.String()) {
			p.owner = key
			r.ownLocked(key, k)
		}
	}
}

func (r *ServiceReconciler) ownLocked(key string, k service.FrontendKey) {
	if !slices.Contains(r.owned[key], k) {
		r.owned[key] = append(r.owned[key], k)
		r.ownedGen++
	}
}

// applyLocked makes the Service's frontends want (nil: none), deleting those it no longer wants.
// A frontend another Service owns is left to it (the first to claim it keeps it) and reported in
// events; this Service is requeued when it is released.
func (r *ServiceReconciler) applyLocked(ctx context.Context, key string, want map[service.FrontendKey]service.Frontend, events *eventSet) error {
	var errs []error
	var conflicts []string
	for _, k := range slices.SortedFunc(maps.Keys(want), compareFrontendKeys) {
		if p, ok := r.programmed[k]; ok && p.owner != "" && p.owner != key {
			if r.waiting[k] == nil {
				r.waiting[k] = map[string]bool{}
			}
			r.waiting[k][key] = true
			conflicts = append(conflicts, fmt.Sprintf("%s (Service %s)", k, p.owner))
			continue
		}
		if w := r.waiting[k]; w != nil {
			delete(w, key)
		}
		if err := r.writeLocked(ctx, key, k, want[k]); err != nil {
			errs = append(errs, err)
		}
		if _, ok := r.programmed[k]; ok { // written now, or earlier and kept
			r.ownLocked(key, k)
		}
	}
	had := len(r.owned[key])
	kept := r.owned[key][:0] // filtered in place
	for _, k := range r.owned[key] {
		if _, ok := want[k]; ok {
			kept = append(kept, k)
			continue
		}
		if err := r.deleteFrontendLocked(ctx, k); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", key, err))
			kept = append(kept, k)
		}
	}
	if len(kept) != had {
		r.ownedGen++
	}
	if len(kept) == 0 {
		delete(r.owned, key)
	} else {
		r.owned[key] = kept
	}
	for k, w := range r.waiting {
		if _, ok := want[k]; !ok {
			delete(w, key)
		}
		if len(w) == 0 {
			delete(r.waiting, k)
		}
	}
	if len(conflicts) > 0 && events != nil {
		events.add(ReasonFrontendConflict, "frontends already programmed for another Service are left to it: "+strings.Join(conflicts, ", "))
	}
	return errors.Join(errs...)
}

func compareFrontendKeys(a, b service.FrontendKey) int {
	return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Scope, b.Scope))
}

// writeLocked makes frontend k hold f: nothing to do when it already does; else a fresh backend
// set, the frontend, then the old set's slots.
func (r *ServiceReconciler) writeLocked(ctx context.Context, owner string, k service.FrontendKey, f service.Frontend) error {
	old := r.programmed[k]
	if old != nil {
		old.owner = owner // even if the rewrite fails: its pinned state is this Service's last good one
		if !old.lost && old.holds(f) {
			if old.entry.Unreachable == f.Unreachable {
				return nil
			}
			// Only the count of backends left out changed, which the programs do not read:
			// the entry in place, the same set.
			entry := old.entry
			entry.Unreachable = f.Unreachable
			if err := r.cfg.Frontends.Upsert(k, entry); err != nil {
				return fmt.Errorf("service %s: writing frontend %s: %w", owner, k, err)
			}
			old.entry = entry
			return nil
		}
	}
	id := r.allocIDLocked()
	if written, err := r.writeSet(id, f.Backends); err != nil {
		r.releaseSetLocked(ctx, id, written, false)
		return fmt.Errorf("service %s: frontend %s: %w", owner, k, err)
	}
	if f.Flags&lb.FlagAffinity != 0 && old != nil && old.entry.Flags&lb.FlagAffinity != 0 {
		r.moveAffinityLocked(ctx, old.entry.ID, id, f.Backends)
	}
	entry := ServiceEntry{ID: id, Count: uint16(len(f.Backends)), Flags: f.Flags, AffinityTimeout: f.AffinityTimeout, Unreachable: f.Unreachable}
	if err := r.cfg.Frontends.Upsert(k, entry); err != nil {
		r.releaseSetLocked(ctx, id, uint32(len(f.Backends)), f.Flags&lb.FlagAffinity != 0)
		return fmt.Errorf("service %s: writing frontend %s: %w", owner, k, err)
	}
	r.programmed[k] = &programmed{owner: owner, entry: entry, backends: packBackends(f.Backends)}
	if old != nil {
		r.releaseSetLocked(ctx, old.entry.ID, uint32(old.entry.Count), old.entry.Flags&lb.FlagAffinity != 0)
	}
	return nil
}

// writeSet writes backend set id, in one call where the table writes whole sets, and says how many
// slots may hold something (to release on error).
func (r *ServiceReconciler) writeSet(id uint32, backends []service.Backend) (uint32, error) {
	if w, ok := r.cfg.Backends.(BackendSetWriter); ok {
		if err := w.UpsertSet(id, backends); err != nil {
			return uint32(len(backends)), fmt.Errorf("writing the %d backends of set %d: %w", len(backends), id, err)
		}
		return uint32(len(backends)), nil
	}
	for slot, b := range backends {
		if err := r.cfg.Backends.Upsert(BackendSlot{id, uint32(slot)}, b); err != nil {
			return uint32(slot), fmt.Errorf("writing backend %s to slot %d of set %d: %w", b, slot, id, err)
		}
	}
	return uint32(len(backends)), nil
}

// deleteFrontendLocked deletes frontend k, then its backend set, and requeues the Services that
// wait for it.
func (r *ServiceReconciler) deleteFrontendLocked(ctx context.Context, k service.FrontendKey) error {
	p, ok := r.programmed[k]
	if !ok {
		return nil
	}
	if err := r.cfg.Frontends.Delete(k); err != nil {
		return fmt.Errorf("deleting frontend %s: %w", k, err)
	}
	delete(r.programmed, k)
	r.releaseSetLocked(ctx, p.entry.ID, uint32(p.entry.Count), p.entry.Flags&lb.FlagAffinity != 0)
	for key := range r.waiting[k] {
		r.queue.Add(key)
	}
	delete(r.waiting, k)
	return nil
}

func (r *ServiceReconciler) allocIDLocked() uint32 {
	for r.nextID == 0 || r.ids[r.nextID] {
		r.nextID++
	}
	id := r.nextID
	r.nextID++
	r.ids[id] = true
	return id
}

// releaseSetLocked deletes backend set id's count slots and, for a set with affinity, the
// affinity entries that point into it. What fails is retried at the next resync.
func (r *ServiceReconciler) releaseSetLocked(ctx context.Context, id, count uint32, affinity bool) {
	var errs []error
	for slot := range count {
		if err := r.cfg.Backends.Delete(BackendSlot{id, slot}); err != nil {
			errs = append(errs, err)
		}
	}
	if affinity && r.cfg.Affinity != nil {
		entries, err := r.cfg.Affinity.List()
		errs = append(errs, err)
		for k := range entries {
			if k.ID == id {
				errs = append(errs, r.cfg.Affinity.Delete(k))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		klog.FromContext(ctx).Error(err, "Deleting a service backend set; retrying at the next resync", "id", id)
		r.orphans[id] = orphan{count: count, affinity: affinity}
		return
	}
	delete(r.ids, id)
}

// moveAffinityLocked copies the affinity entries of set from whose backend is still in backends
// to set to, before the frontend switches to it, so that sticky clients stay on their backend.
// Entries the programs create for from in between are lost: those clients choose again.
func (r *ServiceReconciler) moveAffinityLocked(ctx context.Context, from, to uint32, backends []service.Backend) {
	if r.cfg.Affinity == nil {
		return
	}
	entries, err := r.cfg.Affinity.List()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Listing affinity entries; clients of the service choose their backend again", "id", from)
		return
	}
	for k, v := range entries {
		if k.ID != from || !slices.Contains(backends, v.Backend) {
			continue
		}
		if err := r.cfg.Affinity.Upsert(AffinityKey{ID: to, Client: k.Client}, v); err != nil {
			klog.FromContext(ctx).Error(err, "Moving an affinity entry; the client chooses its backend again", "client", k.Client)
		}
	}
}

// eventSet collects one reconcile's findings about a Service.
type eventSet [][2]string

func (e *eventSet) add(reason, message string) { *e = append(*e, [2]string{reason, message}) }

// recordLocked records each finding as a Warning event on the Service, once: a finding the
// previous reconcile reported already is not repeated; one that went away is reported again when
// it comes back.
func (r *ServiceReconciler) recordLocked(ctx context.Context, key string, svc *corev1.Service, events eventSet) {
	prev := r.reported[key]
	cur := map[string]bool{}
	for _, e := range events {
		id := e[0] + "\x00" + e[1]
		cur[id] = true
		if prev[id] {
			continue
		}
		klog.FromContext(ctx).Info("Service problem", "service", key, "reason", e[0], "message", e[1])
		if r.cfg.Recorder != nil {
			r.cfg.Recorder.Event(svc, corev1.EventTypeWarning, e[0], e[1])
		}
	}
	if len(cur) == 0 {
		delete(r.reported, key)
		return
	}
	r.reported[key] = cur
}
