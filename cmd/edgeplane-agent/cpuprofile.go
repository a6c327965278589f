package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"time"
)

// cpuProfileEnv is a debugging aid, off unless set: EDGEPLANE_CPU_PROFILE=<path> makes the agent
// profile its CPU from its start in consecutive windows of EDGEPLANE_CPU_PROFILE_SECONDS (10 by
// default) and write window n to <path>.<pid>.<n> (n from 0: window 0 is the cold start), for
// `go tool pprof` (several windows merge: `go tool pprof -top <path>.<pid>.{6..11}` is a minute).
// It is how docs/benchmarks.md's idle and start-up profiles were taken (BenchmarkScale passes
// its environment to the agents it starts).
const (
	cpuProfileEnv        = "EDGEPLANE_CPU_PROFILE"
	cpuProfileSecondsEnv = "EDGEPLANE_CPU_PROFILE_SECONDS"
)

const cpuProfileWindow = 10 * time.Second

func init() {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return
	}
	window := cpuProfileWindow
	if s, err := strconv.Atoi(os.Getenv(cpuProfileSecondsEnv)); err == nil && s > 0 {
		window = time.Duration(s) * time.Second
	}
	path = fmt.Sprintf("%s.%d", path, os.Getpid())
	// Started here rather than in a goroutine, so that window 0 holds the whole start.
	f, err := startCPUProfile(path, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cpuProfileEnv, err)
		return
	}
	go func() {
		for n := 1; ; n++ {
			time.Sleep(window)
			pprof.StopCPUProfile()
			if err := finishCPUProfile(f, path, n-1); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", cpuProfileEnv, err)
			}
			if f, err = startCPUProfile(path, n); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", cpuProfileEnv, err)
				return
			}
		}
	}()
}

// startCPUProfile starts profiling into a temporary file beside window n's, which
// finishCPUProfile renames once the window is over, so that a reader never sees half a profile.
func startCPUProfile(path string, n int) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), fmt.Sprintf(".cpu-%d-*", n))
	if err != nil {
		return nil, fmt.Errorf("starting the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("starting the CPU profile: %w", err)
	}
	return f, nil
}

func finishCPUProfile(f *os.File, path string, n int) error {
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing the CPU profile: %w", err)
	}
	if err := os.Rename(f.Name(), fmt.Sprintf("%s.%d", path, n)); err != nil {
		return fmt.Errorf("writing the CPU profile: %w", err)
	}
	return nil
}
