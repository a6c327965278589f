package bench

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// The target: 10,000 Services x 10 endpoints programmed from cold start in < 2 s with the
// agent under 64 MiB RSS.
const (
	coldStartTarget = 2 * time.Second
	coldStartRSS    = 64 << 20
)

// programmedMarker is the line the service reconciler logs when its start-up pass is over: every
// Service programmed and stale pins deleted (pkg/controller).
const programmedMarker = "Start-up pass done: every Service programmed"

// startup is one agent start, as the agent's own log stamps it and /proc measures it.
type startup struct {
	total     time.Duration // process start -> every Service programmed
	toMain    time.Duration // process start -> main's first line (exec, Go runtime, init)
	beforeSvc time.Duration // main -> the service reconciler runs (register, device, datapath; the informers list meanwhile)
	sync      time.Duration // from there until the informers' initial list is in (Services, EndpointSlices, Nodes)
	pass      time.Duration // the start-up pass: every Service reconciled, stale pins deleted
	peakSync  int64         // VmHWM when the pass was done
	peak      int64         // VmHWM after settling (index written, first GC passes)
	rss       int64         // VmRSS after settling
	rssFile   int64         // of which the binary's pages (RssFile)
}

// BenchmarkServicesColdStart creates BENCH_COLDSTART_SERVICES (10,000) Services of
// BENCH_COLDSTART_ENDPOINTS (10) ready endpoints each in the API server, then starts the agent of a
// node and measures the time from its process start to the end of its start-up pass (logged by
// the agent; the pinned maps are read once afterwards to check every frontend and backend slot is
// there) and its peak resident memory. Each round starts once on a node with no pins (after
// `edgeplane-agent --uninstall`: a first start) and once with the pins of the previous agent in
// place (a restart, which adopts them). BENCH_ROUNDS (5) rounds; medians are reported.
// BENCH_COLDSTART_BASELINE, the path of another edgeplane-agent binary (an older build), adds
// to each round a first start and a restart of that binary in the same lab, for an A/B on the
// same objects and the same load; its medians are printed, not saved.
func BenchmarkServicesColdStart(b *testing.B) {
	services := envInt("BENCH_COLDSTART_SERVICES", 10000)
	endpoints := envInt("BENCH_COLDSTART_ENDPOINTS", 10)
	rounds := envInt("BENCH_ROUNDS", 5)
	settle := time.Duration(envInt("BENCH_COLDSTART_SETTLE_SECONDS", 5)) * time.Second
	baseline := os.Getenv("BENCH_COLDSTART_BASELINE")

	ctx := context.Background()
	l := newLab(b)
	n, err := l.AddNode(ctx, "node-1", 1, lab.NodeOptions{NoAgent: true})
	if err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	if _, err := l.BulkServices(ctx, "bulk", 0, services, endpoints, 16); err != nil {
		b.Fatal(err)
	}
	b.Logf("created %d Services x %d endpoints in %v", services, endpoints, time.Since(began).Round(time.Millisecond))

	byPath := map[string][]startup{}
	binaries := []string{""} // the lab's
	if baseline != "" {
		binaries = append(binaries, baseline)
	}
	started := false
	for r := range rounds {
		for _, bin := range binaries {
			if started {
				if err := n.UninstallAgent(ctx); err != nil {
					b.Fatal(err)
				}
			}
			started = true
			n.AgentBinary = bin
			prefix := ""
			if bin != "" {
				prefix = "baseline-"
			}
			cold, err := measureStartup(ctx, n, services, endpoints, settle)
			if err != nil {
				l.KeepLogs()
				b.Fatalf("round %d, %sfirst start: %v", r, prefix, err)
			}
			n.StopAgent()
			restart, err := measureStartup(ctx, n, services, endpoints, settle)
			if err != nil {
				l.KeepLogs()
				b.Fatalf("round %d, %srestart: %v", r, prefix, err)
			}
			byPath[prefix+"first-start"] = append(byPath[prefix+"first-start"], cold)
			byPath[prefix+"restart"] = append(byPath[prefix+"restart"], restart)
			b.Logf("round %d: %sfirst start %v (peak %.1f MiB), restart %v (peak %.1f MiB)", r, prefix,
				cold.total.Round(time.Millisecond), mib(cold.peak), restart.total.Round(time.Millisecond), mib(restart.peak))
		}
	}
	n.AgentBinary = ""
	b.StopTimer()
	reportStartups(b, services, endpoints, byPath)
}

// measureStartup starts the node's agent and waits for its start-up pass, then checks the maps.
func measureStartup(ctx context.Context, n *lab.Node, services, endpoints int, settle time.Duration) (startup, error) {
	var s startup
	t0 := time.Now()
	if err := n.StartAgent(); err != nil {
		return s, err
	}
	done, before, err := n.WaitAgentLog(ctx, programmedMarker, 2*time.Minute)
	if err != nil {
		return s, err
	}
	mem, err := n.AgentMemory()
	if err != nil {
		return s, err
	}
	s.peakSync = mem.Peak
	s.total = done.Time.Sub(t0)
	for _, line := range before {
		if strings.Contains(line.Text, `"Starting edgeplane-agent"`) {
			s.toMain = line.Time.Sub(t0)
		}
	}
	if s.sync, err = logDuration(done.Text, "informerSync"); err != nil {
		return s, err
	}
	if s.pass, err = logDuration(done.Text, "pass"); err != nil {
		return s, err
	}
	s.beforeSvc = s.total - s.toMain - s.sync - s.pass
	time.Sleep(settle)
	if mem, err = n.AgentMemory(); err != nil {
		return s, err
	}
	s.peak, s.rss, s.rssFile = mem.Peak, mem.RSS, mem.File
	return s, checkBulkProgrammed(n, services, endpoints)
}

