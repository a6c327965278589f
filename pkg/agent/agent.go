package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/agent/podcidr"
	"github.com/edgeplane/edgeplane/pkg/agentinfo"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/controller/maptables"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/maps/nonmasq"
)

// Agent is one run of edgeplane-agent.
type Agent struct {
	cfg    Config
	client k8s.API
	// apiserver follows whether the API server answers (nil in unit tests: always reachable).
	apiserver *k8s.Reachability
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
	// routing is this node's route-mode view (controller.RouteModeView), nil until known.
	routing atomic.Pointer[domain.NodeRouting]
	// bigTCP is the IPv4 GSO/GRO size the underlay NIC took for BIG TCP (--ipv4-big-tcp), 0 when
	// off or refused; bigTCPRefusal is the last refusal logged (bigtcp.go).
	bigTCP        atomic.Int32
	bigTCPRefusal string
	// nodeConfigMu orders the writes of node.json; nodeConfigPublished is set by the first one
	// (publishNodeConfig): the CNI plugin takes the file's presence for the agent's readiness.
	nodeConfigMu        sync.Mutex
	nodeConfigPublished bool
	// bgp is route mode's BGP speaker; it outlives run, which cannot tell a restart from an
	// uninstall. Nil until watch created it.
	bgp *bgpSpeaker
	// snapshots keeps the snapshot of the last good state (snapshot.go); nil when disabled.
	snapshots *snapshotKeeper
	// moves, after a start without pins and with a snapshot, rewrites the backends of this node's
	// re-created pods (podmoves.go).
	moves *podMoves
	// nodeInformer is the Node informer, listing from the start: registration asks for this Node
	// only after its list (getNode), and the pod CIDR check reads the Nodes from it (cachedNodes).
	// Nil in unit tests.
	nodeInformer k8s.Informer
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
		// Past the SIGTERM: Deleted may wait for the event of the deletion behind it.
		own = client.WatchOwnDaemonSet(ctx, namespace, name)
		defer own.Stop()
	}
	// Whether the API server answers: the informers wait for it rather than back off, and the end
	// of an outage closes the connections that died in it (docs/autonomy.md).
	reach := k8s.NewReachability(client.Probe, cfg.APIServerProbe)
	client.FollowReachability(reach)
	go reach.Run(ctx)
	a := &Agent{cfg: cfg, client: client, apiserver: reach}
	stopCtx := context.WithoutCancel(ctx)
	if err := a.run(ctx); err != nil || ctx.Err() == nil || own == nil {
		return errors.Join(err, a.stopBGP(stopCtx, false))
	}
	// SIGTERM: a rolling update, an eviction or a restart leave the pins for the next agent, and
	// the BGP routes with the peers (graceful restart); the DaemonSet's deletion (kubectl delete)
	// means the install is going away.
	deleted, how := own.Deleted(stopCtx)
	if !deleted {
		klog.FromContext(ctx).Info("Stopping; pins stay for the next agent", "daemonset", cfg.DaemonSet, "daemonsetState", how)
		return a.stopBGP(stopCtx, false)
	}
	klog.FromContext(ctx).Info("The DaemonSet running this agent was deleted: uninstalling from this node", "daemonset", cfg.DaemonSet, "seenBy", how)
	if err := a.stopBGP(stopCtx, true); err != nil {
		klog.FromContext(ctx).Error(err, "Stopping the BGP speaker; its peers drop this node's routes when their hold or restart time ends")
	}
	// Within the pod's termination grace period (30 s by default): the API server part is brief,
	// and by now it usually refuses the deleted service account's token anyway.
	return uninstall(stopCtx, cfg, client, ownerGoneAPITimeout)
}

