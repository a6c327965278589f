package agent

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/controller/conntrackgc"
	"github.com/edgeplane/edgeplane/pkg/controller/externalroutes"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
	"github.com/edgeplane/edgeplane/pkg/service"
	"github.com/edgeplane/edgeplane/pkg/svchealth"
)

// services wires the service reconciler and the conntrack garbage collector to the informers and
// the maps.
type services struct {
	reconciler *controller.ServiceReconciler
	gc         *conntrackgc.Collector
	health     *svchealth.Server      // health check node ports of externalTrafficPolicy: Local Services
	proxy      *svchealth.ProxyHealth // --healthz-bind-address
	healthz    string
	informers  map[string]k8s.Informer // for the readiness checks
}

// newServices wires the service reconciler, whose findings about Services go to clusterRecorder,
// and the health check servers, whose failures are this node's own and go to recorder.
func (a *Agent) newServices(inf *k8s.Informers, tbl mapTables, recorder, clusterRecorder k8s.EventRecorder, domains controller.DomainModel) (*services, error) {
	svcInformer, sliceInformer := inf.Services(), inf.EndpointSlices()
	nodes := k8s.NewNodeLister(inf.Nodes().GetIndexer())
	// kube-proxy's health timeout: twice its sync period.
	proxy := &svchealth.ProxyHealth{Timeout: 2 * a.cfg.Resync, Node: func() (*k8s.Node, error) {
		return nodes.Get(a.cfg.NodeName)
	}}
	health := svchealth.New(svchealth.Config{NodeName: a.cfg.NodeName, Recorder: recorder, Proxy: proxy})
	rec, err := controller.NewServiceReconciler(controller.ServiceReconcilerConfig{
		NodeName:  a.cfg.NodeName,
		Services:  svcInformer,
		Slices:    sliceInformer,
		Nodes:     inf.Nodes(),
		Frontends: tbl.Frontends(),
		Backends:  tbl.Backends(),
		Affinity:  tbl.Affinity(),
		Recorder:  clusterRecorder,
		Resync:    a.cfg.Resync,
		Metrics:   a.telemetry.metrics,
		Domains:   domains,
		Index:     &serviceIndex{runDir: a.cfg.RunDir},

		HealthChecks: health,
		FrontendHook: externalroutes.New(externalroutes.Config{
			Device: a.cfg.VXLANDevice,
			Src:    a.podCIDR.Addr(),
			Inside: []netip.Prefix{a.cfg.ClusterCIDR, a.cfg.ServiceCIDR},
			Nodes:  nodes,
			Logger: klog.Background().WithName("externalip-routes"),
		}),
	})
	if err != nil {
		return nil, err
	}
	proxy.Ready, proxy.Pending = func() bool { return isClosed(rec.Ready()) }, rec.Pending
	gc := conntrackgc.New(conntrackgc.Config{
		CT: tbl.Conntrack(), Affinity: tbl.AffinityMap(), Services: rec, Timeouts: a.cfg.CTCloseTimeouts(),
		Metrics: a.telemetry.metrics,
	})
	return &services{reconciler: rec, gc: gc, health: health, proxy: proxy, healthz: a.cfg.HealthzBindAddress, informers: map[string]k8s.Informer{
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
		// decoding is over and the pass's pace applies (passGCPercent); once it is done, the
		// steady one (steadyGCPercent). One goroutine sets both, in that order.
		gc.Go(func() {
			synced := make([]cache.InformerSynced, 0, len(s.informers))
			for _, inf := range s.informers {
				synced = append(synced, inf.HasSynced)
			}
			if !cache.WaitForCacheSync(ctx.Done(), synced...) {
				return
			}
			debug.SetGCPercent(passGCPercent)
			select {
			case <-ctx.Done():
				return
			case <-s.reconciler.Ready():
			}
			debug.SetGCPercent(steadyGCPercent)
			debug.FreeOSMemory() // the start-up's garbage
			releaseAfterCollections(ctx, releaseEvery)
		})
	}
	gc.Go(func() {
		select {
		case <-ctx.Done():
			return
		case <-s.reconciler.Ready():
		}
		s.gc.Run(ctx, func(took time.Duration, err error) {
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
type serviceIndex struct {
	runDir  string
	written writtenFile
}

// Intact: services.json is still the file last written (controller.Intact).
func (x *serviceIndex) Intact() bool { return x.written.intact(nameindex.ServicesPath(x.runDir)) }

func (x *serviceIndex) Sync(owned map[string][]service.FrontendKey) error {
	out := make([]nameindex.Service, 0, len(owned))
	for key, fs := range owned {
		ns, name, _ := strings.Cut(key, "/")
		svc := nameindex.Service{Namespace: ns, Name: name}
		for _, f := range fs {
			svc.Frontends = append(svc.Frontends, nameindex.Frontend{IP: f.VIP, Port: f.Port, Proto: f.Proto.String(), Scope: f.Scope.String()})
		}
		out = append(out, svc)
	}
	return x.written.wrote(nameindex.ServicesPath(x.runDir), nameindex.WriteServices(x.runDir, out))
}

// steadyGCPercent is the agent's GOGC once its start-up pass is done (unless the environment sets GOGC
// or GOMEMLIMIT: gcPolicyOurs): the heap is then mostly the informers' caches and the
// reconcilers' state, which change slowly and allocate little (an idle agent's events, passes
// and lease renewals; Node heartbeats since they are decoded without their status,
// nodedecode.go), so collecting at a tenth of the default growth costs little CPU and keeps the
// agent's memory close to its live heap: the runtime keeps up to ~1.1 times the heap goal
// resident. BenchmarkScale at full size (5,000 Nodes, 10,000 Services x 15; paired runs of
// 2026-12-07, docs/benchmarks.md, Scale): 10 against 25 took steady RSS from 67.3 to 64.7 MiB
// and peak from 74.9 to 71.1 at 0.1 points more idle CPU, but heartbeat CPU from 1.9 to 3.1 % of
// a core while heartbeats were decoded whole; with the compact decoding, 62.3 against 68.0
// steady, heartbeats at 2.1 against 2.0 %. Earlier, at 2,000 Nodes: steady RssAnon 32-33 MiB at
// 25 against 37-39 at 50, idle CPU alike; 50 against the default had given peak RSS 59 instead
// of 73-76 MiB at 10,000 Services (cold start). Decoding the initial lists keeps the default:
// it allocates fast, and collecting more often there delays the first start (2.4 s instead of
// 1.6 then; with GOGC 50 from the start at 2,000 Nodes, programmed after 5-8 s instead of 3-4,
// run second in the same lab, for 3-5 MiB less peak).
const steadyGCPercent = 10

// passGCPercent is the agent's GOGC during its start-up pass, between the initial lists and
// steadyGCPercent: the pass computes and writes every Service and node, garbage at a rate a
// steady pace would collect too often (at GOGC 10 from the lists on, the full-size lab's agents
// were programmed after 3.1-3.6 s instead of 2.2-2.6).
const passGCPercent = 25

// releaseEvery is how often at most releaseAfterCollections hands freed memory back.
const releaseEvery = 10 * time.Second

// releaseAfterCollections hands the heap's free pages back to the system after the runtime's own
// collections, at most once every period, until ctx is done. The runtime keeps up to a tenth of
// the heap in use as free pages for the allocations to come (its scavenger's goal), ~3-4 MiB of
// the settled agent's resident set at issue 18's scale; an agent's steady heap grows little
// between its periodic passes, whose garbage the collections that follow them free. The release
// is a forced collection and a scavenge of every free page (debug.FreeOSMemory): one more
// collection for each of the runtime's that left releaseAbove free or more, checked once a
// second, at most one every period. At idle, the runtime collects after each periodic pass (two
// a minute at issue 18's scale) and at least every two minutes.
func releaseAfterCollections(ctx context.Context, period time.Duration) {
	samples := []metrics.Sample{{Name: "/gc/cycles/automatic:gc-cycles"}, {Name: "/memory/classes/heap/free:bytes"}}
	read := func() (cycles, free uint64) {
		metrics.Read(samples)
		for i, v := range []*uint64{&cycles, &free} {
			if samples[i].Value.Kind() == metrics.KindUint64 {
				*v = samples[i].Value.Uint64()
			}
		}
		return cycles, free
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	seen, _ := read()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			cycles, free := read()
			if cycles == seen || now.Sub(last) < period {
				continue
			}
			if free >= releaseAbove { // else not worth a collection
				debug.FreeOSMemory()
				last = now
			}
			seen, _ = read()
		}
	}
}

// releaseAbove is the free heap (not yet returned) worth a release.
const releaseAbove = 512 << 10

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
