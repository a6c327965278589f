// Package metrics is edgeplane-agent's Prometheus instrumentation, kept and served in the text
// format by package promtext (not client_golang, for the agent's size). Everything is registered
// on a registry of its own, served at /metrics on --metrics-addr:
//
//   - the datapath's counters, map fill and attachments, read from the pins under the bpffs root
//     at scrape time by a Collector (datapath.go), so they are exactly what the kernel holds and
//     cost nothing between scrapes;
//   - the reconcilers' outcomes and durations, and their workqueues (the Metrics value is the
//     controller package's Metrics: a per-queue workqueue.MetricsProvider, no global SetProvider);
//   - whether each API watch has synced, the kernel's features (kernel.go), and the build.
//
// Families lists every family with its labels; docs/metrics.md and the Grafana dashboard in
// deploy/grafana are checked against it, and it is checked against the registry.
package metrics

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/metrics/promtext"
)

// Family names.
const (
	DatapathPackets         = "edgeplane_datapath_packets_total"
	DatapathBytes           = "edgeplane_datapath_bytes_total"
	DatapathDrops           = "edgeplane_datapath_drops_total"
	MapEntries              = "edgeplane_map_entries"
	MapCapacity             = "edgeplane_map_capacity"
	ProgramsAttached        = "edgeplane_programs_attached"
	ReconcileTotal          = "edgeplane_reconcile_total"
	ReconcileErrors         = "edgeplane_reconcile_errors_total"
	ReconcileDuration       = "edgeplane_reconcile_duration_seconds"
	WorkqueueDepth          = "edgeplane_workqueue_depth"
	WorkqueueAdds           = "edgeplane_workqueue_adds_total"
	WorkqueueQueueDuration  = "edgeplane_workqueue_queue_duration_seconds"
	WorkqueueWorkDuration   = "edgeplane_workqueue_work_duration_seconds"
	WorkqueueUnfinishedWork = "edgeplane_workqueue_unfinished_work_seconds"
	WorkqueueLongestRunning = "edgeplane_workqueue_longest_running_processor_seconds"
	WorkqueueRetries        = "edgeplane_workqueue_retries_total"
	APIWatchSynced          = "edgeplane_api_watch_synced"
	ConntrackGCDeleted      = "edgeplane_conntrack_gc_deleted_total"
	ServiceUnreachable      = "edgeplane_service_backends_unreachable"
	ServiceNoneReachable    = "edgeplane_service_frontends_unreachable"
	BuildInfo               = "edgeplane_build_info"
)

// Family is one exported metric family.
type Family struct {
	Name   string
	Type   string // counter, gauge or histogram
	Labels []string
	Help   string
}

// Families lists every edgeplane_* family the agent exports (it also exports the standard go_* and
// process_* families).
func Families() []Family {
	return slices.Concat(families, bgpFamilies, kernelFamilies, apiserverFamilies)
}

var families = []Family{
	{DatapathPackets, "counter", []string{"direction", "reason"}, "Packets seen by the BPF programs, by direction and verdict: reason FORWARDED, a drop reason, or ICMP_SENT."},
	{DatapathBytes, "counter", []string{"direction", "reason"}, "Bytes (skb length) seen by the BPF programs, by direction and verdict."},
	{DatapathDrops, "counter", []string{"direction", "reason"}, "Packets the BPF programs dropped, by direction and drop reason (the drop subset of " + DatapathPackets + ")."},
	{MapEntries, "gauge", []string{"map"}, "Entries in a pinned BPF hash, LRU or LPM map, counted at scrape time."},
	{MapCapacity, "gauge", []string{"map"}, "max_entries of a pinned BPF map (bytes for a ring buffer)."},
	{ProgramsAttached, "gauge", []string{"attach_point"}, "Whether each of the agent's programs is attached (1/0; underlay_xdp is 0 where the NIC has no native XDP and node_ingress drops instead); for attach_point pod, the number of pod veths with the pod program attached."},
	{ReconcileTotal, "counter", []string{"controller", "result"}, "Reconciles by controller and result (success or error)."},
	{ReconcileErrors, "counter", []string{"controller"}, "Reconciles that failed and were retried."},
	{ReconcileDuration, "histogram", []string{"controller"}, "Time one reconcile took."},
	{WorkqueueDepth, "gauge", []string{"name"}, "Items waiting in a reconciler's workqueue."},
	{WorkqueueAdds, "counter", []string{"name"}, "Items added to a workqueue."},
	{WorkqueueQueueDuration, "histogram", []string{"name"}, "Time an item waited in a workqueue before a worker took it."},
	{WorkqueueWorkDuration, "histogram", []string{"name"}, "Time a worker spent on an item."},
	{WorkqueueUnfinishedWork, "gauge", []string{"name"}, "Seconds of work in progress not yet observed by the work duration (large values: a stuck worker)."},
	{WorkqueueLongestRunning, "gauge", []string{"name"}, "Seconds the longest-running worker of a workqueue has been busy on its item."},
	{WorkqueueRetries, "counter", []string{"name"}, "Items re-queued with a rate limit after a failure."},
	{APIWatchSynced, "gauge", []string{"resource"}, "Whether the informer of a resource (nodes, pods, services, endpointslices) has synced with the API server (1/0)."},
	{ConntrackGCDeleted, "counter", []string{"map", "reason"}, "Service connection tracking (lb_ct_map) and affinity (lb_affinity_map) entries the agent's garbage collector deleted: expired, or stale_backend (a UDP/SCTP flow to a backend no frontend uses)."},
	{ServiceUnreachable, "gauge", nil, "Service backends this node leaves out because it cannot reach their node's network domain, summed over the frontends of lb_svc_map (a backend left out of a ClusterIP and a node port counts twice)."},
	{ServiceNoneReachable, "gauge", nil, "Service frontends whose every backend is left out as unreachable: they refuse connections like frontends without backends."},
	{BuildInfo, "gauge", []string{"version", "revision", "go_version"}, "Always 1; the labels name the agent's build."},
}

