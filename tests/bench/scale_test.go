package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// Issue 18's targets for one agent in a cluster of 5,000 nodes and 10,000 Services.
const (
	scaleProgrammedTarget = 3 * time.Second
	scalePeakRSSTarget    = 80 << 20
	scaleSteadyRSSTarget  = 48 << 20
	scaleIdleCPUTarget    = 1.0 // percent of one core
	scaleNewNodeTarget    = time.Second
)

// scaleConfig is BenchmarkScale's size and timing, from the environment.
type scaleConfig struct {
	nodes, pools, domains       int
	services, endpoints         int
	agents                      int
	idle, settle                time.Duration
	heartbeatsPerS              float64
	newNodes                    int
	baseline                    string
	programmedWait, newNodeWait time.Duration
}

func scaleConfigFromEnv() scaleConfig {
	c := scaleConfig{
		nodes:     envInt("BENCH_SCALE_NODES", 5000),
		pools:     envInt("BENCH_SCALE_POOLS", 100),
		domains:   envInt("BENCH_SCALE_DOMAINS", 20),
		services:  envInt("BENCH_SCALE_SERVICES", 10000),
		endpoints: envInt("BENCH_SCALE_ENDPOINTS", 15),
		agents:    3,
		idle:      time.Duration(envInt("BENCH_SCALE_IDLE_SECONDS", 60)) * time.Second,
		settle:    time.Duration(envInt("BENCH_SCALE_SETTLE_SECONDS", 10)) * time.Second,
		newNodes:  envInt("BENCH_ROUNDS", 5),
		baseline:  os.Getenv("BENCH_SCALE_BASELINE"),

		programmedWait: 3 * time.Minute, newNodeWait: 30 * time.Second,
	}
	// kubelet writes an unchanged node status every nodeStatusReportFrequency (5 minutes).
	c.heartbeatsPerS = float64(c.nodes) / 300
	if v := os.Getenv("BENCH_SCALE_HEARTBEATS_PER_S"); v != "" {
		fmt.Sscan(v, &c.heartbeatsPerS)
	}
	return c
}