func (a *Agent) run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	a.telemetry = newTelemetry(a.cfg, &a.ready)
	a.followAPIServer()
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
	a.nodeInformer = inf.Nodes()
	inf.Services()
	inf.EndpointSlices()
	// The reconcilers wait for the domain configuration as well, and the pod garbage collector
	// for this node's Pods: small lists, but each a round trip to a busy API server that need
	// not wait for the registration either.
	if namespace, name, err := a.cfg.DomainConfigRef(); err == nil && name != "" {
		inf.ConfigMap(namespace, name)
	}
	inf.Pods()
	inf.Start(infCtx)
	// Whether a previous agent left its pins: asked before the load below pins new maps.
	pinned := a.pinsPresent()
	// Loading the programs (the verifier: seconds on a small or busy node) and adopting the pinned
	// maps need only the bpffs root: it runs while registration waits for the API server, so an
	// agent started cut off from it has its programs ready when the link returns
	// (docs/autonomy.md). Nothing is attached or written to a map before registration.
	loading := make(chan loadedDatapath, 1)
	started := time.Now()
	go func() {
		dp, err := datapath.Load(a.cfg.BPFFSRoot)
		loading <- loadedDatapath{dp, err, time.Since(started)}
	}()
	loaded := false
	defer func() {
		if !loaded { // registration failed: the load still finishes, then closes
			go func() {
				if l := <-loading; l.dp != nil {
					l.dp.Close()
				}
			}()
		}
	}()
	// A node rebooted while cut off from the API server starts from its snapshot (snapshot.go).
	restore := a.snapshotToRestore(ctx, inf, pinned)
	var node *k8s.Node
	var err error
	if restore != nil {
		err = a.registerFromSnapshot(restore)
	} else if node, err = a.register(ctx); err == nil {
		err = a.takeOverFromFlannel(ctx, node)
	}
	if err != nil {
		return err
	}
	if err := a.ensureDevice(); err != nil {
		return err
	}
	a.ensureBigTCP(ctx)
	registered := time.Since(started)
	l := <-loading
	loaded = true
	dp, err := l.dp, l.err
	if err != nil {
		return fmt.Errorf("loading the datapath: %w", err)
	}
	// Where a cold start's time goes (docs/benchmarks.md, Scale): both run from the start.
	logger.Info("Datapath loaded", "load", l.took.Round(time.Millisecond), "registration", registered.Round(time.Millisecond))
	defer dp.Close()
	a.dp = dp
	a.reportSelf(ctx)
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
	tbl, err := maptables.Open(a.cfg.BPFFSRoot)
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
	if restore != nil {
		if node, err = a.startFromSnapshot(ctx, tbl, restore); err != nil {
			return err
		}
	}
	if err := a.publishVTEP(ctx, node); err != nil {
		return err
	}
	tables, stopMoves := a.followMovedPods(ctx, a.trackForSnapshot(tbl))
	defer stopMoves()
	return a.watch(ctx, tables, inf)
}

// loadedDatapath is the outcome of datapath.Load.
type loadedDatapath struct {
	dp   *datapath.Datapath
	err  error
	took time.Duration
}

// reportSelf exports what the feature probes found on this kernel (the datapath logged it at
// Load) as metrics, and writes <run-dir>/agent.json (pkg/agentinfo) for `edgeplanectl config`.
func (a *Agent) reportSelf(ctx context.Context) {
	features, err := datapath.KernelFeatures() // cached: Load ran the probes
	if err != nil {
		return // Load would have failed
	}
	kernel := agentinfo.Kernel{Release: datapath.KernelRelease(), Features: features.Describe()}
	a.telemetry.metrics.SetKernel(kernel)
	report := &agentinfo.Report{Node: a.cfg.NodeName, Version: a.cfg.Version, Started: time.Now().UTC(),
		Flags: a.cfg.EffectiveFlags(), Kernel: kernel}
	if err := agentinfo.Write(a.cfg.RunDir, report); err != nil {
		klog.FromContext(ctx).Error(err, "Writing the agent report", "path", agentinfo.Path(a.cfg.RunDir))
	}
}

// stopBGP stops the speaker, if one runs: withdraw for an uninstall, else graceful restart.
func (a *Agent) stopBGP(ctx context.Context, withdraw bool) error {
	if a.bgp == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return a.bgp.stop(ctx, withdraw)
}

// register finds this node, its underlay and its pod CIDR, refusing overlapping networks.
func (a *Agent) register(ctx context.Context) (*k8s.Node, error) {
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
	alloc := &podcidr.Allocator{Client: a.client, ClusterCIDR: a.cfg.ClusterCIDR, MaskSize: a.cfg.NodeCIDRMaskSize,
		Nodes: a.cachedNodes}
	if a.podCIDR, err = alloc.Ensure(ctx, a.cfg.NodeName); err != nil {
		return nil, fmt.Errorf("pod CIDR of node %s: %w", a.cfg.NodeName, err)
	}
	klog.FromContext(ctx).Info("Registered node", "node", a.cfg.NodeName, "podCIDR", a.podCIDR,
		"underlay", a.underlay.Name, "nodeIP", a.underlay.IP, "nodeNetwork", a.underlay.Prefix)
	return node, nil
}

// nodeCacheWait bounds how long registration waits for the Node informer's list before it lists
// the Nodes itself.
const nodeCacheWait = 30 * time.Second

// cachedNodes lists the Nodes from the Node informer once it has synced: registration's pod CIDR
// check needs every Node's pod CIDR, and the informer lists them anyway (with 5,000 Nodes a
// second list of the full objects took the loaded API server and the agent about a second more).
func (a *Agent) cachedNodes(ctx context.Context) ([]*k8s.Node, error) {
	if a.nodeInformer == nil {
		return nil, errors.New("no node informer")
	}
	ctx, cancel := context.WithTimeout(ctx, nodeCacheWait)
	defer cancel()
	if err := a.waitNodeList(ctx); err != nil {
		return nil, fmt.Errorf("the node informer did not sync: %w", err)
	}
	return k8s.NewNodeLister(a.nodeInformer.GetIndexer()).List(labels.Everything())
}

