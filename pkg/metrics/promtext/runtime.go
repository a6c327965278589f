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
	// goRuntime are the families read from runtime/metrics: each the sum of its samples, as
	// client_golang derives its memstats from them (memStatsFromRM).
	goRuntime = []struct {
		desc    *Desc
		samples []string
	}{
		{gauge("go_gc_gogc_percent", "Heap size target percentage configured by the user, otherwise 100."), []string{"/gc/gogc:percent"}},
		{gauge("go_gc_gomemlimit_bytes", "Go runtime memory limit configured by the user, otherwise math.MaxInt64."), []string{"/gc/gomemlimit:bytes"}},
		{gauge("go_memstats_alloc_bytes", "Number of bytes allocated in heap and currently in use."), []string{heapObjects}},
		{counter("go_memstats_alloc_bytes_total", "Total number of bytes allocated in heap until now, even if released already."), []string{"/gc/heap/allocs:bytes"}},
		{counter("go_memstats_mallocs_total", "Total number of heap objects allocated, both live and gc-ed."), []string{"/gc/heap/allocs:objects", tinyAllocs}},
		{counter("go_memstats_frees_total", "Total number of heap objects frees."), []string{"/gc/heap/frees:objects", tinyAllocs}},
		{gauge("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use."), []string{heapObjects}},
		{gauge("go_memstats_heap_objects", "Number of currently allocated objects."), []string{"/gc/heap/objects:objects"}},
		{gauge("go_memstats_heap_inuse_bytes", "Number of heap bytes in spans that are in use."), []string{heapObjects, heapUnused}},
		{gauge("go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used."), []string{heapFree, heapReleased}},
		{gauge("go_memstats_heap_released_bytes", "Number of heap bytes released to OS."), []string{heapReleased}},
		{gauge("go_memstats_heap_sys_bytes", "Number of heap bytes obtained from system."), []string{heapObjects, heapUnused, heapFree, heapReleased}},
		{gauge("go_memstats_stack_inuse_bytes", "Number of bytes obtained from system for stack allocator."), []string{stacks}},
		{gauge("go_memstats_stack_sys_bytes", "Number of bytes obtained from system for stack allocator."), []string{stacks, "/memory/classes/os-stacks:bytes"}},
		{gauge("go_memstats_mspan_inuse_bytes", "Number of bytes in use by mspan structures."), []string{mspanInuse}},
		{gauge("go_memstats_mspan_sys_bytes", "Number of bytes used for mspan structures obtained from system."), []string{mspanInuse, "/memory/classes/metadata/mspan/free:bytes"}},
		{gauge("go_memstats_mcache_inuse_bytes", "Number of bytes in use by mcache structures."), []string{mcacheInuse}},
		{gauge("go_memstats_mcache_sys_bytes", "Number of bytes used for mcache structures obtained from system."), []string{mcacheInuse, "/memory/classes/metadata/mcache/free:bytes"}},
		{gauge("go_memstats_buck_hash_sys_bytes", "Number of bytes used by the profiling bucket hash table."), []string{"/memory/classes/profiling/buckets:bytes"}},
		{gauge("go_memstats_gc_sys_bytes", "Number of bytes used for garbage collection system metadata."), []string{"/memory/classes/metadata/other:bytes"}},
		{gauge("go_memstats_other_sys_bytes", "Number of bytes used for other system allocations."), []string{"/memory/classes/other:bytes"}},
		{gauge("go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place."), []string{"/gc/heap/goal:bytes"}},
		{gauge("go_memstats_sys_bytes", "Number of bytes obtained from system."), []string{"/memory/classes/total:bytes"}},
		// Not one of client_golang's default families: the runtime's count of collections.
		{counter("go_gc_cycles_total", "Count of completed GC cycles."), []string{"/gc/cycles/total:gc-cycles"}},
	}
)

const (
	heapObjects  = "/memory/classes/heap/objects:bytes"
	heapUnused   = "/memory/classes/heap/unused:bytes"
	heapFree     = "/memory/classes/heap/free:bytes"
	heapReleased = "/memory/classes/heap/released:bytes"
	stacks       = "/memory/classes/heap/stacks:bytes"
	mspanInuse   = "/memory/classes/metadata/mspan/inuse:bytes"
	mcacheInuse  = "/memory/classes/metadata/mcache/inuse:bytes"
	// tinyAllocs are counted in both mallocs and frees, as runtime.MemStats does.
	tinyAllocs = "/gc/heap/tiny/allocs:objects"
)

func gauge(name, help string) *Desc   { return &Desc{Name: name, Type: Gauge, Help: help} }
func counter(name, help string) *Desc { return &Desc{Name: name, Type: Counter, Help: help} }

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
	processMaxVM     = &Desc{Name: "process_virtual_memory_max_bytes", Type: Gauge, Help: "Maximum amount of virtual memory available in bytes."}
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
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &lim); err != nil {
		s.Fail(fmt.Errorf("reading RLIMIT_AS: %w", err))
	} else {
		s.Add(processMaxVM, float64(lim.Cur)) // unlimited: 2^64-1, as client_golang reports it
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
