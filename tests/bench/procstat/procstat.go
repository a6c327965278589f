// Package procstat reads the per-CPU time counters of /proc/stat (proc(5)): each "cpuN" line
// holds the ticks (USER_HZ) the CPU spent in each state since boot, and Sum adds the states a
// caller counts. The benchmark adds what counts as busy; its fixed-rate sender (udprate), on a
// kernel whose user and system times are sampled at the tick, adds what did not run anything.
package procstat

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// UserHZ is the unit of the counters (USER_HZ, 100 on every Linux architecture the datapath
// supports).
const UserHZ = 100

// Field is a column of a "cpuN" line, counted from 1.
type Field int

const (
	User Field = 1 + iota
	Nice
	System
	Idle
	IOWait
	IRQ
	SoftIRQ
	Steal
)

// Read reads /proc/stat now and returns Sum of it.
func Read(fields ...Field) ([]uint64, error) {
	buf, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, fmt.Errorf("reading CPU times: %w", err)
	}
	return Sum(string(buf), fields...)
}

// Sum returns, for each "cpuN" line of stat (not the "cpu" total), the sum of fields. A line too
// short to hold them all is passed over; none left is an error.
func Sum(stat string, fields ...Field) ([]uint64, error) {
	last := int(slices.Max(fields))
	var out []uint64
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) <= last || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var sum uint64
		for _, i := range fields {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parsing %s's CPU times: %w", f[0], err)
			}
			sum += v
		}
		out = append(out, sum)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no per-CPU line with %d fields in /proc/stat", last)
	}
	return out, nil
}