// BenchmarkScale loads the lab's API server as a large edge cluster: BENCH_SCALE_NODES (5,000)
// Node objects as kubelet leaves them (lab.BulkNodes: /26 pod CIDRs from a /12, Flannel's
// annotations, BENCH_SCALE_POOLS (100) pools in BENCH_SCALE_DOMAINS (20) domains) and
// BENCH_SCALE_SERVICES (10,000) Services of BENCH_SCALE_ENDPOINTS (15) ready endpoints each
// (150,000), then starts three real agents on lab nodes, one after the other, and measures, per
// agent:
//
//   - cold start to programmed: from the process start until every Service is programmed (the
//     agent's start-up pass, logged) and every bulk Node's route is in its routes_map (polled
//     every 50 ms), whichever is later; the maps are then checked whole;
//   - peak RSS (VmHWM at the end of the run) and steady RSS (the median of VmRSS read every 50
//     ms over the idle window; the highest read is reported beside it), and beside them, as
//     information, their split into anonymous memory (RssAnon: heap, stacks) and file pages
//     (RssFile: the binary's text and data read so far): at the idle window's end, when programmed, and
//     the most RssAnon sampled (every 50 ms) until programmed and over the whole run, as the
//     kernel keeps no peak of it;
//   - CPU while idle: the agent's user+system time over BENCH_SCALE_IDLE_SECONDS (60) with
//     nothing changing in the API server, in percent of one core; and the same with kubelet-like
//     status heartbeats of the bulk Nodes (BENCH_SCALE_HEARTBEATS_PER_S, default nodes/300: one
//     per node every 5 minutes, kubelet's nodeStatusReportFrequency);
//   - API server traffic: the bytes the node's underlay interface received (the agent is the only
//     client on it: watch events, lease renewals, TLS and HTTP/2 framing) per second in both
//     windows, and the API server's own count of watch event bytes by kind
//     (apiserver_watch_events_sizes) divided by its open watches of that kind;
//   - a new Node's route: BENCH_ROUNDS (5) times, a bulk Node is created and the time until its
//     route (pod CIDR -> its address) is in all three agents' routes_map is measured (each map
//     looked up every millisecond).
//
// BENCH_SCALE_BASELINE, the path of another edgeplane-agent binary (e.g. main before a change),
// repeats the agents' part with it in the same lab (uninstalled in between) and prints its
// figures beside this tree's; they are not saved. Results go to bench/results.json (BENCH_RESULTS).
func BenchmarkScale(b *testing.B) {
	cfg := scaleConfigFromEnv()
	ctx := context.Background()
	l := newLab(b)
	if err := l.SetDomainConfig(ctx, lab.BulkDomainConfig(cfg.pools, cfg.domains)); err != nil {
		b.Fatal(err)
	}
	var agents []*lab.Node
	for i := 1; i <= cfg.agents; i++ {
		n, err := l.AddNode(ctx, fmt.Sprintf("scale-%d", i), i, lab.NodeOptions{NoAgent: true,
			Labels:    map[string]string{domain.DefaultPoolLabel: lab.BulkPool(0, cfg.pools)},
			AgentArgs: []string{"--cluster-cidr=" + lab.BulkClusterCIDR.String()}})
		if err != nil {
			b.Fatal(err)
		}
		agents = append(agents, n)
	}
	began := time.Now()
	if _, err := l.BulkNodes(ctx, 0, cfg.nodes, cfg.pools, 16); err != nil {
		b.Fatal(err)
	}
	b.Logf("created %d Nodes in %v", cfg.nodes, time.Since(began).Round(time.Millisecond))
	began = time.Now()
	if _, err := l.BulkServices(ctx, "scale", 0, cfg.services, cfg.endpoints, 16); err != nil {
		b.Fatal(err)
	}
	b.Logf("created %d Services x %d endpoints in %v", cfg.services, cfg.endpoints, time.Since(began).Round(time.Millisecond))
	cs, err := l.BulkClient()
	if err != nil {
		b.Fatal(err)
	}

	s := &scaleBench{l: l, cs: cs, cfg: cfg, agents: agents, nextNode: cfg.nodes}
	runs := map[string][]Result{"": s.run(b, "")}
	if cfg.baseline != "" {
		runs["baseline"] = s.run(b, cfg.baseline)
	}
	b.StopTimer()
	s.print(runs)
	saveResults(b, runs[""], time.Now())
}

type scaleBench struct {
	l        *lab.Lab
	cs       kubernetes.Interface
	cfg      scaleConfig
	agents   []*lab.Node
	started  bool
	nextNode int // the next bulk Node index a new-node round creates
}

// agentFigures are one agent's figures of one run.
type agentFigures struct {
	programmed, servicesProgrammed, routesProgrammed time.Duration
	peakAtProgrammed, peak, steady                   int64
	// steadyHighest is the most VmRSS read over the idle window, whose median is steady.
	steadyHighest int64
	// The resident set's split (information; the targets are on peak and steady): RssAnon and
	// RssFile when programmed and after the idle window, and the most RssAnon sampled (every 50
	// ms) until programmed and over the whole run.
	anonAtProgrammed, fileAtProgrammed int64
	peakAnonAtProgrammed, peakAnon     int64
	steadyAnon, steadyFile             int64
	// What of the resident set the agent touched during the idle window (smaps' Referenced after
	// clear_refs at its start): of its executable's mappings, and anonymous.
	idleTouchedExe, idleTouchedAnon int64
	idle, heartbeat                 window
	anon                            *anonSampler // from the start to the end of the run
}

// window is what an agent cost over a measured window.
type window struct {
	cpuPercent float64 // user+system time, in percent of one core
	rxPerS     float64 // bytes its node received per second
}

func (s *scaleBench) group() string {
	return fmt.Sprintf("scale-%dn-%ds-%de", s.cfg.nodes, s.cfg.services, s.cfg.services*s.cfg.endpoints)
}

