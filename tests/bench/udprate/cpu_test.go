package main

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// Busy time is the window less what each CPU did not run, in seconds (counters in 1/100 s).
func TestBusyBetween(t *testing.T) {
	before := cpuTimes{at: int64(10 * time.Second), notRun: []uint64{1000, 2000}}
	// 4 s later: CPU 0 was idle 3 s (busy 1 s), CPU 1 idle 4 s (busy 0).
	after := cpuTimes{at: int64(14 * time.Second), notRun: []uint64{1300, 2400}}
	b := busyBetween(before, after)
	if b.window != 4*time.Second || len(b.perCPU) != 2 || math.Abs(b.perCPU[0]-1) > 1e-9 || math.Abs(b.perCPU[1]) > 1e-9 {
		t.Errorf("busyBetween = %+v, want 4 s window, busy [1 0]", b)
	}
	// Two idle windows add up, in time and in busy time.
	s := b.plus(cpuBusy{window: 2 * time.Second, perCPU: []float64{0.5, 0.25}})
	if s.window != 6*time.Second || math.Abs(s.perCPU[0]-1.5) > 1e-9 || math.Abs(s.perCPU[1]-0.25) > 1e-9 {
		t.Errorf("plus = %+v, want 6 s window, busy [1.5 0.25]", s)
	}
	if got := (cpuBusy{}).plus(b); got.window != b.window || len(got.perCPU) != 2 {
		t.Errorf("nothing plus b = %+v, want b", got)
	}
	if got := s.perCPUString(); got != "1.500,0.250" {
		t.Errorf("perCPUString = %q", got)
	}
	if got := (cpuBusy{}).perCPUString(); got != "-" {
		t.Errorf("perCPUString of nothing = %q", got)
	}
}

// With -idle the sender measures the machine without traffic around the sample, half before
// and half after, and reports both windows; the busy time of a window is at most its length per
// CPU (plus a counter's unit).
func TestSenderMeasuresIdleFloor(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	rc, err := listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	go func() { _ = rc.serve() }()
	r, err := send(addr, 10000, 200*time.Millisecond, 64, 400*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", r)
	if r.idle.window < 400*time.Millisecond || r.idle.window > 2*time.Second {
		t.Errorf("idle window %v, want about 400 ms", r.idle.window)
	}
	if r.busy.window < r.elapsed || r.busy.window > r.elapsed+2*time.Second {
		t.Errorf("CPU window %v, want the sending time %v and the count", r.busy.window, r.elapsed)
	}
	for _, w := range []cpuBusy{r.busy, r.idle} {
		if len(w.perCPU) == 0 {
			t.Fatalf("no per-CPU figures: %v", r)
		}
		for i, v := range w.perCPU {
			if v > w.window.Seconds()+0.02 || v < -0.02 {
				t.Errorf("CPU %d busy %.3f s in a %v window", i, v, w.window)
			}
		}
	}
	for _, f := range []string{"cpu_busy_s=", "cpu_window_s=", "idle_busy_s=", "idle_window_s="} {
		if !strings.Contains(r.String(), f) {
			t.Errorf("report %q lacks %s", r, f)
		}
	}
}

// The sender sends what is due by each tick's end, exactly rate x duration in all, and after a
// hiccup catches up by at most four ticks' worth per tick instead of one burst.
func TestDueBy(t *testing.T) {
	const rate, total = 30000, 120000 // 30 a tick, 4 s
	for _, c := range []struct {
		k          int
		sent, want uint64
	}{
		{0, 0, 30},     // on time
		{9, 270, 300},  // on time
		{49, 270, 390}, // 40 ticks behind: four ticks' worth, not 1,230 at once
		{50, 390, 510}, // still catching up
		{3999, 119970, total},
		{4005, 119990, total}, // past the schedule: only what is left
	} {
		if got := dueBy(rate, c.k, c.sent, total); got != c.want {
			t.Errorf("dueBy(tick %d, sent %d) = %d, want %d", c.k, c.sent, got, c.want)
		}
	}
	// A rate that is not a multiple of the ticks: 1,500/s is 1.5 a tick, four ticks' worth is 8.
	if got := dueBy(1500, 99, 10, 6000); got != 18 {
		t.Errorf("dueBy(1500/s, tick 99, sent 10) = %d, want 18", got)
	}
}
