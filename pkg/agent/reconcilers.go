package agent

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
	"k8s.io/klog/v2"
)

// The reconcilers, wired to the informers and the maps (pkg/controller/maptables).

// watch runs the informers and reconcilers, writes the CNI config once the maps hold every node,
// and re-converges the host periodically until ctx is done.
func (a *Agent) watch(ctx context.Context, tbl mapTables, inf *k8s.Informers) error {
	logger := klog.FromContext(ctx)
	recorder := k8s.NewRecorder(a.client, k8s.Scheme, api.EventSource{Component: "edgeplane-agent", Host: a.cfg.NodeName})
	recorder.FollowReachability(a.apiserver) // events recorded during a cut are written after it
	recorderCtx, stopRecorder := context.WithCancel(ctx)
	defer stopRecorder()
	go recorder.Run(recorderCtx)

	election, err := a.reporterElection()
	if err != nil {
		return err
	}
	// Problems of cluster-wide objects are recorded by one agent only (controller/reporter.go).
	var clusterRecorder k8s.EventRecorder = recorder
	if election != nil {
		clusterRecorder = k8s.WhileHeld(recorder, election.Held)
	}

	cmNamespace, cmName, err := a.cfg.DomainConfigRef()
	if err != nil {
		return err
	}
	var domains *controller.DomainConfig
	if cmName != "" {
		if domains, err = controller.NewDomainConfig(inf.ConfigMap(cmNamespace, cmName), cmName, clusterRecorder, a.telemetry.metrics); err != nil {
			return err
		}
	} else {
		logger.Info("Domain configuration disabled (--domain-config is empty): every pool is its own domain, all pairs public (default)")
	}
	nodeInformer := inf.Nodes()
	// One resolver for both: its neighbour watch keeps what it caches for the periodic pass.
	nextHops := netdev.NewCachedNextHops(a.underlay.Index)
	nodesRec, err := controller.NewNodeReconciler(controller.NodeReconcilerConfig{
		Local:    controller.LocalNode{Name: a.cfg.NodeName, NodeIP: a.underlay.IP, PodCIDR: a.podCIDR, ClusterCIDR: a.cfg.ClusterCIDR},
		Informer: nodeInformer,
		Routes:   tbl.Routes(), Nodes: tbl.Nodes(),
		NextHop:    nextHops,
		Neighbours: nextHops,
		Recorder:   recorder, ClusterRecorder: clusterRecorder, Resync: a.cfg.Resync, Metrics: a.telemetry.metrics,

		Domains:     domainModel(domains),
		DomainTable: tbl.Domains(),
		HostRoutes:  &watchedHostRoutes{HostRoutes: netdev.HostRoutes{UnderlayIndex: a.underlay.Index}, routes: nextHops},
		OnLocal:     a.setLocal,
		NodeIndex:   &nodeIndex{runDir: a.cfg.RunDir},
	})
	if err != nil {
		return err
	}
	// This node's route-mode view (its domain's encapsulation, BGP speaker, peers): the pod MTU
	// follows it (podMTU), and so does the BGP speaker. The routes' encapsulation follows the
	// domain configuration in the node reconciler.
	routeMode, err := controller.NewRouteModeView(a.cfg.NodeName, nodeInformer, domainModel(domains))
	if err != nil {
		return err
	}
	svcs, err := a.newServices(inf, tbl, recorder, clusterRecorder, domainModel(domains))
	if err != nil {
		return err
	}
	secretNamespace := cmNamespace // the peers' password Secrets live beside the ConfigMap
	if secretNamespace == "" {
		secretNamespace = AgentNamespace()
	}
	speaker, err := a.newBGPSpeaker(nodeInformer, domainModel(domains), secretNamespace, recorder)
	if err != nil {
		return err
	}
	a.bgp = speaker // Run stops it, once it knows whether to withdraw
	a.telemetry.metrics.SetBGPReport(speaker.Report)
	routeMode.OnChange(func(r domain.NodeRouting) {
		a.routing.Store(&r)
		if err := a.refreshNodeConfig(); err != nil { // the pod MTU follows the encapsulation
			logger.Error(err, "Rewriting the node config")
		}
		speaker.setView(r)
	})
	if domains != nil {
		domains.OnChange(nodesRec.Refresh)
		domains.OnChange(svcs.reconciler.Refresh)
		domains.OnChange(routeMode.Refresh)
	}
	gc, err := controller.NewPodGC(controller.PodGCConfig{
		Informer:  inf.Pods(),
		Endpoints: tbl.Endpoints(),
		Links:     netdev.Links{},
		Interval:  a.cfg.Resync,
		Metrics:   a.telemetry.metrics,
	})
	if err != nil {
		return err
	}
	watched := map[string]k8s.Informer{"nodes": nodeInformer, "pods": inf.Pods()}
	for resource, informer := range svcs.informers {
		watched[resource] = informer
	}
	a.telemetry.watchInformers(&a.ready, watched)
	a.ready.addChecks(svcs.readyCheck, nil)
	ctx, cancel := context.WithCancel(ctx)
	inf.Start(ctx) // those made since run started the first ones
	var running sync.WaitGroup
	errs := make(chan error, 3)
	running.Go(func() { errs <- nodesRec.Run(ctx) })
	running.Go(func() { errs <- gc.Run(ctx) })
	running.Go(func() { errs <- svcs.run(ctx, a.telemetry.metrics) })
	running.Go(func() { speaker.run(ctx) })
	running.Go(func() { a.reportReconnections(ctx, recorder) })
	running.Go(func() {
		a.keepSnapshot(ctx, inf.Pods(), func() bool { return a.ready.synced.Load() && svcs.readyCheck() == nil })
	})
	if domains != nil {
		running.Go(func() {
			if domains.WaitForSync(ctx) {
				msg, kv := domains.InEffect()
				logger.Info(msg, append([]any{"configmap", cmNamespace + "/" + cmName}, kv...)...)
				routeMode.Refresh() // its node events before this were too early
			}
		})
	}
	if election != nil {
		election.OnAcquire(func() {
			if domains != nil {
				domains.ReportAgain()
			}
			nodesRec.ReportAgain()
			svcs.reconciler.ReportAgain()
		})
		running.Go(func() { election.Run(ctx) })
	}
	// The maps close after this function: nothing may still write to them then.
	defer running.Wait()
	defer cancel()

	select {
	case <-nodesRec.Ready():
	case err := <-errs:
		return errors.Join(err, ctx.Err())
	}
	if err := a.publishNodeConfig(); err != nil {
		return err
	}
	a.ready.synced.Store(true)
	logger.Info("Ready: datapath attached, maps synced, node config written", "path", cninode.Path(a.cfg.RunDir))
	a.convergeLoop(ctx, k8s.NewNodeLister(nodeInformer.GetIndexer()))
	logger.Info("Stopping; pinned maps and links stay in place")
	return nil
}

