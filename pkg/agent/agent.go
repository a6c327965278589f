package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/agent/podcidr"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/maps/nonmasq"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// Agent is one run of edgeplane-agent.
type Agent struct {
	cfg       Config
	client    k8s.API
	ready     readiness
	telemetry *telemetry

	underlay netdev.Underlay
	podCIDR  netip.Prefix
	device   netdev.Device
	vtepMAC  net.HardwareAddr // chosen by takeOverFromFlannel: the MAC peers know
	dp       *datapath.Datapath
	nodeCfg  *nodecfg.Map
	nonMasq  *nonmasq.Map

	// local is this node's domain and cloud gateway as the node reconciler last reported them;
	// node_cfg_map carries them. Until then, what the previous agent pinned.
	localMu sync.Mutex
	local   controller.LocalState
}

// Run runs the agent until ctx is done (SIGTERM), then stops watching and leaves every pin in place,
// unless its DaemonSet (--daemonset) was deleted: then it uninstalls from the node on its way out.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	client, err := k8s.NewClient(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	var own *k8s.OwnDaemonSet
	if namespace, name, _ := cfg.DaemonSetRef(); name != "" {
		own = client.WatchOwnDaemonSet(ctx, namespace, name)
	}
	a := &Agent{cfg: cfg, client: client}
	if err := a.run(ctx); err != nil || ctx.Err() == nil || own == nil {
		return err
	}
	// SIGTERM: a rolling update, an eviction or a restart leave the pins for the next agent; the
	// DaemonSet's deletion (kubectl delete) means the install is going away.
	stopCtx := context.WithoutCancel(ctx)
	deleted, how := own.Deleted(stopCtx)
	if !deleted {
		klog.FromContext(ctx).Info("Stopping; pins stay for the next agent", "daemonset", cfg.DaemonSet, "daemonsetState", how)
		return nil
	}
	klog.FromContext(ctx).Info("The DaemonSet running this agent was deleted: uninstalling from this node", "daemonset", cfg.DaemonSet, "seenBy", how)
	// Within the pod's termination grace period (30 s by default): the API server part is brief,
	// and by now it usually refuses the deleted service account's token anyway.
	return uninstall(stopCtx, cfg, client, ownerGoneAPITimeout)
}

func (a *Agent) run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	a.telemetry = newTelemetry(a.cfg, &a.ready)
	if a.cfg.MetricsAddr != "" {
		if err := a.ready.serve(ctx, a.cfg.MetricsAddr); err != nil {
			return err
		}
	}
	if a.cfg.MetricsBindAddress != "" {
		go a.ready.serveKubeProxy(ctx, a.cfg.MetricsBindAddress)
	}
	// The cluster-wide informers list while the node registers and the datapath loads: with
	// 10,000 Services the list takes longer than both (docs/benchmarks.md, "Services cold start").
	inf := k8s.NewInformers(a.client, a.cfg.NodeName)
	infCtx, stopInformers := context.WithCancel(ctx)
	defer inf.Shutdown()
	defer stopInformers()
	inf.Nodes()
	inf.Services()
	inf.EndpointSlices()
	inf.Start(infCtx)
	node, err := a.register(ctx)
	if err != nil {
		return err
	}
	if err := a.takeOverFromFlannel(ctx, node); err != nil {
		return err
	}
	if err := a.ensureDevice(); err != nil {
		return err
	}
	dp, err := datapath.Load(a.cfg.BPFFSRoot)
	if err != nil {
		return fmt.Errorf("loading the datapath: %w", err)
	}
	defer dp.Close()
	a.dp = dp
	if replaced := dp.ReplacedMaps(); len(replaced) > 0 {
		logger.Info("Pinned maps were incompatible with this version and start empty", "maps", replaced)
	}
	if a.nodeCfg, err = nodecfg.Open(a.cfg.BPFFSRoot); err != nil {
		return err
	}
	defer a.nodeCfg.Close()
	if pinned, err := a.nodeCfg.Get(); err == nil && pinned.Flags&nodecfg.FlagReady != 0 {
		a.local = controller.LocalState{DomainID: pinned.Domain, IsGateway: pinned.Flags&nodecfg.FlagGateway != 0}
		if pinned.GatewayIP != (maps.IPv4{}) {
			a.local.Gateway = pinned.GatewayIP.Addr()
		}
	}
	if a.nonMasq, err = nonmasq.Open(a.cfg.BPFFSRoot); err != nil {
		return err
	}
	defer a.nonMasq.Close()
	tbl, err := openTables(a.cfg.BPFFSRoot)
	if err != nil {
		return err
	}
	defer tbl.Close()
	if err := a.programDatapath(); err != nil {
		return err
	}
	if err := dp.UpdatePodLinks(); err != nil {
		logger.Error(err, "Updating pod attachments to the new program; the old one keeps running there")
	}
	a.ready.datapath.Store(true)
	if err := a.publishVTEP(ctx, node); err != nil {
		return err
	}
	return a.watch(ctx, tbl, inf)
}