// run cold-starts every agent with binary bin ("" is the lab's) and measures them.
func (s *scaleBench) run(b *testing.B, bin string) []Result {
	ctx := context.Background()
	name := "edgeplane"
	if bin != "" {
		name = "baseline"
	}
	figures := make([]agentFigures, len(s.agents))
	for i, n := range s.agents {
		if s.started {
			if err := n.UninstallAgent(ctx); err != nil {
				b.Fatal(err)
			}
		}
		n.AgentBinary = bin
		f, err := s.coldStart(ctx, n)
		if f.anon != nil {
			defer f.anon.stop() // on a failure; after the run, stopped already
		}
		if err != nil {
			s.l.KeepLogs()
			b.Fatalf("%s: %s cold start: %v", n.Name, name, err)
		}
		figures[i] = f
		b.Logf("%s %s: programmed after %v (Services %v, %d routes %v), peak RSS %.1f MiB (anon %.1f, at most %.1f sampled; file %.1f)",
			name, n.Name, f.programmed.Round(time.Millisecond), f.servicesProgrammed.Round(time.Millisecond), s.cfg.nodes,
			f.routesProgrammed.Round(time.Millisecond), mib(f.peakAtProgrammed), mib(f.anonAtProgrammed),
			mib(f.peakAnonAtProgrammed), mib(f.fileAtProgrammed))
	}
	s.started = true
	time.Sleep(s.cfg.settle)

	for i, n := range s.agents {
		if err := n.ClearAgentReferenced(); err != nil {
			b.Fatal(err)
		}
		figures[i].anon.startWindow()
	}
	idle, watchIdle, err := s.measureWindow(ctx, 0)
	if err != nil {
		b.Fatal(err)
	}
	for i, n := range s.agents {
		figures[i].idle = idle[i]
		median, highest, reads := figures[i].anon.endWindow()
		mem, err := n.AgentMemory()
		if err != nil {
			b.Fatal(err)
		}
		if reads == 0 {
			median, highest = mem.RSS, mem.RSS
		}
		figures[i].steady, figures[i].steadyHighest, figures[i].steadyAnon, figures[i].steadyFile = median, highest, mem.Anon, mem.File
		if figures[i].idleTouchedExe, figures[i].idleTouchedAnon, err = n.AgentReferenced(); err != nil {
			b.Fatal(err)
		}
		b.Logf("%s %s: steady RSS %.1f MiB (the median of %d reads over the idle window; at most %.1f; at its end %.1f: anon %.1f, file %.1f); touched over the idle window: %.1f MiB of its executable's mappings, %.1f anonymous",
			name, n.Name, mib(median), reads, mib(highest), mib(mem.RSS), mib(mem.Anon), mib(mem.File), mib(figures[i].idleTouchedExe), mib(figures[i].idleTouchedAnon))
	}
	var beat []window
	var watchBeat map[string]float64
	if s.cfg.heartbeatsPerS > 0 {
		if beat, watchBeat, err = s.measureWindow(ctx, s.cfg.heartbeatsPerS); err != nil {
			b.Fatal(err)
		}
		for i := range figures {
			figures[i].heartbeat = beat[i]
		}
	}
	newNode, err := s.newNodeRounds(ctx)
	if err != nil {
		s.l.KeepLogs()
		b.Fatal(err)
	}
	for i, n := range s.agents {
		mem, err := n.AgentMemory()
		if err != nil {
			b.Fatal(err)
		}
		figures[i].peak = mem.Peak
		figures[i].anon.stop()
		figures[i].peakAnon = max(figures[i].anon.most(), mem.Anon)
	}
	return s.results(name, figures, newNode, watchIdle, watchBeat)
}

