package bench

import (
	"math"
	"testing"
)

// Busy time is user + nice + system + irq + softirq of each CPU; idle, iowait and steal are not.
func TestParseProcStat(t *testing.T) {
	stat := `cpu  300 20 100 5000 40 6 70 900 0 0
cpu0 100 10 50 2500 20 3 30 450 0 0
cpu1 200 10 50 2500 20 3 40 450 0 0
intr 12345
ctxt 678`
	got, err := parseProcStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 100+10+50+3+30 || got[1] != 200+10+50+3+40 {
		t.Errorf("busy ticks %v", got)
	}
	if _, err := parseProcStat("cpu  1 2 3 4 5 6 7\nintr 1"); err == nil {
		t.Error("no per-CPU line: no error")
	}
}

// CPU per Gbit divides the busy CPU-seconds (all CPUs or the ones named) by the gigabits moved.
func TestCPUPerGbit(t *testing.T) {
	s := Sample{Mbps: 10000, DurationS: 4, CPU: cpuUse{Busy: 6, PerCPU: []float64{4, 2}, WindowS: 4.1}}
	for _, c := range []struct {
		cpus []int
		want float64
	}{{nil, 6.0 / 40}, {[]int{0}, 4.0 / 40}, {[]int{1}, 2.0 / 40}, {[]int{0, 1}, 6.0 / 40}} {
		if got := s.CPUPerGbit(c.cpus...); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("CPUs %v: %v, want %v", c.cpus, got, c.want)
		}
	}
	if got := (Sample{Mbps: 10000, DurationS: 4}).CPUPerGbit(); got != 0 {
		t.Errorf("without CPU figures: %v", got)
	}
}
