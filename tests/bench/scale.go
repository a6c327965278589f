package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/edgeplane/edgeplane/tests/bench/procstat"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// What BenchmarkScale reads of an agent from outside: its CPU time from /proc and the bytes its
// node's interface received, from the kernel's link statistics.

// processCPUSeconds is pid's user+system time so far, in seconds (/proc/<pid>/stat fields 14 and
// 15, in clock ticks).
func processCPUSeconds(pid int) (float64, error) {
	buf, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the cpu time of %d: %w", pid, err)
	}
	return parseProcessCPU(string(buf))
}

func parseProcessCPU(stat string) (float64, error) {
	// The command name (field 2) is in parentheses and may hold spaces: count from its end.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("short stat line %q", stat)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime/stime in %q: %v %v", stat, err1, err2)
	}
	return float64(utime+stime) / procstat.UserHZ, nil
}

// linkRxBytes is the bytes ifname in ns has received (iproute2's 64-bit link statistics).
func linkRxBytes(ctx context.Context, ns lab.Netns, ifname string) (uint64, error) {
	out, err := ns.IP(ctx, "-j", "-s", "link", "show", "dev", ifname)
	if err != nil {
		return 0, err
	}
	var links []struct {
		Stats64 struct {
			Rx struct {
				Bytes uint64 `json:"bytes"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return 0, fmt.Errorf("link statistics of %s in %s: %q: %v", ifname, ns.Name(), out, err)
	}
	return links[0].Stats64.Rx.Bytes, nil
}
