package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgeplane/edgeplane/tests/bench/procstat"
)

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
	notRun, err := procstat.Sum(string(buf), procstat.Idle, procstat.IOWait, procstat.Steal)
	return cpuTimes{at: at, notRun: notRun}, err
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
		notRun := float64(after.notRun[i]-before.notRun[i]) / procstat.UserHZ
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
