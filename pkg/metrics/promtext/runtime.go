package promtext

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
)

// The Go runtime's families, named and meant as client_golang's Go collector's.
var (
	goGoroutines = &Desc{Name: "go_goroutines", Type: Gauge, Help: "Number of goroutines that currently exist."}
	goThreads    = &Desc{Name: "go_threads", Type: Gauge, Help: "Number of OS threads created."}
	goInfo       = &Desc{Name: "go_info", Type: Gauge, Labels: []string{"version"}, Help: "Information about the Go environment."}
	goMaxProcs   = &Desc{Name: "go_sched_gomaxprocs_threads", Type: Gauge, Help: "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously."}
	// goRuntime are the families read from runtime/metrics: each the sum of its samples.
	goRuntime = []struct {
		desc    *Desc
		samples []string
	}{
		{&Desc{Name: "go_gc_gogc_percent", Type: Gauge, Help: "Heap size target percentage configured by the user, otherwise 100."}, []string{"/gc/gogc:percent"}},
		{&Desc{Name: "go_gc_gomemlimit_bytes", Type: Gauge, Help: "Go runtime memory limit configured by the user, otherwise math.MaxInt64."}, []string{"/gc/gomemlimit:bytes"}},
		{&Desc{Name: "go_memstats_alloc_bytes", Type: Gauge, Help: "Number of bytes allocated in heap and currently in use."}, []string{"/memory/classes/heap/objects:bytes"}},
		{&Desc{Name: "go_memstats_alloc_bytes_total", Type: Counter, Help: "Total number of bytes allocated in heap until now, even if released already."}, []string{"/gc/heap/allocs:bytes"}},
		{&Desc{Name: "go_memstats_mallocs_total", Type: Counter, Help: "Total number of heap objects allocated, both live and gc-ed."}, []string{"/gc/heap/allocs:objects"}},
		{&Desc{Name: "go_memstats_frees_total", Type: Counter, Help: "Total number of heap objects frees."}, []string{"/gc/heap/frees:objects"}},
		{&Desc{Name: "go_memstats_heap_objects", Type: Gauge, Help: "Number of currently allocated objects."}, []string{"/gc/heap/objects:objects"}},
		{&Desc{Name: "go_memstats_heap_inuse_bytes", Type: Gauge, Help: "Number of heap bytes in spans that are in use."}, []string{"/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes"}},
		{&Desc{Name: "go_memstats_heap_idle_bytes", Type: Gauge, Help: "Number of heap bytes waiting to be used."}, []string{"/memory/classes/heap/free:bytes", "/memory/classes/heap/released:bytes"}},
		{&Desc{Name: "go_memstats_heap_released_bytes", Type: Gauge, Help: "Number of heap bytes released to OS."}, []string{"/memory/classes/heap/released:bytes"}},
		{&Desc{Name: "go_memstats_stack_inuse_bytes", Type: Gauge, Help: "Number of bytes obtained from system for stack allocator."}, []string{"/memory/classes/heap/stacks:bytes"}},
		{&Desc{Name: "go_memstats_next_gc_bytes", Type: Gauge, Help: "Number of heap bytes when next garbage collection will take place."}, []string{"/gc/heap/goal:bytes"}},
		{&Desc{Name: "go_memstats_sys_bytes", Type: Gauge, Help: "Number of bytes obtained from system."}, []string{"/memory/classes/total:bytes"}},
		{&Desc{Name: "go_gc_cycles_total", Type: Counter, Help: "Count of completed GC cycles."}, []string{"/gc/cycles/total:gc-cycles"}},
	}
)

// GoCollector reports the Go runtime's families.
type GoCollector struct{}

func (GoCollector) Collect(s *Scrape) {
	s.Add(goGoroutines, float64(runtime.NumGoroutine()))
	s.Add(goThreads, float64(pprof.Lookup("threadcreate").Count()))
	s.Add(goInfo, 1, runtime.Version())
	s.Add(goMaxProcs, float64(runtime.GOMAXPROCS(0)))
	var samples []metrics.Sample
	for _, f := range goRuntime {
		for _, name := range f.samples {
			samples = append(samples, metrics.Sample{Name: name})
		}
	}
	metrics.Read(samples)
	for _, f := range goRuntime {
		var v float64
		for range f.samples {
			switch samples[0].Value.Kind() {
			case metrics.KindUint64:
				v += float64(samples[0].Value.Uint64())
			case metrics.KindFloat64:
				v += samples[0].Value.Float64()
			}
			samples = samples[1:]
		}
		s.Add(f.desc, v)
	}
}

// The process' families, named and meant as client_golang's process collector's.
var (
	processCPU       = &Desc{Name: "process_cpu_seconds_total", Type: Counter, Help: "Total user and system CPU time spent in seconds."}
	processOpenFDs   = &Desc{Name: "process_open_fds", Type: Gauge, Help: "Number of open file descriptors."}
	processMaxFDs    = &Desc{Name: "process_max_fds", Type: Gauge, Help: "Maximum number of open file descriptors."}
	processVirtual   = &Desc{Name: "process_virtual_memory_bytes", Type: Gauge, Help: "Virtual memory size in bytes."}
	processResident  = &Desc{Name: "process_resident_memory_bytes", Type: Gauge, Help: "Resident memory size in bytes."}
	processStartTime = &Desc{Name: "process_start_time_seconds", Type: Gauge, Help: "Start time of the process since unix epoch in seconds."}
)

// userHZ is the unit of /proc/<pid>/stat's times: USER_HZ, 100 on every Linux architecture Go
// runs on.
const userHZ = 100

// ProcessCollector reports the process' CPU, memory and file descriptors from /proc.
type ProcessCollector struct{}

func (ProcessCollector) Collect(s *Scrape) {
	st, err := readStat()
	if err != nil {
		s.Fail(err)
	} else {
		s.Add(processCPU, float64(st.utime+st.stime)/userHZ)
		s.Add(processVirtual, float64(st.vsize))
		s.Add(processResident, float64(st.rss*int64(os.Getpagesize())))
		if boot, err := bootTime(); err != nil {
			s.Fail(err)
		} else {
			s.Add(processStartTime, float64(boot)+float64(st.start)/userHZ)
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err != nil {
		s.Fail(err)
	} else {
		s.Add(processOpenFDs, float64(len(fds)))
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		s.Fail(fmt.Errorf("reading RLIMIT_NOFILE: %w", err))
	} else {
		s.Add(processMaxFDs, float64(lim.Cur))
	}
}

type procStat struct {
	utime, stime, start uint64
	vsize               uint64
	rss                 int64
}

// readStat reads /proc/self/stat (proc(5)): after the command in parentheses, the fields from the
// third on.
func readStat() (procStat, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("reading /proc/self/stat: no command")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, state
	if len(f) < 22 {
		return procStat{}, fmt.Errorf("reading /proc/self/stat: %d fields", len(f)+2)
	}
	field := func(n int) uint64 { v, _ := strconv.ParseUint(f[n-3], 10, 64); return v }
	rss, _ := strconv.ParseInt(f[24-3], 10, 64)
	return procStat{utime: field(14), stime: field(15), start: field(22), vsize: field(23), rss: rss}, nil
}

// bootTime is /proc/stat's btime: when the system booted, in seconds since the epoch.
func bootTime() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("reading /proc/stat: no btime")
}