// desc describes the family name as Families lists it.
func desc(name string) *promtext.Desc {
	for _, f := range Families() {
		if f.Name == name {
			return &promtext.Desc{Name: f.Name, Help: f.Help, Type: promtext.Type(f.Type), Labels: f.Labels}
		}
	}
	panic("metrics: no family " + name)
}

// controllers are the reconcilers whose series exist from the start, at zero.
var controllers = []string{controller.NodesController, controller.PodGCController, controller.ServicesController, controller.ConntrackGCController}

// conntrackSeries are the (map, reason) series of ConntrackGCDeleted, which exist from the start.
var conntrackSeries = [][2]string{
	{"lb_ct_map", "expired"}, {"lb_ct_map", "stale_backend"}, {"lb_affinity_map", "expired"},
}

// Result label values of ReconcileTotal.
const (
	ResultSuccess = "success"
	ResultError   = "error"
)

// Metrics is the agent's registry and the instruments the agent and its reconcilers update. It
// implements controller.Metrics.
type Metrics struct {
	registry promtext.Registry

	reconciles        *promtext.ValueVec
	reconcileErrors   *promtext.ValueVec
	reconcileDuration *promtext.HistogramVec

	queueDepth      *promtext.ValueVec
	queueAdds       *promtext.ValueVec
	queueLatency    *promtext.HistogramVec
	queueWork       *promtext.HistogramVec
	queueUnfinished *promtext.ValueVec
	queueLongest    *promtext.ValueVec
	queueRetries    *promtext.ValueVec
	longestByQueue  sync.Map // queue name -> float64 seconds, for the liveness check
	watches         *watchCollector
	gcDeleted       *promtext.ValueVec
	bgp             *bgpCollector
	apiserver       *apiserverCollector
	kernelFeature   *promtext.ValueVec
	kernelInfo      *promtext.ValueVec
}

var _ controller.Metrics = (*Metrics)(nil)

