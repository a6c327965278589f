package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// Links answers questions about the host's network interfaces.
type Links interface {
	// NameOf is the name of the interface with ifindex; ok is false when there is none.
	NameOf(ifindex int) (name string, ok bool, err error)
	// Exists says whether an interface with this name exists.
	Exists(name string) (bool, error)
}

// PodLinkPins are the pinned tcx links of pods' host veths (links/pod-<host veth>).
type PodLinkPins interface {
	List() (hostVeths []string, err error)
	Remove(hostVeth string) error // removing an absent pin is not an error
}

// PodGCConfig is what a PodGC reads and writes.
type PodGCConfig struct {
	Informer  k8s.Informer // of this node's Pods only
	Endpoints EndpointTable
	Links     Links
	Pins      PodLinkPins // optional
	// HostVeth names the host-side veth the CNI plugin creates for a pod; optional. With it, the
	// endpoint of a deleted pod whose veth leaked is removed too.
	HostVeth func(*api.Pod) string
	Interval time.Duration // full sweep
	Metrics  Metrics       // optional
}

// PodGC garbage-collects endpoints_map, which the CNI plugin writes: an entry goes when its host veth
// is gone, or when its Pod is deleted and the entry's veth is that pod's. It never deletes an entry
// only because no Pod lists its IP: a CNI ADD finishes before kubelet publishes status.podIP. The
// CNI DEL removes the same entries; deleting twice is harmless.
type PodGC struct {
	cfg    PodGCConfig
	pods   cache.Store // this node's Pods (*api.Pod)
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[gcItem]
}

// gcItem is one unit of work: a deleted pod's address, or (zero) a full sweep.
type gcItem struct {
	ip       netip.Addr
	hostVeth string // the deleted pod's host veth, if known
}

var sweep = gcItem{}

// NewPodGC registers its event handler on the informer; Run starts it.
func NewPodGC(cfg PodGCConfig) (*PodGC, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	g := &PodGC{
		cfg:    cfg,
		pods:   cfg.Informer.GetStore(),
		synced: cfg.Informer.HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[gcItem](),
			workqueue.TypedRateLimitingQueueConfig[gcItem]{Name: PodGCController, MetricsProvider: queueMetrics(cfg.Metrics)}),
	}
	_, err := cfg.Informer.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: g.onDelete})
	if err != nil {
		return nil, fmt.Errorf("adding pod event handler: %w", err)
	}
	return g, nil
}

func (g *PodGC) onDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*api.Pod)
	if !ok || pod.Spec.HostNetwork {
		return
	}
	veth := ""
	if g.cfg.HostVeth != nil {
		veth = g.cfg.HostVeth(pod)
	}
	for _, ip := range podIPs(pod) {
		g.queue.Add(gcItem{ip: ip, hostVeth: veth})
	}
}

// Run sweeps once the informer has synced and then every interval, and handles pod deletions,
// until ctx is done; it returns after its worker.
func (g *PodGC) Run(ctx context.Context) error {
	var workers sync.WaitGroup
	defer workers.Wait()
	defer g.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), g.synced) {
		return errors.New("pod informer did not sync")
	}
	workers.Go(func() { wait.UntilWithContext(ctx, g.runWorker, time.Second) })
	wait.UntilWithContext(ctx, func(context.Context) { g.queue.Add(sweep) }, g.cfg.Interval)
	return nil
}

func (g *PodGC) runWorker(ctx context.Context) {
	for g.processNext(ctx) {
	}
}

func (g *PodGC) processNext(ctx context.Context) bool {
	return processNext(ctx, g.queue, g.cfg.Metrics, PodGCController, "Collecting endpoints",
		func(item gcItem) []any { return []any{"ip", item.ip} }, g.collect)
}

// collect is one queue item's work: the periodic sweep or one deleted pod's endpoints.
func (g *PodGC) collect(ctx context.Context, item gcItem) error {
	if item == sweep {
		return g.sweep(ctx)
	}
	return g.collectDeleted(ctx, item)
}

// sweep deletes every endpoint whose host veth is gone and every pod link pin without its veth.
func (g *PodGC) sweep(ctx context.Context) error {
	eps, err := g.cfg.Endpoints.List()
	if err != nil {
		return fmt.Errorf("listing endpoints: %w", err)
	}
	var errs []error
	for ip, ep := range eps {
		_, alive, err := g.cfg.Links.NameOf(ep.Ifindex)
		if err != nil || alive {
			errs = append(errs, err)
			continue
		}
		klog.FromContext(ctx).Info("Deleting endpoint whose veth is gone", "ip", ip, "ifindex", ep.Ifindex)
		errs = append(errs, g.cfg.Endpoints.Delete(ip))
	}
	errs = append(errs, g.sweepPins(ctx))
	return errors.Join(errs...)
}

func (g *PodGC) sweepPins(ctx context.Context) error {
	if g.cfg.Pins == nil {
		return nil
	}
	veths, err := g.cfg.Pins.List()
	if err != nil {
		return fmt.Errorf("listing pod link pins: %w", err)
	}
	var errs []error
	for _, veth := range veths {
		exists, err := g.cfg.Links.Exists(veth)
		if err != nil || exists {
			errs = append(errs, err)
			continue
		}
		klog.FromContext(ctx).Info("Removing pod link pin whose veth is gone", "hostVeth", veth)
		errs = append(errs, g.cfg.Pins.Remove(veth))
	}
	return errors.Join(errs...)
}

// collectDeleted handles one address of a deleted pod. A live pod on this node holding the same
// address (reused by IPAM) keeps the entry; otherwise it goes if its veth is gone or is the deleted
// pod's.
func (g *PodGC) collectDeleted(ctx context.Context, item gcItem) error {
	eps, err := g.cfg.Endpoints.List()
	if err != nil {
		return fmt.Errorf("listing endpoints: %w", err)
	}
	ep, ok := eps[item.ip]
	if !ok {
		return nil
	}
	if g.addressInUse(item.ip) {
		return nil
	}
	name, alive, err := g.cfg.Links.NameOf(ep.Ifindex)
	if err != nil {
		return fmt.Errorf("looking up ifindex %d: %w", ep.Ifindex, err)
	}
	if alive && (item.hostVeth == "" || name != item.hostVeth) {
		return nil
	}
	klog.FromContext(ctx).Info("Deleting endpoint of deleted pod", "ip", item.ip, "ifindex", ep.Ifindex)
	if err := g.cfg.Endpoints.Delete(item.ip); err != nil {
		return err
	}
	if alive && g.cfg.Pins != nil {
		return g.cfg.Pins.Remove(name)
	}
	return nil
}

// addressInUse reports whether a Pod of this node's cache, not on the host's network, has ip.
func (g *PodGC) addressInUse(ip netip.Addr) bool {
	for _, o := range g.pods.List() {
		p, ok := o.(*api.Pod)
		if !ok || p.Spec.HostNetwork {
			continue
		}
		for _, a := range podIPs(p) {
			if a == ip {
				return true
			}
		}
	}
	return false
}

func podIPs(pod *api.Pod) []netip.Addr {
	var ips []netip.Addr
	for _, s := range pod.Status.PodIPs {
		if ip, err := netip.ParseAddr(s.IP); err == nil {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		if ip, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			ips = append(ips, ip)
		}
	}
	return ips
}
