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

// CPU per packet divides the busy CPU-seconds (all CPUs or the ones named) by the datagrams
// received, in microseconds.
func TestCPUPerPacket(t *testing.T) {
	s := Sample{Sent: 200000, Received: 200000, CPU: cpuUse{Busy: 1.5, PerCPU: []float64{1, 0.5}, WindowS: 4.05}}
	for _, c := range []struct {
		cpus []int
		want float64
	}{{nil, 7.5}, {[]int{0}, 5}, {[]int{1}, 2.5}} {
		if got := s.CPUPerPacket(c.cpus...); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("CPUs %v: %v us, want %v", c.cpus, got, c.want)
		}
	}
	if got := (Sample{Received: 100}).CPUPerPacket(); got != 0 {
		t.Errorf("without CPU figures: %v", got)
	}
}

// The sender's report is parsed, and a sample is refused when it lost more than 0.1% of its
// datagrams or took longer than its schedule (the rate is not one the path sustains).
func TestFixedRateSample(t *testing.T) {
	s, err := parseUDPRate("sent=200000 received=199850 seconds=3.999412 ticks=4000 late_ticks=12 sender_cpu_s=0.51\n")
	if err != nil {
		t.Fatal(err)
	}
	if s.Sent != 200000 || s.Received != 199850 || math.Abs(s.DurationS-3.999412) > 1e-9 || math.Abs(s.PPS-199850/3.999412) > 1e-6 {
		t.Errorf("parsed %+v", s)
	}
	if err := checkFixedRate(s, 50000, "p"); err != nil {
		t.Errorf("150 of 200,000 lost (0.075%%): %v", err)
	}
	s.Received = 199700
	if err := checkFixedRate(s, 50000, "p"); err == nil {
		t.Error("300 of 200,000 lost (0.15%): no error")
	}
	s.Received = 200000
	s.DurationS = 4.1
	if err := checkFixedRate(s, 50000, "p"); err != nil {
		t.Errorf("4.1 s for a 4 s schedule (a hiccup caught up): %v", err)
	}
	s.DurationS = 4.3
	if err := checkFixedRate(s, 50000, "p"); err == nil {
		t.Error("4.3 s for a 4 s schedule: no error")
	}
	if _, err := parseUDPRate("udprate: control connection: refused"); err == nil {
		t.Error("no report line: no error")
	}
}
