package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// How BenchmarkServices grows the number of Services between its steps, waits for both proxies to
// program them, and relates each step's figures to the first step's.

// kubeProxyServices counts kube-proxy's per-Service-IP rules in the nat table's KUBE-SERVICES.
func (s *servicesBench) kubeProxyServices() (int, error) {
	rules, err := s.proxy.NATRules(context.Background())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(rules, "\n") {
		if strings.HasPrefix(line, "-A KUBE-SERVICES -d ") {
			n++
		}
	}
	return n, nil
}

// grow creates bulk Services until n Services are programmed (the benchmark's own counting as
// one), waits for both proxies to have programmed all of them, and reports how long that took and
// both proxies' memory.
func (s *servicesBench) grow(b *testing.B, n int) []Result {
	ctx := context.Background()
	want := n - 1
	if want <= s.fillers {
		return nil
	}
	start := time.Now()
	if _, err := s.l.BulkServices(ctx, "fill", s.fillers, want, 10, 8); err != nil {
		b.Fatal(err)
	}
	created := time.Since(start)
	s.fillers = want
	var epDone, kpDone time.Duration
	deadline := time.Now().Add(15 * time.Minute)
	for epDone == 0 || kpDone == 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d services: not programmed within 15 minutes (edgeplane %v, kube-proxy %v)", n, epDone, kpDone)
		}
		if epDone == 0 {
			if c, err := s.ep.ServiceFrontends(); err == nil && c >= s.svc0+want {
				epDone = time.Since(start)
			}
		}
		if kpDone == 0 {
			if c, err := s.kubeProxyServices(); err == nil && c >= s.kpRules0+want {
				kpDone = time.Since(start)
			}
		}
		time.Sleep(time.Second)
	}
	epRSS, kpRSS := rssMiB(s.ep.Agent.Pid()), rssMiB(s.proxy.Process.Pid())
	b.Logf("%d services: created in %v; programmed by edgeplane after %v (RSS %.0f MiB), by kube-proxy after %v (RSS %.0f MiB)",
		n, created.Round(time.Millisecond), epDone.Round(time.Second), epRSS, kpDone.Round(time.Second), kpRSS)
	g := fmt.Sprintf("services-%d/programming", n)
	one := func(metric, unit, path string, v, base float64) Result {
		r := Result{Group: g, Metric: metric, Unit: unit, Path: path, Baseline: "kube-proxy", Samples: []float64{v}, Median: v}
		if base > 0 {
			r.Ratio, r.RatioMin, r.RatioMax = v/base, v/base, v/base
		}
		return r
	}
	return []Result{
		one("programmed_after_create_start", "s (1 s polls)", "kube-proxy", kpDone.Seconds(), kpDone.Seconds()),
		one("programmed_after_create_start", "s (1 s polls)", "edgeplane", epDone.Seconds(), kpDone.Seconds()),
		one("rss", "MiB", "kube-proxy", kpRSS, kpRSS),
		one("rss", "MiB", "edgeplane", epRSS, kpRSS),
	}
}

func rssMiB(pid int) float64 {
	buf, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(buf), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// scaling relates every path's median at each step to its own at the first step (edgeplane at
// 10,000 Services against edgeplane at 1).
func scaling(steps []int, perStep map[int][]Result) []Result {
	if len(steps) < 2 {
		return nil
	}
	base := map[string]Result{}
	key := func(r Result) string {
		return strings.SplitN(r.Group, "/", 2)[1] + "|" + r.Metric + "|" + r.Path
	}
	for _, r := range perStep[steps[0]] {
		base[key(r)] = r
	}
	var out []Result
	for _, n := range steps[1:] {
		for _, r := range perStep[n] {
			b0, ok := base[key(r)]
			if !ok || b0.Median == 0 {
				continue
			}
			out = append(out, Result{
				Group: fmt.Sprintf("services-scaling/%s", strings.SplitN(r.Group, "/", 2)[1]), Metric: fmt.Sprintf("%s@%d", r.Metric, n),
				Unit: "ratio to own median at " + strconv.Itoa(steps[0]), Path: r.Path, Baseline: fmt.Sprintf("%s@%d", r.Path, steps[0]),
				Samples: []float64{r.Median}, Median: r.Median, Ratio: r.Median / b0.Median,
			})
		}
	}
	return out
}
