package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuUse is the CPU the whole machine spent over a window, from /proc/stat: busy time is user,
// nice, system, irq and softirq (not idle, iowait or steal, the hypervisor's). In the netns lab
// every "node" runs on the same CPUs, so this is the sender's and the receiver's work together,
// plus whatever else runs on the machine (the lab's control plane and agents, other jobs): the
// benchmark also measures the machine idle (group cross-node-background) to show that floor.
type cpuUse struct {
	Busy    float64   `json:"busy_s"`              // busy CPU-seconds, all CPUs
	PerCPU  []float64 `json:"per_cpu_s,omitempty"` // busy CPU-seconds of each CPU
	WindowS float64   `json:"window_s"`            // wall-clock length of the window
}

// userHZ is the unit of /proc/stat's counters (USER_HZ, 100 on every Linux architecture the
// datapath supports).
const userHZ = 100

// procStatBusy returns the busy ticks of each CPU ("cpuN" lines of /proc/stat).
func procStatBusy() ([]uint64, error) {
	buf, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, fmt.Errorf("reading CPU times: %w", err)
	}
	return parseProcStat(string(buf))
}

func parseProcStat(stat string) ([]uint64, error) {
	var busy []uint64
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		// user nice system idle iowait irq softirq [steal guest guest_nice]
		var b uint64
		for _, i := range []int{1, 2, 3, 6, 7} {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parsing %s's CPU times: %w", f[0], err)
			}
			b += v
		}
		busy = append(busy, b)
	}
	if len(busy) == 0 {
		return nil, fmt.Errorf("no per-CPU line in /proc/stat")
	}
	return busy, nil
}

// measureCPU runs fn and returns the CPU the machine spent meanwhile.
func measureCPU(fn func() error) (cpuUse, error) {
	before, err := procStatBusy()
	if err != nil {
		return cpuUse{}, err
	}
	start := time.Now()
	ferr := fn()
	window := time.Since(start)
	after, err := procStatBusy()
	if err != nil {
		return cpuUse{}, err
	}
	u := cpuUse{WindowS: window.Seconds()}
	for i := range min(len(before), len(after)) {
		s := float64(after[i]-before[i]) / userHZ
		u.PerCPU = append(u.PerCPU, s)
		u.Busy += s
	}
	return u, ferr
}

// idleCPU measures the machine with no benchmark traffic for seconds: the floor under every
// CPU-cost figure (Sample.CPU is that busy time per second, in CPUs).
func idleCPU(seconds int) (Sample, error) {
	u, err := measureCPU(func() error { time.Sleep(time.Duration(seconds) * time.Second); return nil })
	return Sample{CPU: u, DurationS: u.WindowS}, err
}
