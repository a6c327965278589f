package bench

import (
	"math"
	"testing"
)

// In a group with the veth floor every path but the floor and the underlay gets its paired ratio
// against the floor, beside those against the baseline and the underlay; a round whose figure is
// negative (CPU less a floor larger than it) gives no ratio rather than a negative one.
func TestSummarizeVethFloor(t *testing.T) {
	g := group{name: "route-mode", paths: []Path{{Name: "edgeplane"}, {Name: "edgeplane-route"}, {Name: "veth-floor"}, {Name: "underlay"}}}
	m := metric{name: "udp_rr", value: func(s Sample) float64 { return s.TPS }}
	tps := func(v ...float64) []Sample {
		var out []Sample
		for _, x := range v {
			out = append(out, Sample{TPS: x})
		}
		return out
	}
	rs := summarize(g, m, [][]Sample{tps(90, 80), tps(100, 110), tps(100, 100), tps(125, 100)})
	byPath := map[string]Result{}
	for _, r := range rs {
		byPath[r.Path] = r
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if r := byPath["edgeplane-route"]; !near(r.VethFloorRatio, 1.05) || !near(r.VethFloorRatioMin, 1.0) || !near(r.VethFloorRatioMax, 1.1) ||
		!near(r.UnderlayRatio, 0.95) {
		t.Errorf("edgeplane-route: vs floor %v (%v-%v), vs underlay %v; want 1.05 (1.00-1.10), 0.95",
			r.VethFloorRatio, r.VethFloorRatioMin, r.VethFloorRatioMax, r.UnderlayRatio)
	}
	if r := byPath["edgeplane"]; !near(r.VethFloorRatio, 0.85) {
		t.Errorf("the baseline against the floor: %v, want 0.85", r.VethFloorRatio)
	}
	if r := byPath["veth-floor"]; r.VethFloorRatio != 0 || !near(r.UnderlayRatio, 0.9) {
		t.Errorf("the floor: vs itself %v (want none), vs underlay %v (want 0.90)", r.VethFloorRatio, r.UnderlayRatio)
	}
	if r := byPath["underlay"]; r.VethFloorRatio != 0 {
		t.Errorf("the underlay against the floor: %v, want none", r.VethFloorRatio)
	}

	// The floor around a sample is recorded, not compared.
	for _, r := range summarize(g, metric{name: "udp_64b_cpu_fixed_floor", value: func(s Sample) float64 { return s.TPS }, noRatios: true},
		[][]Sample{tps(0.1), tps(0.2), tps(0.1), tps(0.1)}) {
		if r.Ratio != 0 || r.UnderlayRatio != 0 || r.VethFloorRatio != 0 || len(r.Samples) != 1 {
			t.Errorf("floor of %s: ratios %v/%v/%v, samples %v; want samples and no ratio", r.Path, r.Ratio, r.UnderlayRatio, r.VethFloorRatio, r.Samples)
		}
	}

	cpu := metric{name: "udp_64b_cpu_fixed", value: func(s Sample) float64 { return s.TPS }}
	if med, lo, hi := pairedRatios(cpu, tps(-0.2, 3), tps(2, 2)); !near(med, 1.5) || !near(lo, 1.5) || !near(hi, 1.5) {
		t.Errorf("a negative round: %v (%v-%v), want only the other round's 1.5", med, lo, hi)
	}
	if med, _, _ := pairedRatios(cpu, tps(1), tps(-1)); med != 0 {
		t.Errorf("a negative baseline: %v, want no ratio", med)
	}
}