// reporterElection is the election of the agent that records events about cluster-wide objects;
// nil when --reporter-lease is empty (every agent records them).
func (a *Agent) reporterElection() (*k8s.Election, error) {
	namespace, name, err := a.cfg.ReporterLeaseRef()
	if err != nil || name == "" {
		return nil, err
	}
	return &k8s.Election{API: a.client, Namespace: namespace, Name: name, Identity: a.cfg.NodeName,
		Duration: a.cfg.ReporterLeaseDuration}, nil
}

// domainModel avoids a typed nil in the interface: without a ConfigMap the reconciler uses the
// default model.
func domainModel(d *controller.DomainConfig) controller.DomainModel {
	if d == nil {
		return nil
	}
	return d
}

// nodeIndex writes the node reconciler's node set as the name index's nodes.json (pkg/nameindex),
// where edgeplanectl finds node names and pools, agent running or not. It stays on SIGTERM.
type nodeIndex struct {
	runDir  string
	written writtenFile
}

func (x *nodeIndex) Sync(nodes []controller.NodeName) error {
	out := make([]nameindex.Node, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, nameindex.Node{Name: n.Name, NodeIP: n.NodeIP, PodCIDR: n.PodCIDR, Pool: n.Pool,
			Domain: n.Domain, ThisNode: n.Local})
	}
	return x.written.wrote(nameindex.NodesPath(x.runDir), nameindex.WriteNodes(x.runDir, out))
}

// Intact: nodes.json is still the file last written (controller.Intact).
func (x *nodeIndex) Intact() bool { return x.written.intact(nameindex.NodesPath(x.runDir)) }

// watchedHostRoutes are the node reconciler's host routes, intact (controller.Intact) while no
// route notification came since their last sync: the periodic pass then does not list the
// kernel's routes (thousands at scale) to find none missing. Their own sync's notifications
// make the next periodic pass list them once.
type watchedHostRoutes struct {
	netdev.HostRoutes
	routes *netdev.CachedNextHops // its route subscription counts the notifications

	mu        sync.Mutex
	synced    bool
	syncedGen uint64
}

func (h *watchedHostRoutes) Sync(want map[netip.Prefix]netdev.HostRoute) error {
	gen, watched := h.routes.RouteGeneration()
	err := h.HostRoutes.Sync(want)
	h.mu.Lock()
	h.synced, h.syncedGen = err == nil && watched, gen
	h.mu.Unlock()
	return err
}

func (h *watchedHostRoutes) Intact() bool {
	gen, watched := h.routes.RouteGeneration()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.synced && watched && gen == h.syncedGen
}
