package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
	"github.com/edgeplane/edgeplane/pkg/service"
	"github.com/edgeplane/edgeplane/pkg/svchealth"
)

// lbTables are the service maps (bpf/lib/lb.h), opened; Close releases them (the pins stay).
type lbTables struct {
	svc      *lb.SvcMap
	backend  *lb.BackendMap
	ct       *lb.CTMap
	affinity *lb.AffinityMap
}

func openLBTables(root string) (*lbTables, error) {
	t := &lbTables{}
	var err error
	if t.svc, err = lb.OpenSvc(root); err != nil {
		return nil, err
	}
	if t.backend, err = lb.OpenBackend(root); err == nil {
		if t.ct, err = lb.OpenCT(root); err == nil {
			t.affinity, err = lb.OpenAffinity(root)
		}
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func (t *lbTables) Close() error {
	var errs []error
	if t.svc != nil {
		errs = append(errs, t.svc.Close())
	}
	if t.backend != nil {
		errs = append(errs, t.backend.Close())
	}
	if t.ct != nil {
		errs = append(errs, t.ct.Close())
	}
	if t.affinity != nil {
		errs = append(errs, t.affinity.Close())
	}
	return errors.Join(errs...)
}

// The adapters below give the ServiceReconciler pkg/maps/lb through its interfaces.

func svcKey(k service.FrontendKey) (lb.SvcKey, error) {
	vip, err := maps.IPv4From(k.VIP)
	if err != nil {
		return lb.SvcKey{}, fmt.Errorf("frontend %s: %w", k, err)
	}
	return lb.SvcKey{VIP: vip, Port: lb.PortFrom(k.Port), Proto: k.Proto, Scope: k.Scope}, nil
}

func frontendKey(k lb.SvcKey) service.FrontendKey {
	return service.FrontendKey{VIP: k.VIP.Addr(), Port: k.Port.Uint16(), Proto: k.Proto, Scope: k.Scope}
}

func lbBackend(b service.Backend) (lb.Backend, error) {
	ip, err := maps.IPv4From(b.IP)
	if err != nil {
		return lb.Backend{}, fmt.Errorf("backend %s: %w", b, err)
	}
	return lb.Backend{IP: ip, Port: lb.PortFrom(b.Port)}, nil
}

func serviceBackend(ip maps.IPv4, port lb.Port) service.Backend {
	return service.Backend{IP: ip.Addr(), Port: port.Uint16()}
}

type frontendTable struct{ m *lb.SvcMap }

func (t frontendTable) Upsert(k service.FrontendKey, e controller.ServiceEntry) error {
	key, err := svcKey(k)
	if err != nil {
		return err
	}
	return t.m.Upsert(key, lb.Svc{ID: e.ID, Count: e.Count, Flags: e.Flags, AffinityTimeout: e.AffinityTimeout, Unreachable: e.Unreachable})
}

func (t frontendTable) Delete(k service.FrontendKey) error {
	key, err := svcKey(k)
	if err != nil {
		return err
	}
	return t.m.Delete(key)
}

func (t frontendTable) List() (map[service.FrontendKey]controller.ServiceEntry, error) {
	out := map[service.FrontendKey]controller.ServiceEntry{}
	err := t.m.IterateBatch(func(k lb.SvcKey, v lb.Svc) bool {
		out[frontendKey(k)] = controller.ServiceEntry{ID: v.ID, Count: v.Count, Flags: v.Flags, AffinityTimeout: v.AffinityTimeout, Unreachable: v.Unreachable}
		return true
	})
	return out, err
}

type backendTable struct{ m *lb.BackendMap }

func (t backendTable) Upsert(s controller.BackendSlot, b service.Backend) error {
	v, err := lbBackend(b)
	if err != nil {
		return err
	}
	return t.m.Upsert(lb.BackendKey{SvcID: s.ID, Slot: s.Slot}, v)
}

// UpsertSet writes a whole backend set in one system call (controller.BackendSetWriter).
func (t backendTable) UpsertSet(id uint32, backends []service.Backend) error {
	keys, values := make([]lb.BackendKey, len(backends)), make([]lb.Backend, len(backends))
	for slot, b := range backends {
		v, err := lbBackend(b)
		if err != nil {
			return err
		}
		keys[slot], values[slot] = lb.BackendKey{SvcID: id, Slot: uint32(slot)}, v
	}
	return t.m.UpsertBatch(keys, values)
}

func (t backendTable) Delete(s controller.BackendSlot) error {
	return t.m.Delete(lb.BackendKey{SvcID: s.ID, Slot: s.Slot})
}

// Walk visits every slot with batch reads (controller.BackendWalker).
func (t backendTable) Walk(fn func(controller.BackendSlot, service.Backend)) error {
	return t.m.IterateBatch(func(k lb.BackendKey, v lb.Backend) bool {
		fn(controller.BackendSlot{ID: k.SvcID, Slot: k.Slot}, serviceBackend(v.IP, v.Port))
		return true
	})
}

func (t backendTable) List() (map[controller.BackendSlot]service.Backend, error) {
	out := map[controller.BackendSlot]service.Backend{}
	err := t.m.IterateBatch(func(k lb.BackendKey, v lb.Backend) bool {
		out[controller.BackendSlot{ID: k.SvcID, Slot: k.Slot}] = serviceBackend(v.IP, v.Port)
		return true
	})
	return out, err
}

type affinityTable struct{ m *lb.AffinityMap }

func affinityKey(k controller.AffinityKey) (lb.AffinityKey, error) {
	client, err := maps.IPv4From(k.Client)
	if err != nil {
		return lb.AffinityKey{}, fmt.Errorf("affinity client: %w", err)
	}
	return lb.AffinityKey{SvcID: k.ID, Client: client}, nil
}

func (t affinityTable) Upsert(k controller.AffinityKey, a controller.Affinity) error {
	key, err := affinityKey(k)
	if err != nil {
		return err
	}
	b, err := lbBackend(a.Backend)
	if err != nil {
		return err
	}
	return t.m.Upsert(key, lb.Affinity{IP: b.IP, Port: b.Port, LastSeen: a.LastSeen})
}

func (t affinityTable) Delete(k controller.AffinityKey) error {
	key, err := affinityKey(k)
	if err != nil {
		return err
	}
	return t.m.Delete(key)
}

func (t affinityTable) List() (map[controller.AffinityKey]controller.Affinity, error) {
	out := map[controller.AffinityKey]controller.Affinity{}
	err := t.m.IterateBatch(func(k lb.AffinityKey, v lb.Affinity) bool {
		out[controller.AffinityKey{ID: k.SvcID, Client: netip.AddrFrom4(k.Client)}] =
			controller.Affinity{Backend: serviceBackend(v.IP, v.Port), LastSeen: v.LastSeen}
		return true
	})
	return out, err
}

// services wires the service reconciler and the conntrack garbage collector to the informers and
// the maps.
type services struct {
	reconciler *controller.ServiceReconciler
	gc         *conntrackGC
	health     *svchealth.Server      // health check node ports of externalTrafficPolicy: Local Services
	proxy      *svchealth.ProxyHealth // --healthz-bind-address
	healthz    string
	informers  map[string]cache.SharedIndexInformer // for the readiness checks
}

// newServices wires the service reconciler, whose findings about Services go to clusterRecorder,
// and the health check servers, whose failures are this node's own and go to recorder.
func (a *Agent) newServices(inf *k8s.Informers, tbl *tables, recorder, clusterRecorder record.EventRecorder, domains controller.DomainModel) (*services, error) {
	svcInformer, sliceInformer := inf.Services(), inf.EndpointSlices()
	nodes := corelisters.NewNodeLister(inf.Nodes().GetIndexer())
	// kube-proxy's health timeout: twice its sync period.
	proxy := &svchealth.ProxyHealth{Timeout: 2 * a.cfg.Resync, Node: func() (*corev1.Node, error) {
		return nodes.Get(a.cfg.NodeName)
	}}
	health := svchealth.New(svchealth.Config{NodeName: a.cfg.NodeName, Recorder: recorder, Proxy: proxy})
	rec, err := controller.NewServiceReconciler(controller.ServiceReconcilerConfig{
		NodeName:  a.cfg.NodeName,
		Services:  svcInformer,
		Slices:    sliceInformer,
		Nodes:     inf.Nodes(),
		Frontends: a.routedFrontends(frontendTable{tbl.lb.svc}, inf),
		Backends:  backendTable{tbl.lb.backend},
		Affinity:  affinityTable{tbl.lb.affinity},
		Recorder:  clusterRecorder,
		Resync:    a.cfg.Resync,
		Metrics:   a.telemetry.metrics,
		Domains:   domains,
		Index:     serviceIndex{runDir: a.cfg.RunDir},

		HealthChecks: health,
	})
	if err != nil {
		return nil, err
	}
	proxy.Ready, proxy.Pending = func() bool { return isClosed(rec.Ready()) }, rec.Pending
	gc := &conntrackGC{
		ct: tbl.lb.ct, affinity: tbl.lb.affinity, services: rec, timeouts: a.cfg.CTCloseTimeouts(),
		now: bootTime, batch: conntrackGCBatch, metrics: a.telemetry.metrics,
	}
	return &services{reconciler: rec, gc: gc, health: health, proxy: proxy, healthz: a.cfg.HealthzBindAddress, informers: map[string]cache.SharedIndexInformer{
		"services": svcInformer, "endpointslices": sliceInformer,
	}}, nil
}

// run runs the reconciler, and the garbage collector once the reconciler is ready, until ctx is
// done.
func (s *services) run(ctx context.Context, metrics controller.Metrics) error {
	defer s.health.Close() // after the reconciler stopped: nothing sets them any more
	var gc sync.WaitGroup
	defer gc.Wait()
	if s.healthz != "" {
		gc.Go(func() { s.proxy.Run(ctx, s.healthz) })
	}
	if gcPolicyOurs() {
		// The start-up pass begins once the caches hold the initial lists: from then on the
		// decoding is over and the steady pace applies (steadyGCPercent).
		gc.Go(func() {
			synced := make([]cache.InformerSynced, 0, len(s.informers))
			for _, inf := range s.informers {
				synced = append(synced, inf.HasSynced)
			}
			if cache.WaitForCacheSync(ctx.Done(), synced...) {
				debug.SetGCPercent(steadyGCPercent)
			}
		})
	}
	gc.Go(func() {
		select {
		case <-ctx.Done():
			return
		case <-s.reconciler.Ready():
		}
		if gcPolicyOurs() {
			debug.FreeOSMemory() // the start-up's garbage
		}
		s.gc.run(ctx, conntrackGCInterval, func(took time.Duration, err error) {
			if metrics != nil {
				metrics.ObserveReconcile(controller.ConntrackGCController, took, err)
			}
		})
	})
	return s.reconciler.Run(ctx)
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// readyCheck fails until the start-up pass has programmed every Service (/readyz).
func (s *services) readyCheck() error {
	select {
	case <-s.reconciler.Ready():
		return nil
	default:
		return errors.New("services not programmed yet")
	}
}

// serviceIndex writes the Services' frontends as the name index's services.json (pkg/nameindex), where
// edgeplanectl finds service names, agent running or not.
type serviceIndex struct{ runDir string }

func (x serviceIndex) Sync(owned map[string][]service.FrontendKey) error {
	out := make([]nameindex.Service, 0, len(owned))
	for key, fs := range owned {
		ns, name, _ := strings.Cut(key, "/")
		svc := nameindex.Service{Namespace: ns, Name: name}
		for _, f := range fs {
			svc.Frontends = append(svc.Frontends, nameindex.Frontend{IP: f.VIP, Port: f.Port, Proto: f.Proto.String(), Scope: f.Scope.String()})
		}
		out = append(out, svc)
	}
	return nameindex.WriteServices(x.runDir, out)
}

// steadyGCPercent is the agent's GOGC from its start-up pass on (unless the environment sets GOGC
// or GOMEMLIMIT: gcPolicyOurs): the heap is then mostly the informers' caches and the
// reconcilers' state, which change slowly, so collecting at half the default growth costs little
// CPU and keeps the agent's memory closer to its live heap (with 10,000 Services ~20 MB live;
// peak RSS 59 instead of 63-64 MiB with GOGC 50 from the end of the pass, 73-76 MiB without:
// docs/benchmarks.md, cold start). Decoding the initial lists keeps the default: it allocates
// fast, and collecting twice as often there made a first start take 2.4 s instead of 1.6.
const steadyGCPercent = 50

// gcPolicyOurs: the environment sets neither GOGC nor GOMEMLIMIT, so the agent's GC policy
// applies (steadyGCPercent); otherwise the operator's choice stands as Go applies it.
func gcPolicyOurs() bool {
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if _, set := os.LookupEnv(v); set {
			return false
		}
	}
	return true
}
