package bench

import (
	"time"

	"github.com/edgeplane/edgeplane/tests/bench/procstat"
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

// procStatBusy returns the busy ticks of each CPU: user, nice, system, irq and softirq.
func procStatBusy() ([]uint64, error) {
	return procstat.Read(procstat.User, procstat.Nice, procstat.System, procstat.IRQ, procstat.SoftIRQ)
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
		s := float64(after[i]-before[i]) / procstat.UserHZ
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