// register finds this node, its underlay and its pod CIDR, refusing overlapping networks.
func (a *Agent) register(ctx context.Context) (*corev1.Node, error) {
	node, err := a.getNode(ctx)
	if err != nil {
		return nil, err
	}
	nodeIP, _ := k8s.InternalIP(node)
	if a.underlay, err = netdev.FindUnderlay(a.cfg.UnderlayInterface, nodeIP); err != nil {
		return nil, err
	}
	if err := CheckOverlaps(
		Network{"cluster CIDR (--cluster-cidr)", a.cfg.ClusterCIDR},
		Network{"service CIDR (--service-cidr)", a.cfg.ServiceCIDR},
		Network{"node network (on " + a.underlay.Name + ")", a.underlay.Prefix.Masked()},
	); err != nil {
		a.warnNode(ctx, node, ReasonOverlappingNetworks, err)
		return nil, err
	}
	alloc := &podcidr.Allocator{Client: a.client, ClusterCIDR: a.cfg.ClusterCIDR, MaskSize: a.cfg.NodeCIDRMaskSize}
	if a.podCIDR, err = alloc.Ensure(ctx, a.cfg.NodeName); err != nil {
		return nil, fmt.Errorf("pod CIDR of node %s: %w", a.cfg.NodeName, err)
	}
	klog.FromContext(ctx).Info("Registered node", "node", a.cfg.NodeName, "podCIDR", a.podCIDR,
		"underlay", a.underlay.Name, "nodeIP", a.underlay.IP, "nodeNetwork", a.underlay.Prefix)
	return node, nil
}

// getNode waits for kubelet to register the Node, retrying transient errors.
func (a *Agent) getNode(ctx context.Context) (*corev1.Node, error) {
	var node *corev1.Node
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := a.client.GetNode(ctx, a.cfg.NodeName)
		if err != nil {
			klog.FromContext(ctx).Info("Waiting for this node's Node object", "node", a.cfg.NodeName, "err", err)
			return false, nil
		}
		node = n
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("getting node %s: %w", a.cfg.NodeName, err)
	}
	return node, nil
}

// ensureDevice converges the VXLAN device, its routes (cluster and service CIDRs, host-hairpin
// address) and the sysctls.
func (a *Agent) ensureDevice() error {
	dev, err := netdev.EnsureVXLAN(netdev.VXLAN{
		Name:    a.cfg.VXLANDevice,
		MTU:     a.underlay.MTU - vxlanOverhead,
		MAC:     a.vtepMAC,
		Address: a.podCIDR.Addr(),
	})
	if err != nil {
		return err
	}
	a.device = dev
	overlay := a.podCIDR.Addr()
	if err := netdev.EnsureRoutes(dev.Index,
		netdev.DeviceRoute{Dst: a.cfg.ClusterCIDR, Src: overlay},
		netdev.DeviceRoute{Dst: a.cfg.ServiceCIDR, Src: overlay},
		netdev.DeviceRoute{Dst: netip.PrefixFrom(datapath.HostHairpinIP, 32), Src: a.underlay.IP},
	); err != nil {
		return err
	}
	if err := netdev.EnsureForwarding(a.cfg.ProcSys, a.cfg.VXLANDevice); err != nil {
		return err
	}
	// kube-proxy's conntrack setting, which a node without kube-proxy still needs (netdev).
	_, err = netdev.EnsureConntrackCloseWait(a.cfg.ProcSys, a.cfg.CTTCPCloseWaitTimeout)
	return err
}

