package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
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
	NodeName  string       // this node
	Services  k8s.Informer // of Services
	Slices    k8s.Informer // of EndpointSlices
	Nodes     k8s.Informer // of Nodes: pools and zones; may be shared with the NodeReconciler
	Frontends FrontendTable
	Backends  BackendTable
	Affinity  AffinityTable // optional: affinity entries follow their backend set
	Recorder  k8s.EventRecorder
	Resync    time.Duration // full pass: every Service, and a check of lb_svc_map
	Metrics   Metrics       // optional
	// Domains gives the pool label; nil means the default model.
	Domains DomainModel
	// MaxBackends caps the backends of a frontend; 0 means the datapath's limit (service.MaxBackends).
	MaxBackends int
	// Index, optional, receives the frontends each Service owns (namespace/name -> frontends),
	// at most once a second when they changed and at a resync that finds the index not intact
	// (Intact), for edgeplanectl's names.
	Index ServiceIndex
	// HealthChecks, optional, receives after each reconcile of a Service its health check node
	// port on this node and its ready local endpoints (service.HealthCheckOf); port 0 when it
	// needs none or is gone (svc nil).
	HealthChecks HealthCheckSink
	// FrontendHook, optional, is called after each change to lb_svc_map and with each listing of
	// it: the agent routes the node's own traffic to externalIPs and LoadBalancer IPs from there.
	FrontendHook FrontendHook
}

// HealthCheckSink serves the health check node ports (pkg/svchealth).
type HealthCheckSink interface {
	SetHealthCheck(key string, svc *api.Service, hc service.HealthCheck)
}

// ServiceIndex is where the frontends' owners are published (pkg/nameindex' services.json).
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
	services  cache.Indexer // *k8s.Service (the agent's cache) or *api.Service (tests); read through k8s.ServiceObject
	slicesOf  sliceIndex    // EndpointSlices by Service key
	nodesOf   nodeIndex     // Service keys by the node names of their endpoints
	nodes     *k8s.NodeLister
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
	ready     chan struct{}
	nodeDirty atomic.Bool // the node view must be built whole again
	moved     nodeMoves   // nodes the node view must place again
	work      nodeWork    // what Node events cost, counted for the tests

	mu         sync.Mutex
	programmed frontendMap                             // what lb_svc_map holds, by frontend
	states     map[string]*serviceState                // what is remembered of each Service, by key
	ownedGen   uint64                                  // counts changes of the frontends owned, for publishing the index
	waiting    map[service.FrontendKey]map[string]bool // services that want a frontend another owns
	sets       *backendSets                            // lb_backend_map's sets, ids and orphans
	cluster    *service.Cluster
	// resynced counts the Services the periodic passes queued, for the tests.
	resynced atomic.Int64

	// leftovers are the pinned backend slots outside every pinned frontend's set (what a crash
	// left behind), from the start-up listing, for collectPinned; listed again if that failed.
	leftovers       []BackendSlot
	leftoversListed bool

	// early holds the keys events name until the start-up pass is over (startupHold).
	early *startupHold
}

// NewServiceReconciler registers its event handlers and the EndpointSlice index; Run starts it.
func NewServiceReconciler(cfg ServiceReconcilerConfig) (*ServiceReconciler, error) {
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	r := &ServiceReconciler{
		cfg:      cfg,
		services: cfg.Services.GetIndexer(),
		nodes:    k8s.NewNodeLister(cfg.Nodes.GetIndexer()),
		synced:   []cache.InformerSynced{cfg.Services.HasSynced, cfg.Slices.HasSynced, cfg.Nodes.HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: ServicesController, MetricsProvider: queueMetrics(cfg.Metrics)}),
		ready:      make(chan struct{}),
		programmed: newFrontendMap(),
		states:     map[string]*serviceState{},
		waiting:    map[service.FrontendKey]map[string]bool{},
		sets:       newBackendSets(cfg.Backends, cfg.Affinity),
		early:      newStartupHold(),
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
	if _, err := cfg.Nodes.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc:    r.nodeAdded,
		UpdateFunc: r.nodeUpdated,
		DeleteFunc: r.nodeChanged,
	}); err != nil {
		return nil, fmt.Errorf("adding node event handler: %w", err)
	}
	return r, nil
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
	// copy of 10,000 Services' frontends every second, to compare, would be garbage), and at a
	// resync when the file was lost or changed (or the index cannot tell: Intact).
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
			publish(!isIntact(r.cfg.Index))
		}
	}
}

