package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/stat's counters (USER_HZ, 100 on every Linux architecture).
const userHZ = 100

// cpuTimes is one reading of /proc/stat: for each CPU ("cpuN" lines), the ticks it spent not
// running anything (idle + iowait + steal), and when it was read (CLOCK_MONOTONIC, ns).
type cpuTimes struct {
	at     int64
	notRun []uint64
}

// readCPUTimes reads /proc/stat now.
func readCPUTimes() (cpuTimes, error) {
	buf, err := os.ReadFile("/proc/stat")
	at := monotonic()
	if err != nil {
		return cpuTimes{}, fmt.Errorf("reading CPU times: %w", err)
	}
	notRun, err := parseNotRunning(string(buf))
	return cpuTimes{at: at, notRun: notRun}, err
}

// parseNotRunning returns, for each "cpuN" line of /proc/stat, idle + iowait + steal.
func parseNotRunning(stat string) ([]uint64, error) {
	var out []uint64
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		// user nice system idle iowait irq softirq steal [guest guest_nice]
		var v uint64
		for _, i := range []int{4, 5, 8} {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parsing %s's CPU times: %w", f[0], err)
			}
			v += n
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no per-CPU line with steal time in /proc/stat")
	}
	return out, nil
}

// cpuBusy is what each CPU spent running something over a window.
type cpuBusy struct {
	window time.Duration
	perCPU []float64 // busy seconds
}

// busyBetween is each CPU's busy time between two readings: the window less the time it did
// not run anything. The counters' 10 ms unit can make an idle CPU's figure slightly negative or
// a busy one's slightly above the window: it is kept as it is, so that averages stay unbiased.
func busyBetween(before, after cpuTimes) cpuBusy {
	b := cpuBusy{window: time.Duration(after.at - before.at)}
	for i := range min(len(before.notRun), len(after.notRun)) {
		notRun := float64(after.notRun[i]-before.notRun[i]) / userHZ
		b.perCPU = append(b.perCPU, b.window.Seconds()-notRun)
	}
	return b
}

// plus adds two windows' busy times (and lengths).
func (b cpuBusy) plus(o cpuBusy) cpuBusy {
	out := cpuBusy{window: b.window + o.window}
	for i := range max(len(b.perCPU), len(o.perCPU)) {
		var v float64
		if i < len(b.perCPU) {
			v += b.perCPU[i]
		}
		if i < len(o.perCPU) {
			v += o.perCPU[i]
		}
		out.perCPU = append(out.perCPU, v)
	}
	return out
}

// perCPUString is the busy seconds as "B0,B1,...", "-" when none was measured.
func (b cpuBusy) perCPUString() string {
	if len(b.perCPU) == 0 {
		return "-"
	}
	s := make([]string, len(b.perCPU))
	for i, v := range b.perCPU {
		s[i] = strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strings.Join(s, ",")
}