func (a *Agent) podMTU() int {
	if a.cfg.MTU != 0 {
		return a.cfg.MTU
	}
	return a.underlay.MTU - vxlanOverhead
}

// programDatapath writes node_cfg_map and nonmasq_map and converges the attachments.
func (a *Agent) programDatapath() error {
	c, err := a.nodeConfig()
	if err != nil {
		return err
	}
	if err := a.nodeCfg.Put(c); err != nil {
		return err
	}
	nonMasq := append(PrefixList{a.cfg.ClusterCIDR}, a.cfg.NonMasqueradeCIDRs...)
	if err := a.nonMasq.Sync(nonMasq); err != nil {
		return err
	}
	if err := a.dp.AttachUnderlay(a.underlay.Index); err != nil {
		return err
	}
	if _, err := a.dp.AttachUnderlayXDP(a.underlay.Index); err != nil {
		return err
	}
	return a.dp.AttachOverlayDevice(a.device.Index)
}

func (a *Agent) nodeConfig() (nodecfg.NodeCfg, error) {
	c := nodecfg.NodeCfg{
		UnderlayIfindex: uint32(a.underlay.Index),
		VxlanIfindex:    uint32(a.device.Index),
		VNI:             k8s.VNI,
		MTU:             uint16(a.podMTU()),
		Flags:           nodecfg.FlagReady,
		EncapMode:       nodecfg.EncapNative,
	}
	if a.cfg.EncapMode == EncapDevice {
		c.EncapMode = nodecfg.EncapDevice
	}
	if a.cfg.Masquerade {
		c.Flags |= nodecfg.FlagMasquerade
	}
	a.localMu.Lock()
	local := a.local
	a.localMu.Unlock()
	c.Domain = local.DomainID
	if local.IsGateway {
		c.Flags |= nodecfg.FlagGateway
	}
	if local.Gateway.IsValid() {
		gw, err := maps.IPv4From(local.Gateway)
		if err != nil {
			return c, err
		}
		c.GatewayIP = gw
	}
	copy(c.VtepMAC[:], a.device.MAC)
	copy(c.UnderlayMAC[:], a.underlay.MAC)
	var err error
	if c.NodeIP, err = maps.IPv4From(a.underlay.IP); err != nil {
		return c, err
	}
	if err := c.SetPodCIDR(a.podCIDR); err != nil {
		return c, err
	}
	if err := c.SetCTCloseTimeouts(a.cfg.CTCloseTimeouts()); err != nil {
		return c, err
	}
	return c, c.SetClusterCIDR(a.cfg.ClusterCIDR)
}

func (a *Agent) vtep() k8s.VTEP { return k8s.VTEP{MAC: a.device.MAC, IP: a.underlay.IP} }

func (a *Agent) publishVTEP(ctx context.Context, node *corev1.Node) error {
	return k8s.PatchNodeAnnotations(ctx, a.client, node, k8s.VTEPAnnotations(a.vtep()))
}