// programmedCount is how many frontends and backend slots the maps hold for Services.
func (r *ServiceReconciler) programmedCount() (frontends, slots int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.programmed.all() {
		slots += int(p.entry.Count)
	}
	return r.programmed.len(), slots
}

// owners is the frontends each Service owns, sorted, and the generation of owned they are.
func (r *ServiceReconciler) owners() (map[string][]service.FrontendKey, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]service.FrontendKey, len(r.states))
	for key, st := range r.states {
		if len(st.owned) > 0 {
			out[key] = slices.SortedFunc(slices.Values(st.owned), compareFrontendKeys)
		}
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

// resync checks lb_svc_map against what was written and re-queues the Services that need it: an
// entry someone deleted or changed is rewritten by its Service's next reconcile, one that nobody
// wrote is deleted. A Service whose objects are those its last complete reconcile read, and
// whose frontends the map holds as written, is not computed again (its events queue it when
// anything it reads changes). Backend sets whose deletion failed are deleted again.
func (r *ServiceReconciler) resync(ctx context.Context) {
	logger := klog.FromContext(ctx)
	keys := r.services.ListKeys()
	r.mu.Lock()
	defer r.mu.Unlock()
	// The map is walked, not listed: a listing of 10,000 frontends was ~0.9 MB held at each
	// resync. Each programmed frontend the walk meets as it was written is marked held; what it
	// does not meet so, the map lost (or changed).
	for _, p := range r.programmed.all() {
		p.held = false
	}
	var strays, changed []listedFrontend // entries nobody wrote (a previous agent's, a user's); entries changed
	err := WalkTable(r.cfg.Frontends, func(k service.FrontendKey, e ServiceEntry) {
		switch p := r.programmed.get(k); {
		case p == nil:
			strays = append(strays, listedFrontend{k, e})
		case e == p.entry:
			p.held = true
		default:
			changed = append(changed, listedFrontend{k, e})
		}
	})
	if err != nil {
		logger.Error(err, "Listing service frontends")
		for _, f := range changed {
			r.programmed.get(f.key).lost = true
		}
	} else {
		for _, p := range r.programmed.all() {
			if !p.held {
				p.lost = true
			}
		}
		kept := changed // what the map holds that is not as written, for the hook
		for _, f := range strays {
			logger.Info("Deleting a service frontend edgeplane did not write", "frontend", f.key)
			if err := r.cfg.Frontends.Delete(f.key); err != nil {
				logger.Error(err, "Deleting a service frontend", "frontend", f.key)
				kept = append(kept, f)
			} else {
				r.frontendDeleted(f.key)
			}
		}
		r.frontendsListed(r.heldFrontendsLocked(kept))
	}
	r.sets.retryOrphans(ctx)
	again := map[string]bool{}
	for _, p := range r.programmed.all() {
		if p.lost && p.owner != "" {
			again[p.owner] = true
		}
	}
	for _, owners := range r.waiting {
		for key := range owners {
			again[key] = true
		}
	}
	for _, key := range keys {
		s, exists, err := r.services.GetByKey(key)
		if err != nil || !exists {
			continue
		}
		if st := r.states[key]; again[key] || st == nil || !st.complete || st.inputs != r.inputsOf(key, s) {
			r.resynced.Add(1)
			r.add(key)
		}
	}
}

// inputsOf hashes the resourceVersions of Service obj (keyed key) and of its EndpointSlices as
// the caches hold them now.
func (r *ServiceReconciler) inputsOf(key string, obj any) uint64 {
	h := hashString(fnvOffset, resourceVersion(obj))
	r.slicesOf.each(key, func(o any) {
		namespace, name := sliceName(o)
		h = hashString(hashString(hashString(hashString(hashString(hashString(h, "\x00"), namespace), "/"), name), "\x00"), resourceVersion(o))
	})
	return h
}

// FNV-1a over strings, without the conversions to []byte hash.Hash would allocate for 10,000
// Services every period.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// resourceVersion reads a cached object's resourceVersion without building its ObjectMeta (the
// agent's compact types build one per call).
func resourceVersion(obj any) string {
	switch o := obj.(type) {
	case *k8s.Service:
		return o.ResourceVersion
	case *k8s.EndpointSlice:
		return o.ResourceVersion
	}
	if m, err := meta.Accessor(obj); err == nil {
		return m.GetResourceVersion()
	}
	return ""
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
	inputs := r.inputsOf(key, obj) // before the reads below: a change meanwhile queues it again
	if st := r.states[key]; st != nil {
		st.complete = false // until this reconcile is complete
	}
	if _, ignored := service.Ignored(svc); ignored {
		r.forgetLocked(key)
		return r.recordInputs(key, inputs, r.applyLocked(ctx, key, nil, nil))
	}
	events := &eventSet{}
	defer func() { r.recordLocked(ctx, key, svc, *events) }()
	policy := r.policyLocked(key, svc, events)
	held := r.slicesOf.get(key)
	endpointSlices := make([]*api.EndpointSlice, 0, len(held))
	for _, o := range held {
		switch s := o.(type) {
		case *k8s.EndpointSlice:
			endpointSlices = append(endpointSlices, s.Object()) // for this reconcile only
		case *api.EndpointSlice:
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
		return r.recordInputs(key, inputs, nil)
	}
	r.healthCheckLocked(key, svc, service.Input{Service: svc, Slices: endpointSlices, Cluster: r.clusterLocked(), Policy: policy})
	for _, w := range res.Warnings {
		events.add(w.Reason, w.Message)
	}
	return r.recordInputs(key, inputs, r.applyLocked(ctx, key, res.Frontends, events))
}

// recordInputs remembers the inputs of a reconcile that completed (err nil), for resync.
func (r *ServiceReconciler) recordInputs(key string, inputs uint64, err error) error {
	if err == nil {
		st := r.stateLocked(key)
		st.inputs, st.complete = inputs, true
	}
	return err
}

// forgetLocked drops what is remembered about a Service that is gone or not edgeplane's, but the
// frontends it owns (applyLocked deletes them, and its state with the last).
func (r *ServiceReconciler) forgetLocked(key string) {
	if st := r.states[key]; st != nil {
		*st = serviceState{owned: st.owned}
		r.dropStateLocked(key)
	}
	r.healthCheckLocked(key, nil, service.Input{})
}

// serviceState is what the reconciler remembers of a Service between its reconciles: one entry
// per Service rather than a map per fact (four maps of 10,000 keys, each with its own copy of
// the key, were ~1 MB more).
type serviceState struct {
	owned []service.FrontendKey // the frontends it owns (a slice: most own one or two)
	// inputs is the resourceVersions of the Service and EndpointSlices its last complete
	// reconcile read (inputsOf), when complete: the periodic pass queues only the Services whose
	// objects differ from them or whose frontends the map lost, not all 10,000.
	inputs   uint64
	complete bool
	policy   validPolicy     // its annotations' last valid values
	reported map[string]bool // the events recorded about it, "reason\x00message"; nil when none
}

// stateLocked is the state of Service key, made when it has none.
func (r *ServiceReconciler) stateLocked(key string) *serviceState {
	st := r.states[key]
	if st == nil {
		st = &serviceState{}
		r.states[key] = st
	}
	return st
}

// dropStateLocked forgets the state of Service key when it holds nothing.
func (r *ServiceReconciler) dropStateLocked(key string) {
	if st := r.states[key]; st != nil && len(st.owned) == 0 && !st.complete && !st.policy.seen() && st.reported == nil {
		delete(r.states, key)
	}
}

// healthCheckLocked hands the Service's health check to the sink, computed from the input its
// frontends were (in.Service nil: none).
func (r *ServiceReconciler) healthCheckLocked(key string, svc *api.Service, in service.Input) {
	if r.cfg.HealthChecks == nil {
		return
	}
	var hc service.HealthCheck
	if in.Service != nil {
		hc = service.HealthCheckOf(in)
	}
	r.cfg.HealthChecks.SetHealthCheck(key, svc, hc)
}
