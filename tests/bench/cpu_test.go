package bench

import (
	"math"
	"testing"
)

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

// With a floor measured around the sample, CPU per packet subtracts, CPU by CPU, the floor's
// busy rate over the sample's window: what the machine does anyway is not the path's cost.
func TestCPUPerPacketSubtractsFloor(t *testing.T) {
	// 8 s at 50,000 pkt/s: 400,000 datagrams. CPU 0 busy 2.4 s, CPU 1 1.2 s over an 8 s window;
	// without traffic (8 s around it) CPU 0 was 0.1 busy, CPU 1 0.05.
	s := Sample{Sent: 400000, Received: 400000,
		CPU:   cpuUse{Busy: 3.6, PerCPU: []float64{2.4, 1.2}, WindowS: 8},
		Floor: cpuUse{Busy: 1.2, PerCPU: []float64{0.8, 0.4}, WindowS: 8}}
	for _, c := range []struct {
		cpus []int
		want float64
	}{
		{nil, (3.6 - 0.15*8) * 1e6 / 400000},      // 6 us
		{[]int{0}, (2.4 - 0.1*8) * 1e6 / 400000},  // 4 us
		{[]int{1}, (1.2 - 0.05*8) * 1e6 / 400000}, // 2 us
	} {
		if got := s.CPUPerPacket(c.cpus...); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("CPUs %v: %v us, want %v", c.cpus, got, c.want)
		}
	}
	if got := s.FloorCPUs(); math.Abs(got-0.15) > 1e-12 {
		t.Errorf("floor %v busy CPUs, want 0.15", got)
	}
	// The floor is a rate: a shorter idle window with the same busy share subtracts the same.
	half := s
	half.Floor = cpuUse{Busy: 0.6, PerCPU: []float64{0.4, 0.2}, WindowS: 4}
	if a, b := s.CPUPerPacket(), half.CPUPerPacket(); math.Abs(a-b) > 1e-9 {
		t.Errorf("floor over 8 s: %v us, over 4 s at the same rate: %v us", a, b)
	}
	if got := (Sample{}).FloorCPUs(); got != 0 {
		t.Errorf("no floor measured: %v", got)
	}
}

// The sender's report is parsed, and a sample is refused when it lost more than 0.1% of its
// datagrams or took longer than its schedule (the rate is not one the path sustains).
func TestFixedRateSample(t *testing.T) {
	s, err := parseUDPRate("sent=200000 received=199850 seconds=3.999412 ticks=4000 late_ticks=12 sender_cpu_s=0.51 " +
		"cpu_busy_s=0.900,0.500 cpu_window_s=4.010000 idle_busy_s=0.400,0.160 idle_window_s=4.000000\n")
	if err != nil {
		t.Fatal(err)
	}
	if s.Sent != 200000 || s.Received != 199850 || math.Abs(s.DurationS-3.999412) > 1e-9 || math.Abs(s.PPS-199850/3.999412) > 1e-6 {
		t.Errorf("parsed %+v", s)
	}
	if math.Abs(s.SenderThreadS-0.51) > 1e-12 || math.Abs(s.SenderThreadPerPacket()-0.51e6/199850) > 1e-9 {
		t.Errorf("sender thread %v s, %v us per packet", s.SenderThreadS, s.SenderThreadPerPacket())
	}
	if math.Abs(s.CPU.Busy-1.4) > 1e-9 || len(s.CPU.PerCPU) != 2 || s.CPU.WindowS != 4.01 ||
		math.Abs(s.Floor.Busy-0.56) > 1e-9 || len(s.Floor.PerCPU) != 2 || s.Floor.WindowS != 4 {
		t.Errorf("parsed CPU %+v, floor %+v", s.CPU, s.Floor)
	}
	// Without -idle the sender reports no floor.
	n, err := parseUDPRate("sent=10 received=10 seconds=1 ticks=1000 late_ticks=0 sender_cpu_s=0.01 " +
		"cpu_busy_s=0.100 cpu_window_s=1.000000 idle_busy_s=- idle_window_s=0.000000")
	if err != nil || n.Floor.WindowS != 0 || len(n.Floor.PerCPU) != 0 || len(n.CPU.PerCPU) != 1 {
		t.Errorf("without a floor: %+v, %v", n, err)
	}
	if _, err := parseUDPRate("sent=10 received=10 seconds=1 ticks=1000 late_ticks=0 sender_cpu_s=0.01"); err == nil {
		t.Error("no CPU figures: no error")
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
