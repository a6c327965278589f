package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"
)

// heapProfileEnv is a debugging aid, off unless set: EDGEPLANE_HEAP_PROFILE=<path> makes the agent
// write its heap profile (runtime/pprof's, as of the last garbage collection) to <path>.<pid> every
// heapProfileEvery, replacing the previous one, for `go tool pprof -sample_index=inuse_space`.
// Beside it, <path>.<pid>.mem holds the runtime's memory statistics and the kernel's
// /proc/self/smaps_rollup, to tell the heap from the rest of the resident set; <path>.<pid>.peak
// and .peak.mem are the same taken when the heap in use was the highest so far (checked every
// second). It is how docs/benchmarks.md's breakdown of the agent's steady heap and its peaks was
// taken (BenchmarkScale passes its environment to the agents it starts).
const heapProfileEnv = "EDGEPLANE_HEAP_PROFILE"

const heapProfileEvery = 10 * time.Second

func init() {
	path := os.Getenv(heapProfileEnv)
	if path == "" {
		return
	}
	path = fmt.Sprintf("%s.%d", path, os.Getpid())
	// One sample per 16 KiB allocated instead of 512: the steady heap is mostly small objects by
	// the ten thousand, which the default rate attributes with errors of tens of percent.
	runtime.MemProfileRate = 16 << 10
	go func() {
		var peak uint64
		tick := time.NewTicker(time.Second)
		for n := 1; ; n++ {
			<-tick.C
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			var paths []string
			if n%int(heapProfileEvery/time.Second) == 0 {
				paths = append(paths, path)
			}
			if m.HeapInuse > peak {
				peak = m.HeapInuse
				paths = append(paths, path+".peak")
			}
			for _, p := range paths {
				if err := writeHeapProfile(p); err != nil {
					fmt.Fprintf(os.Stderr, "%s: %v\n", heapProfileEnv, err)
				}
				if err := writeMemStats(p + ".mem"); err != nil {
					fmt.Fprintf(os.Stderr, "%s: %v\n", heapProfileEnv, err)
				}
			}
		}
	}()
}

// writeHeapProfile writes the heap profile to path through a temporary file, so that a reader
// never sees half a profile.
func writeHeapProfile(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".heap-*")
	if err != nil {
		return fmt.Errorf("writing the heap profile: %w", err)
	}
	defer os.Remove(f.Name())
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("writing the heap profile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the heap profile: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing the heap profile: %w", err)
	}
	return nil
}

// writeMemStats writes runtime.MemStats' sizes and smaps_rollup to path.
func writeMemStats(path string) error {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	rollup, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return fmt.Errorf("reading smaps_rollup: %w", err)
	}
	text := fmt.Sprintf("HeapAlloc %d\nHeapInuse %d\nHeapIdle %d\nHeapReleased %d\nStackInuse %d\nMSpanInuse %d\n"+
		"GCSys %d\nOtherSys %d\nSys %d\nNumGC %d\nNextGC %d\n%s",
		m.HeapAlloc, m.HeapInuse, m.HeapIdle, m.HeapReleased, m.StackInuse, m.MSpanInuse, m.GCSys, m.OtherSys, m.Sys,
		m.NumGC, m.NextGC, rollup)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return fmt.Errorf("writing memory statistics: %w", err)
	}
	return nil
}