// New returns the agent's metrics on a fresh registry. version is what the binary was stamped with
// (-ldflags -X main.version); "" or "dev" falls back to the module version Go recorded. datapath,
// when not nil, is registered too (NewDatapathCollector).
func New(version string, datapath promtext.Collector) *Metrics {
	queueBuckets := promtext.ExponentialBuckets(1e-6, 10, 9)
	m := &Metrics{
		reconciles:      promtext.NewValueVec(desc(ReconcileTotal)),
		reconcileErrors: promtext.NewValueVec(desc(ReconcileErrors)),
		reconcileDuration: promtext.NewHistogramVec(desc(ReconcileDuration),
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
		queueDepth:      promtext.NewValueVec(desc(WorkqueueDepth)),
		queueAdds:       promtext.NewValueVec(desc(WorkqueueAdds)),
		queueLatency:    promtext.NewHistogramVec(desc(WorkqueueQueueDuration), queueBuckets),
		queueWork:       promtext.NewHistogramVec(desc(WorkqueueWorkDuration), queueBuckets),
		queueUnfinished: promtext.NewValueVec(desc(WorkqueueUnfinishedWork)),
		queueLongest:    promtext.NewValueVec(desc(WorkqueueLongestRunning)),
		queueRetries:    promtext.NewValueVec(desc(WorkqueueRetries)),
		watches:         &watchCollector{desc: desc(APIWatchSynced)},
		gcDeleted:       promtext.NewValueVec(desc(ConntrackGCDeleted)),
		bgp:             newBGPCollector(),
		apiserver:       newAPIServerCollector(),
		kernelFeature:   promtext.NewValueVec(desc(KernelFeature)),
		kernelInfo:      promtext.NewValueVec(desc(KernelInfo)),
	}
	for _, s := range conntrackSeries {
		m.gcDeleted.WithLabelValues(s[0], s[1])
	}
	for _, c := range controllers {
		m.reconciles.WithLabelValues(c, ResultSuccess)
		m.reconciles.WithLabelValues(c, ResultError)
		m.reconcileErrors.WithLabelValues(c)
		m.reconcileDuration.WithLabelValues(c)
	}
	build := promtext.NewValueVec(desc(BuildInfo))
	moduleVersion, revision := buildVersion()
	if version == "" || version == "dev" {
		version = moduleVersion
	}
	build.WithLabelValues(version, revision, runtime.Version()).Set(1)

	m.registry.Register(
		m.reconciles, m.reconcileErrors, m.reconcileDuration,
		m.queueDepth, m.queueAdds, m.queueLatency, m.queueWork, m.queueUnfinished, m.queueLongest, m.queueRetries,
		m.watches, m.gcDeleted, m.bgp, m.kernelFeature, m.kernelInfo, m.apiserver, build,
		promtext.GoCollector{}, promtext.ProcessCollector{},
	)
	if datapath != nil {
		m.registry.Register(datapath)
	}
	return m
}

// buildVersion is the main module's version (a VCS tag, or a pseudo-version, when go build
// stamped one) and VCS revision, from the binary's build information.
func buildVersion() (version, revision string) {
	version = "dev"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version, ""
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		version = v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return version, revision
}

// Registry is the registry everything is registered on (tests read it).
func (m *Metrics) Registry() *promtext.Registry { return &m.registry }

// Handler serves the registry in Prometheus' text format. A collector that fails (an unreadable
// pin) is logged and left out; the rest is still served.
func (m *Metrics) Handler() http.Handler {
	return m.registry.Handler(func(err error) {
		klog.Background().Error(err, "Collecting metrics; serving the rest")
	})
}

// ObserveReconcile records one reconcile of controller (controller.Metrics).
func (m *Metrics) ObserveReconcile(controller string, took time.Duration, err error) {
	result := ResultSuccess
	if err != nil {
		result = ResultError
		m.reconcileErrors.WithLabelValues(controller).Inc()
	}
	m.reconciles.WithLabelValues(controller, result).Inc()
	m.reconcileDuration.WithLabelValues(controller).Observe(took.Seconds())
}

// ConntrackDeleted counts entries the conntrack garbage collector deleted from mapName.
func (m *Metrics) ConntrackDeleted(mapName, reason string, n int) {
	m.gcDeleted.WithLabelValues(mapName, reason).Add(float64(n))
}

// SetWatch reports whether the informer of resource has synced; synced is called at every scrape.
func (m *Metrics) SetWatch(resource string, synced func() bool) { m.watches.set(resource, synced) }

// LongestRunningWork is the longest time any reconciler's worker has been busy on one item, as
// its workqueue last measured it (every half second); the liveness check uses it.
func (m *Metrics) LongestRunningWork() (queue string, seconds float64) {
	m.longestByQueue.Range(func(k, v any) bool {
		if s := v.(float64); s > seconds {
			queue, seconds = k.(string), s
		}
		return true
	})
	return queue, seconds
}

// The workqueue.MetricsProvider methods: each queue gets its children of the vectors.

func (m *Metrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	return m.queueDepth.WithLabelValues(name)
}

func (m *Metrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return m.queueAdds.WithLabelValues(name)
}

func (m *Metrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return m.queueLatency.WithLabelValues(name)
}

func (m *Metrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return m.queueWork.WithLabelValues(name)
}

func (m *Metrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return m.queueUnfinished.WithLabelValues(name)
}

func (m *Metrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return longestGauge{Value: m.queueLongest.WithLabelValues(name), name: name, by: &m.longestByQueue}
}

func (m *Metrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return m.queueRetries.WithLabelValues(name)
}

// longestGauge also remembers its value for LongestRunningWork.
type longestGauge struct {
	*promtext.Value
	name string
	by   *sync.Map
}

func (g longestGauge) Set(v float64) {
	g.Value.Set(v)
	g.by.Store(g.name, v)
}

// watchCollector reports each registered informer's HasSynced at scrape time.
type watchCollector struct {
	desc *promtext.Desc
	mu   sync.Mutex
	fns  map[string]func() bool
}

func (c *watchCollector) set(resource string, synced func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fns == nil {
		c.fns = map[string]func() bool{}
	}
	c.fns[resource] = synced
}

func (c *watchCollector) Collect(s *promtext.Scrape) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for resource, synced := range c.fns {
		s.Add(c.desc, boolValue(synced()), resource)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