// logDuration reads key="1.234s" from a klog line.
func logDuration(line, key string) (time.Duration, error) {
	m := regexp.MustCompile(` ` + key + `="?([0-9.]+[a-zµ]+)"?`).FindStringSubmatch(line)
	if m == nil {
		return 0, fmt.Errorf("no %s in %q", key, line)
	}
	return time.ParseDuration(m[1])
}

// checkBulkProgrammed reads the pinned maps once: every bulk Service must have its frontend with
// all its endpoints, each in its own slot.
func checkBulkProgrammed(n *lab.Node, services, endpoints int) error {
	frontends, slots, err := n.ServiceMaps()
	if err != nil {
		return err
	}
	bulk, bulkSlots := 0, 0
	seen := map[lb.Backend]bool{}
	for k, v := range frontends {
		first, ok := slots[lb.BackendKey{SvcID: v.ID, Slot: 0}]
		if !ok || !lab.BulkEndpointNet.Contains(first.IP.Addr()) {
			continue
		}
		bulk++
		if int(v.Count) != endpoints {
			return fmt.Errorf("frontend %s: %d backends, want %d", k, v.Count, endpoints)
		}
		for slot := range uint32(v.Count) {
			be, ok := slots[lb.BackendKey{SvcID: v.ID, Slot: slot}]
			if !ok {
				return fmt.Errorf("frontend %s: slot %d of set %d is missing", k, slot, v.ID)
			}
			if !lab.BulkEndpointNet.Contains(be.IP.Addr()) || be.Port.Uint16() != 8080 || seen[be] {
				return fmt.Errorf("frontend %s: slot %d holds %s, not one bulk endpoint of its own", k, slot, be)
			}
			seen[be] = true
			bulkSlots++
		}
	}
	if bulk != services || bulkSlots != services*endpoints {
		return fmt.Errorf("lb maps hold %d bulk frontends and %d of their backend slots, want %d and %d",
			bulk, bulkSlots, services, services*endpoints)
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func reportStartups(b *testing.B, services, endpoints int, byPath map[string][]startup) {
	type column struct {
		metric, unit string
		value        func(startup) float64
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	columns := []column{
		{"time_to_programmed", "ms", func(s startup) float64 { return ms(s.total) }},
		{"process_to_main", "ms", func(s startup) float64 { return ms(s.toMain) }},
		{"main_to_reconciler", "ms", func(s startup) float64 { return ms(s.beforeSvc) }},
		{"informer_sync_wait", "ms", func(s startup) float64 { return ms(s.sync) }},
		{"startup_pass", "ms", func(s startup) float64 { return ms(s.pass) }},
		{"peak_rss_at_programmed", "MiB", func(s startup) float64 { return mib(s.peakSync) }},
		{"peak_rss", "MiB", func(s startup) float64 { return mib(s.peak) }},
		{"rss_settled", "MiB", func(s startup) float64 { return mib(s.rss) }},
		{"rss_settled_file", "MiB", func(s startup) float64 { return mib(s.rssFile) }},
	}
	group := fmt.Sprintf("services-cold-start-%dx%d", services, endpoints)
	var results []Result
	var sb strings.Builder
	paths := []string{"first-start", "restart"}
	if _, ok := byPath["baseline-restart"]; ok {
		paths = append(paths, "baseline-first-start", "baseline-restart")
	}
	fmt.Fprintf(&sb, "\n%s (medians of %d rounds; target < %v and < %d MiB)\n", group, len(byPath["restart"]), coldStartTarget, coldStartRSS>>20)
	fmt.Fprintf(&sb, "%-24s %-5s", "metric", "unit")
	for _, path := range paths {
		fmt.Fprintf(&sb, " %21s", path)
	}
	sb.WriteString("\n")
	for _, c := range columns {
		line := fmt.Sprintf("%-24s %-5s", c.metric, c.unit)
		for _, path := range paths {
			r := Result{Group: group, Metric: c.metric, Unit: c.unit, Path: path}
			for _, s := range byPath[path] {
				r.Samples = append(r.Samples, round3(c.value(s)))
			}
			r.Median = round3(Median(r.Samples))
			line += fmt.Sprintf(" %21.1f", r.Median)
			if strings.HasPrefix(path, "baseline-") {
				continue // another build: not this tree's result
			}
			results = append(results, r)
			if c.metric == "time_to_programmed" || c.metric == "peak_rss" {
				b.ReportMetric(r.Median, path+"-"+c.metric+"-"+c.unit)
			}
		}
		sb.WriteString(line + "\n")
	}
	fmt.Print(sb.String())
	saveResults(b, results, time.Now())
}