// coldStart starts n's agent and waits until it has programmed every Service and every bulk
// Node's route.
func (s *scaleBench) coldStart(ctx context.Context, n *lab.Node) (agentFigures, error) {
	var f agentFigures
	t0 := time.Now()
	if err := n.StartAgent(); err != nil {
		return f, err
	}
	type routesResult struct {
		after time.Duration
		err   error
	}
	routesDone := make(chan routesResult, 1)
	go func() {
		deadline := time.Now().Add(s.cfg.programmedWait)
		for {
			count, err := bulkRoutes(n)
			if err == nil && count >= s.cfg.nodes {
				routesDone <- routesResult{after: time.Since(t0)}
				return
			}
			if time.Now().After(deadline) {
				routesDone <- routesResult{err: fmt.Errorf("%d of %d bulk routes after %v (last error %v)", count, s.cfg.nodes, s.cfg.programmedWait, err)}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	f.anon = sampleAnon(n, 50*time.Millisecond)
	done, _, err := n.WaitAgentLog(ctx, programmedMarker, s.cfg.programmedWait)
	if err != nil {
		return f, err
	}
	f.servicesProgrammed = done.Time.Sub(t0)
	routes := <-routesDone
	if routes.err != nil {
		return f, routes.err
	}
	f.routesProgrammed = routes.after
	f.programmed = max(f.servicesProgrammed, f.routesProgrammed)
	mem, err := n.AgentMemory()
	if err != nil {
		return f, err
	}
	f.peakAtProgrammed, f.anonAtProgrammed, f.fileAtProgrammed = mem.Peak, mem.Anon, mem.File
	f.peakAnonAtProgrammed = max(f.anon.most(), mem.Anon)
	return f, checkBulkProgrammed(n, s.cfg.services, s.cfg.endpoints)
}

// anonSampler reads an agent's RssAnon every period until stopped, keeping the most seen: the
// kernel keeps a peak of the whole resident set only (VmHWM), binary pages included. Between
// startWindow and endWindow it keeps every VmRSS read too. A read costs the agent nothing
// (/proc/<pid>/status is the reader's work).
type anonSampler struct {
	peak        atomic.Int64
	quit, ended chan struct{}
	once        sync.Once

	mu        sync.Mutex
	recording bool
	window    []int64 // VmRSS, while recording
}

func sampleAnon(n *lab.Node, period time.Duration) *anonSampler {
	a := &anonSampler{quit: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(a.ended)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			if mem, err := n.AgentMemory(); err == nil {
				if mem.Anon > a.peak.Load() {
					a.peak.Store(mem.Anon)
				}
				a.mu.Lock()
				if a.recording {
					a.window = append(a.window, mem.RSS)
				}
				a.mu.Unlock()
			}
			select {
			case <-a.quit:
				return
			case <-tick.C:
			}
		}
	}()
	return a
}

// most is the most RssAnon sampled so far.
func (a *anonSampler) most() int64 { return a.peak.Load() }

// startWindow starts keeping the VmRSS reads.
func (a *anonSampler) startWindow() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recording, a.window = true, nil
}

// endWindow stops keeping them and returns their median and highest, and how many were read.
func (a *anonSampler) endWindow() (median, highest int64, reads int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recording = false
	if len(a.window) == 0 {
		return 0, 0, 0
	}
	sorted := slices.Sorted(slices.Values(a.window))
	return sorted[len(sorted)/2], sorted[len(sorted)-1], len(sorted)
}

// stop ends the sampling and waits for the sampler; it may be called more than once.
func (a *anonSampler) stop() {
	a.once.Do(func() { close(a.quit) })
	<-a.ended
}

// bulkRoutes counts the routes of bulk Nodes in n's routes_map that point at their Node.
func bulkRoutes(n *lab.Node) (int, error) {
	routes, err := n.Routes()
	if err != nil {
		return 0, err
	}
	count := 0
	for cidr, r := range routes {
		if lab.BulkPodCIDRs.Contains(cidr.Addr()) && cidr.Bits() == lab.BulkNodeMask && lab.BulkNodeNet.Contains(r.NodeIP) {
			count++
		}
	}
	return count, nil
}

// watchMetrics are the API server's series measureWindow reads.
var watchMetrics = []string{"apiserver_watch_events_sizes_sum", "apiserver_longrunning_requests"}

// measureWindow measures every agent's CPU and received bytes over the idle window, with
// heartbeatsPerS bulk Node status heartbeats meanwhile (0: none), and the API server's watch
// event bytes per watch by kind (bytes per second).
func (s *scaleBench) measureWindow(ctx context.Context, heartbeatsPerS float64) ([]window, map[string]float64, error) {
	type mark struct {
		cpu float64
		rx  uint64
	}
	read := func() ([]mark, error) {
		var out []mark
		for _, n := range s.agents {
			cpu, err := processCPUSeconds(n.Agent.Pid())
			if err != nil {
				return nil, err
			}
			rx, err := linkRxBytes(ctx, n.Netns, "eth0")
			if err != nil {
				return nil, err
			}
			out = append(out, mark{cpu, rx})
		}
		return out, nil
	}
	metrics0, err := s.l.APIServerMetrics(ctx, watchMetrics...)
	if err != nil {
		return nil, nil, err
	}
	before, err := read()
	if err != nil {
		return nil, nil, err
	}
	t0 := time.Now()
	var beatErr error
	if heartbeatsPerS > 0 {
		beatErr = s.heartbeats(ctx, heartbeatsPerS, s.cfg.idle)
	} else {
		time.Sleep(s.cfg.idle)
	}
	after, err := read()
	if err != nil {
		return nil, nil, err
	}
	elapsed := time.Since(t0).Seconds()
	metrics1, err := s.l.APIServerMetrics(ctx, watchMetrics...)
	if err != nil {
		return nil, nil, err
	}
	if beatErr != nil {
		return nil, nil, beatErr
	}
	var out []window
	for i := range s.agents {
		out = append(out, window{
			cpuPercent: 100 * (after[i].cpu - before[i].cpu) / elapsed,
			rxPerS:     float64(after[i].rx-before[i].rx) / elapsed,
		})
	}
	return out, watchBytesPerWatch(metrics0, metrics1, elapsed), nil
}

// heartbeats patches bulk Node statuses round robin at perS for d.
func (s *scaleBench) heartbeats(ctx context.Context, perS float64, d time.Duration) error {
	tick := time.NewTicker(time.Duration(float64(time.Second) / perS))
	defer tick.Stop()
	end := time.After(d)
	for i := 0; ; i++ {
		select {
		case <-end:
			return nil
		case now := <-tick.C:
			if err := lab.BulkNodeHeartbeat(ctx, s.cs, i%s.cfg.nodes, now); err != nil {
				return err
			}
		}
	}
}

// watchBytesPerWatch is, per kind, the watch event bytes the API server sent between two reads
// of its metrics, per second and per open watch of that kind's resource.
func watchBytesPerWatch(m0, m1 map[string]float64, seconds float64) map[string]float64 {
	bytes := map[string]float64{}
	for series, v := range m1 {
		if !strings.HasPrefix(series, "apiserver_watch_events_sizes_sum{") {
			continue
		}
		kind := label(series, "kind")
		if kind == "" {
			kind = label(series, "resource")
		}
		bytes[kind] += v - m0[series]
	}
	watches := map[string]float64{}
	for series, v := range m1 {
		if strings.HasPrefix(series, "apiserver_longrunning_requests{") && label(series, "verb") == "WATCH" {
			watches[strings.ToLower(label(series, "resource"))] += v
		}
	}
	out := map[string]float64{}
	for kind, b := range bytes {
		if b <= 0 {
			continue
		}
		// Kinds are named as the API server's metric names them: Node or nodes.
		w := watches[strings.ToLower(kind)]
		if w == 0 {
			w = watches[strings.ToLower(kind)+"s"]
		}
		if w > 0 {
			out[kind] = b / w / seconds
		}
	}
	return out
}

// label reads label name's value from a series `metric{a="x",b="y"}`.
func label(series, name string) string {
	_, labels, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
	for _, pair := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(pair, "="); ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// newNodeRounds creates cfg.newNodes bulk Nodes, one at a time, and measures how long each
// takes to reach every agent's routes_map; they are deleted afterwards.
func (s *scaleBench) newNodeRounds(ctx context.Context) ([]time.Duration, error) {
	var out []time.Duration
	var created []string
	defer func() {
		for _, name := range created {
			_ = s.cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
		}
	}()
	for range s.cfg.newNodes {
		i := s.nextNode
		s.nextNode++
		watchers := make([]*lab.RouteWatch, len(s.agents))
		for j, n := range s.agents {
			w, err := lab.WatchRoute(n, lab.BulkNodePodCIDR(i), lab.BulkNodeIP(i))
			if err != nil {
				return nil, err
			}
			defer w.Close()
			watchers[j] = w
		}
		t0 := time.Now()
		if _, err := lab.CreateBulkNode(ctx, s.cs, i, s.cfg.pools); err != nil {
			return nil, err
		}
		created = append(created, lab.BulkNodeName(i))
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			slowest time.Duration
			errs    []error
		)
		for j, w := range watchers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				at, err := w.Wait(t0.Add(s.cfg.newNodeWait), time.Millisecond)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", s.agents[j].Name, err))
				}
				slowest = max(slowest, at.Sub(t0))
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			return nil, fmt.Errorf("new node %s: %v", lab.BulkNodeName(i), errs)
		}
		out = append(out, slowest)
		time.Sleep(time.Second)
	}
	return out, nil
}

