package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/bench/results"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// metric is one benchmark dimension measured on every path of a group.
type metric struct {
	name    string
	unit    string
	better  string // "higher" or "lower"
	measure func(p Path, port int) (Sample, error)
	value   func(Sample) float64
}

// group is a set of paths compared with each other; the first is the baseline of the ratios.
type group struct {
	name    string
	paths   []Path
	metrics []metric
}

// Result is what results.json holds for one (group, metric, path) of a run.
type Result = results.Result

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// newLab builds a lab from the environment (lab.ConfigFromEnv) that the benchmark's end tears down.
func newLab(b *testing.B) *lab.Lab {
	b.Helper()
	cfg, err := lab.ConfigFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	cfg.Logf = b.Logf
	l, err := lab.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	return l
}

// BenchmarkDatapath compares edgeplane (native BPF encapsulation and the collect_md device variant)
// with a Flannel-like node and the raw underlay, in one lab, in alternating rounds.
// Run it with `make bench` (root). BENCH_ROUNDS (default 5) and BENCH_SECONDS (default 4) tune it.
func BenchmarkDatapath(b *testing.B) {
	ctx := context.Background()
	l := newLab(b)

	n1, err := l.AddNode(ctx, "node-1", 1, lab.NodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n2, err := l.AddNode(ctx, "node-2", 2, lab.NodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	d3, err := l.AddNode(ctx, "node-3", 3, lab.NodeOptions{AgentArgs: []string{"--encap-mode=device"}})
	if err != nil {
		b.Fatal(err)
	}
	d4, err := l.AddNode(ctx, "node-4", 4, lab.NodeOptions{AgentArgs: []string{"--encap-mode=device"}})
	if err != nil {
		b.Fatal(err)
	}
	pod := func(n *lab.Node, name string) *lab.Pod {
		p, err := l.AddPod(ctx, n, name, lab.PodOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	a1, a2, bp1 := pod(n1, "bench-a1"), pod(n1, "bench-a2"), pod(n2, "bench-b1")
	d1, d2 := pod(d3, "bench-d1"), pod(d4, "bench-d2")

	fl, err := SetupFlannel(l.ID, l.Switch.Name(), "br0",
		[]string{"172.30.0.61", "172.30.0.62"}, lab.UnderlayNet.Bits(), 2, envInt("BENCH_IPTABLES_SERVICES", 1000))
	if err != nil {
		b.Fatal(err)
	}
	defer fl.Teardown()
	f1, f2 := fl.Nodes[0], fl.Nodes[1]

	ep := func(p *lab.Pod) Endpoint { return Endpoint{NetNS: p.Netns.Name(), IP: p.IP.String()} }
	flp := func(n *FlannelNode, i int) Endpoint { return Endpoint{NetNS: n.Pods[i], IP: n.PodIP(i)} }
	cross := []Path{
		{Name: "flannel", Client: flp(f1, 0), Server: flp(f2, 0)},
		{Name: "edgeplane", Client: ep(a1), Server: ep(bp1)},
		{Name: "edgeplane-device", Client: ep(d1), Server: ep(d2)},
		{Name: "underlay", Client: Endpoint{NetNS: n1.Netns.Name()}, Server: Endpoint{NetNS: n2.Netns.Name(), IP: n2.IP.String()}},
	}
	same := []Path{
		{Name: "flannel", Client: flp(f1, 0), Server: flp(f1, 1)},
		{Name: "edgeplane", Client: ep(a1), Server: ep(a2)},
	}
	secs := envInt("BENCH_SECONDS", 4)
	rr := func(tcp bool) func(Path, int) (Sample, error) {
		return func(p Path, port int) (Sample, error) { return RequestResponse(p, tcp, secs, "1", port) }
	}
	rrMetrics := []metric{
		{name: "udp_rr", unit: "transactions/s", better: "higher", measure: rr(false), value: func(s Sample) float64 { return s.TPS }},
		{name: "tcp_rr", unit: "transactions/s", better: "higher", measure: rr(true), value: func(s Sample) float64 { return s.TPS }},
	}
	bulk := []metric{
		{name: "udp_64b_pps", unit: "packets/s", better: "higher",
			measure: func(p Path, port int) (Sample, error) { return SmallUDP(p, secs, "0", "1", port) },
			value:   func(s Sample) float64 { return s.PPS }},
		{name: "tcp_stream", unit: "Mbit/s", better: "higher",
			measure: func(p Path, port int) (Sample, error) { return TCPStream(p, secs, "0", "1", port) },
			value:   func(s Sample) float64 { return s.Mbps }},
	}
	groups := []group{
		{name: "cross-node", paths: cross, metrics: append(append([]metric{}, rrMetrics...), bulk...)},
		{name: "same-node", paths: same, metrics: rrMetrics},
	}

	// Every path must work before it is measured.
	for _, g := range groups {
		for _, p := range g.paths {
			if _, err := RequestResponse(p, false, 1, "1", 14000); err != nil {
				b.Fatalf("%s/%s does not carry traffic: %v", g.name, p.Name, err)
			}
		}
	}

	rounds := envInt("BENCH_ROUNDS", 5)
	var results []Result
	port := 15000
	for _, g := range groups {
		for _, m := range g.metrics {
			samples := make([][]Sample, len(g.paths))
			for r := 0; r < rounds; r++ {
				for _, i := range ABBAOrder(len(g.paths), r) {
					port++
					s, err := m.measure(g.paths[i], port)
					if err != nil {
						b.Fatalf("%s %s %s round %d: %v", g.name, m.name, g.paths[i].Name, r, err)
					}
					samples[i] = append(samples[i], s)
				}
			}
			results = append(results, summarize(g, m, samples)...)
		}
	}
	b.StopTimer()
	report(b, results, time.Now())
}

// pairedRatios divides round k of a by round k of b: both were measured back to back, so drift
// of the shared VM cancels out.
func pairedRatios(m metric, a, b []Sample) (median, lo, hi float64) {
	var ratios []float64
	for k := range a {
		if k < len(b) && m.value(b[k]) > 0 {
			ratios = append(ratios, m.value(a[k])/m.value(b[k]))
		}
	}
	if len(ratios) == 0 {
		return 0, 0, 0
	}
	sort.Float64s(ratios)
	return Median(ratios), ratios[0], ratios[len(ratios)-1]
}

func summarize(g group, m metric, samples [][]Sample) []Result {
	underlay := -1
	for i, p := range g.paths {
		if p.Name == "underlay" {
			underlay = i
		}
	}
	var out []Result
	for i, p := range g.paths {
		r := Result{Group: g.name, Metric: m.name, Unit: m.unit, Path: p.Name, Baseline: g.paths[0].Name}
		for _, s := range samples[i] {
			r.Samples = append(r.Samples, m.value(s))
			if s.P50us > 0 {
				r.P50us = append(r.P50us, s.P50us)
				r.P99us = append(r.P99us, s.P99us)
			}
		}
		r.Median = Median(r.Samples)
		r.Ratio, r.RatioMin, r.RatioMax = pairedRatios(m, samples[i], samples[0])
		if underlay >= 0 {
			r.UnderlayRatio, r.UnderlayRatioMin, r.UnderlayRatioMax = pairedRatios(m, samples[i], samples[underlay])
		}
		out = append(out, r)
	}
	return out
}

func report(b *testing.B, results []Result, when time.Time) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-12s %-12s %-17s %14s %8s %15s %10s %15s %9s %9s\n", "group", "metric", "path", "median",
		"vs base", "min-max", "vs underlay", "min-max", "p50 us", "p99 us")
	for _, r := range results {
		p50, p99 := "", ""
		if len(r.P50us) > 0 {
			p50, p99 = fmt.Sprintf("%.1f", Median(r.P50us)), fmt.Sprintf("%.1f", Median(r.P99us))
		}
		vsU, vsURange := "", ""
		if r.UnderlayRatio > 0 {
			vsU, vsURange = fmt.Sprintf("%.2fx", r.UnderlayRatio), fmt.Sprintf("%.2f-%.2f", r.UnderlayRatioMin, r.UnderlayRatioMax)
		}
		fmt.Fprintf(&sb, "%-12s %-12s %-17s %14.0f %7.2fx %7.2f-%-7.2f %10s %15s %9s %9s\n", r.Group, r.Metric, r.Path, r.Median,
			r.Ratio, r.RatioMin, r.RatioMax, vsU, vsURange, p50, p99)
		b.ReportMetric(round3(r.Ratio), fmt.Sprintf("%s/%s/%s-ratio", r.Group, r.Metric, r.Path))
	}
	fmt.Print(sb.String())
	saveResults(b, results, when)
}

// saveResults merges results into bench/results.json (BENCH_RESULTS), stamped with the run: its
// date, this machine (BENCH_MACHINE names it, see results.ThisMachine) and the git revision.
func saveResults(b *testing.B, fresh []Result, when time.Time) {
	out := os.Getenv("BENCH_RESULTS")
	if out == "" {
		out = filepath.Join("..", "..", "bench", "results.json")
	}
	m := results.ThisMachine(os.Getenv("BENCH_MACHINE"))
	date := when.UTC().Format(time.RFC3339)
	rev := results.GitRevision(".")
	for i := range fresh {
		fresh[i].Date, fresh[i].Machine, fresh[i].GitRevision = date, m.ID, rev
	}
	f := results.Read(out)
	f.Merge(m, fresh)
	f.Date = date
	if err := results.Write(out, f); err != nil {
		b.Logf("%s: %v", out, err)
	}
	b.Logf("results of machine %s (%s, %d CPUs, kernel %s) at %s written to %s", m.ID, m.CPU, m.Cores, m.Kernel, rev, out)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