// watch runs the informers and reconcilers, writes the CNI config once the maps hold every node,
// and re-converges the host periodically until ctx is done.
func (a *Agent) watch(ctx context.Context, tbl *tables, inf *k8s.Informers) error {
	logger := klog.FromContext(ctx)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(k8s.EventSink(a.client))
	recorder := broadcaster.NewRecorder(k8s.Scheme, corev1.EventSource{Component: "edgeplane-agent", Host: a.cfg.NodeName})

	election, err := a.reporterElection()
	if err != nil {
		return err
	}
	// Problems of cluster-wide objects are recorded by one agent only (controller/reporter.go).
	var clusterRecorder record.EventRecorder = recorder
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
	nodesRec, err := controller.NewNodeReconciler(controller.NodeReconcilerConfig{
		Local:    controller.LocalNode{Name: a.cfg.NodeName, NodeIP: a.underlay.IP, PodCIDR: a.podCIDR, ClusterCIDR: a.cfg.ClusterCIDR},
		Informer: nodeInformer,
		Routes:   routeTable{tbl.routes}, Nodes: nodeTable{tbl.nodes},
		NextHop: netdev.NextHops{UnderlayIndex: a.underlay.Index},

		Neighbours: netdev.NextHops{UnderlayIndex: a.underlay.Index},
		Recorder:   recorder, ClusterRecorder: clusterRecorder, Resync: a.cfg.Resync, Metrics: a.telemetry.metrics,

		Domains:     domainModel(domains),
		DomainTable: domainTable{tbl.domains},
		HostRoutes:  netdev.HostRoutes{UnderlayIndex: a.underlay.Index},
		OnLocal:     a.setLocal,
		NodeIndex:   nodeIndex{runDir: a.cfg.RunDir},
	})
	if err != nil {
		return err
	}
	svcs, err := a.newServices(inf, tbl, recorder, clusterRecorder, domainModel(domains))
	if err != nil {
		return err
	}
	if domains != nil {
		domains.OnChange(nodesRec.Refresh)
		domains.OnChange(svcs.reconciler.Refresh)
	}
	gc, err := controller.NewPodGC(controller.PodGCConfig{
		Informer:  inf.Pods(),
		Endpoints: endpointTable{tbl.endpoints},
		Links:     netdev.Links{},
		Interval:  a.cfg.Resync,
		Metrics:   a.telemetry.metrics,
	})
	if err != nil {
		return err
	}
	watched := map[string]cache.SharedIndexInformer{"nodes": nodeInformer, "pods": inf.Pods()}
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
	if domains != nil {
		running.Go(func() {
			if domains.WaitForSync(ctx) {
				msg, kv := domains.InEffect()
				logger.Info(msg, append([]any{"configmap", cmNamespace + "/" + cmName}, kv...)...)
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
	if err := a.writeNodeConfig(); err != nil {
		return err
	}
	a.ready.synced.Store(true)
	logger.Info("Ready: datapath attached, maps synced, node config written", "path", cninode.Path(a.cfg.RunDir))
	a.convergeLoop(ctx, corelisters.NewNodeLister(nodeInformer.GetIndexer()))
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
type nodeIndex struct{ runDir string }

func (x nodeIndex) Sync(nodes []controller.NodeName) error {
	out := make([]nameindex.Node, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, nameindex.Node{Name: n.Name, NodeIP: n.NodeIP, PodCIDR: n.PodCIDR, Pool: n.Pool,
			Domain: n.Domain, ThisNode: n.Local})
	}
	return nameindex.WriteNodes(x.runDir, out)
}

// setLocal records this node's domain and gateway and rewrites node_cfg_map with them.
func (a *Agent) setLocal(s controller.LocalState) error {
	a.localMu.Lock()
	a.local = s
	a.localMu.Unlock()
	c, err := a.nodeConfig()
	if err != nil {
		return err
	}
	return a.nodeCfg.Put(c)
}

func (a *Agent) writeNodeConfig() error {
	return cninode.Write(a.cfg.RunDir, &cninode.Config{
		NodeName:    a.cfg.NodeName,
		NodeIP:      a.underlay.IP,
		PodCIDR:     a.podCIDR,
		ClusterCIDR: a.cfg.ClusterCIDR,
		MTU:         a.podMTU(),
		BPFFSRoot:   a.cfg.BPFFSRoot,
	})
}

// convergeLoop repairs the device, the datapath and the annotations every resync period: a deleted
// VXLAN device is recreated (with the same MAC) and the overlay programs follow its new ifindex.
func (a *Agent) convergeLoop(ctx context.Context, nodes corelisters.NodeLister) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		logger := klog.FromContext(ctx)
		defer a.telemetry.converged()
		if err := a.ensureDevice(); err != nil {
			logger.Error(err, "Converging the vxlan device")
			return
		}
		if err := a.programDatapath(); err != nil {
			logger.Error(err, "Converging the datapath")
		}
		if err := a.writeNodeConfig(); err != nil {
			logger.Error(err, "Rewriting the node config")
		}
		node, err := nodes.Get(a.cfg.NodeName)
		if err == nil {
			err = a.publishVTEP(ctx, node)
		}
		if err != nil {
			logger.Error(err, "Publishing this node's VTEP")
		}
	}, a.cfg.Resync)
}