// results are a run's figures as results.json holds them: per metric, one sample per agent (the
// new-node metric: one per round), their median, and, where issue 18 sets one, the worst sample
// against the target as the ratio (below 1 meets it).
func (s *scaleBench) results(path string, f []agentFigures, newNode []time.Duration, watchIdle, watchBeat map[string]float64) []Result {
	g := s.group()
	var out []Result
	add := func(metric, unit string, target float64, v func(agentFigures) float64) {
		r := Result{Group: g, Metric: metric, Unit: unit, Better: "lower", Path: path, Baseline: "target"}
		for _, a := range f {
			r.Samples = append(r.Samples, round3(v(a)))
		}
		out = append(out, finish(r, target))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	add("cold_start_to_programmed", "ms", ms(scaleProgrammedTarget), func(a agentFigures) float64 { return ms(a.programmed) })
	add("cold_start_services_programmed", "ms", 0, func(a agentFigures) float64 { return ms(a.servicesProgrammed) })
	add("cold_start_routes_programmed", "ms", 0, func(a agentFigures) float64 { return ms(a.routesProgrammed) })
	add("peak_rss_at_programmed", "MiB", 0, func(a agentFigures) float64 { return mib(a.peakAtProgrammed) })
	add("peak_rss", "MiB", mib(scalePeakRSSTarget), func(a agentFigures) float64 { return mib(a.peak) })
	add("steady_rss", "MiB", mib(scaleSteadyRSSTarget), func(a agentFigures) float64 { return mib(a.steady) })
	add("steady_rss_highest", "MiB", 0, func(a agentFigures) float64 { return mib(a.steadyHighest) })
	// The split of the resident set, information only: anonymous memory is what the agent's code
	// controls; file pages are the binary's (this kernel maps its text in large folios).
	add("rss_anon_at_programmed", "MiB", 0, func(a agentFigures) float64 { return mib(a.anonAtProgrammed) })
	add("rss_file_at_programmed", "MiB", 0, func(a agentFigures) float64 { return mib(a.fileAtProgrammed) })
	add("peak_rss_anon_at_programmed", "MiB, sampled every 50 ms", 0, func(a agentFigures) float64 { return mib(a.peakAnonAtProgrammed) })
	add("peak_rss_anon", "MiB, sampled every 50 ms", 0, func(a agentFigures) float64 { return mib(a.peakAnon) })
	add("steady_rss_anon", "MiB", 0, func(a agentFigures) float64 { return mib(a.steadyAnon) })
	add("steady_rss_file", "MiB", 0, func(a agentFigures) float64 { return mib(a.steadyFile) })
	// How much of that the agent touched in the idle window: the binary's pages it uses at idle
	// (the rest is mapped by the start-up and the kernel's fault-around), and its heap.
	add("idle_touched_exe", "MiB", 0, func(a agentFigures) float64 { return mib(a.idleTouchedExe) })
	add("idle_touched_anon", "MiB", 0, func(a agentFigures) float64 { return mib(a.idleTouchedAnon) })
	add("idle_cpu", "% of a core", scaleIdleCPUTarget, func(a agentFigures) float64 { return a.idle.cpuPercent })
	add("idle_apiserver_rx", "bytes/s per agent", 0, func(a agentFigures) float64 { return a.idle.rxPerS })
	if watchBeat != nil {
		unit := fmt.Sprintf("%% of a core, %.1f node heartbeats/s", s.cfg.heartbeatsPerS)
		add("heartbeat_cpu", unit, 0, func(a agentFigures) float64 { return a.heartbeat.cpuPercent })
		add("heartbeat_apiserver_rx", fmt.Sprintf("bytes/s per agent, %.1f node heartbeats/s", s.cfg.heartbeatsPerS), 0,
			func(a agentFigures) float64 { return a.heartbeat.rxPerS })
	}
	r := Result{Group: g, Metric: "new_node_route_all_agents", Unit: "ms", Better: "lower", Path: path, Baseline: "target"}
	for _, d := range newNode {
		r.Samples = append(r.Samples, round3(ms(d)))
	}
	out = append(out, finish(r, ms(scaleNewNodeTarget)))
	for _, w := range []struct {
		name string
		m    map[string]float64
	}{{"idle", watchIdle}, {"heartbeat", watchBeat}} {
		kinds := make([]string, 0, len(w.m))
		for k := range w.m {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			v := round3(w.m[k])
			out = append(out, Result{Group: g, Metric: w.name + "_watch_bytes_" + k, Unit: "bytes/s per watch (API server)",
				Better: "lower", Path: path, Samples: []float64{v}, Median: v})
		}
	}
	return out
}

// finish sets r's median and, with a target, the ratio of its worst sample to the target.
func finish(r Result, target float64) Result {
	r.Median = round3(Median(r.Samples))
	if target > 0 && len(r.Samples) > 0 {
		worst := r.Samples[0]
		for _, v := range r.Samples {
			worst = max(worst, v)
		}
		r.Ratio, r.RatioMin, r.RatioMax = round3(worst/target), round3(r.Samples[0]/target), round3(worst/target)
		for _, v := range r.Samples {
			r.RatioMin = min(r.RatioMin, round3(v/target))
		}
	} else {
		r.Baseline = ""
	}
	return r
}

// print writes the runs' figures side by side, with the targets.
func (s *scaleBench) print(runs map[string][]Result) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%s: %d Nodes in %d pools / %d domains, %d Services x %d endpoints, %d agents (samples: one per agent; new node: one per round)\n",
		s.group(), s.cfg.nodes, s.cfg.pools, s.cfg.domains, s.cfg.services, s.cfg.endpoints, len(s.agents))
	fmt.Fprintf(&sb, "%-34s %-36s %-10s %10s %10s %-30s\n", "metric", "unit", "path", "median", "worst/tgt", "samples")
	for _, name := range []string{"", "baseline"} {
		for _, r := range runs[name] {
			ratio := ""
			if r.Ratio > 0 {
				ratio = fmt.Sprintf("%.2f", r.Ratio)
			}
			fmt.Fprintf(&sb, "%-34s %-36s %-10s %10.1f %10s %v\n", r.Metric, r.Unit, r.Path, r.Median, ratio, r.Samples)
		}
	}
	fmt.Print(sb.String())
}