// waitNodeList waits until the Node informer has listed the Nodes (none: at once).
func (a *Agent) waitNodeList(ctx context.Context) error {
	if a.nodeInformer == nil {
		return nil
	}
	return wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
		return a.nodeInformer.HasSynced(), nil
	})
}

// getNodeTimeout bounds one GET of this node's Node: a request that hangs on a dead link must not
// outlast the link's return by TCP's retransmission backoff.
const getNodeTimeout = 5 * time.Second

// getNode waits for kubelet to register the Node, retrying transient errors. It asks only once
// the Node informer has listed the Nodes. OpenYurt's YurtHub (v1.7.0) leaves a list out of its
// cache when one of the list's objects is being written to the cache at that moment ("storage is
// pending, skip to store"): a GET of this Node sent beside the informer's list did that on every
// lab start, and the cache then held only the Nodes that changed later. A new agent started from
// that cache during a partition deleted the other Nodes' routes (TestPartitionThroughYurtHub).
// Registration waited for that list anyway: the pod CIDR check reads it (cachedNodes).
func (a *Agent) getNode(ctx context.Context) (*k8s.Node, error) {
	if err := a.waitNodeList(ctx); err != nil {
		return nil, fmt.Errorf("getting node %s: waiting for the node informer: %w", a.cfg.NodeName, err)
	}
	var node *k8s.Node
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		// Cut off from the API server, the agent waits here, touching nothing: the pinned programs
		// and maps the previous agent left keep forwarding (docs/autonomy.md). The wait ends
		// within a second of the link's return.
		if err := a.apiserver.Wait(ctx); err != nil {
			return false, err
		}
		ctx, cancel := context.WithTimeout(ctx, getNodeTimeout)
		defer cancel()
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

func (a *Agent) vtep() k8s.VTEP { return k8s.VTEP{MAC: a.device.MAC, IP: a.underlay.IP} }

func (a *Agent) publishVTEP(ctx context.Context, node *k8s.Node) error {
	return k8s.PatchNodeAnnotations(ctx, a.client, node, k8s.VTEPAnnotations(a.vtep()))
}

// publishNodeConfig writes node.json for the CNI plugin, which creates pods from then on: once the
// maps are synced (Ready), or programmed from the snapshot while the API server is away.
func (a *Agent) publishNodeConfig() error {
	a.nodeConfigMu.Lock()
	defer a.nodeConfigMu.Unlock()
	a.nodeConfigPublished = true
	return a.writeNodeConfigLocked()
}

// refreshNodeConfig rewrites node.json after a change of what it says (the pod MTU follows the
// encapsulation), only once it is published: before, the change waits for publishNodeConfig, and
// an early write would tell the CNI plugin the agent is ready while stale routes are still in the
// maps (a restarted agent learns its domain's routing before its first pass is done).
func (a *Agent) refreshNodeConfig() error {
	a.nodeConfigMu.Lock()
	defer a.nodeConfigMu.Unlock()
	if !a.nodeConfigPublished {
		return nil
	}
	return a.writeNodeConfigLocked()
}

func (a *Agent) writeNodeConfigLocked() error {
	return cninode.Write(a.cfg.RunDir, &cninode.Config{
		NodeName:    a.cfg.NodeName,
		NodeIP:      a.underlay.IP,
		PodCIDR:     a.podCIDR,
		ClusterCIDR: a.cfg.ClusterCIDR,
		MTU:         a.podMTU(),
		BPFFSRoot:   a.cfg.BPFFSRoot,
		// BIG TCP for new pods, where their packets leave unencapsulated (bigtcp.go)
		GSOIPv4MaxSize: a.podGSOIPv4MaxSize(),
	})
}

// convergeLoop repairs the device, the datapath and the annotations every resync period: a deleted
// VXLAN device is recreated (with the same MAC) and the overlay programs follow its new ifindex.
func (a *Agent) convergeLoop(ctx context.Context, nodes *k8s.NodeLister) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		logger := klog.FromContext(ctx)
		defer a.telemetry.converged()
		if err := a.ensureDevice(); err != nil {
			logger.Error(err, "Converging the vxlan device")
			return
		}
		a.ensureBigTCP(ctx)
		if err := a.programDatapath(); err != nil {
			logger.Error(err, "Converging the datapath")
		}
		if err := a.refreshNodeConfig(); err != nil {
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
