// Package results is the format of bench/results.json, shared by the benchmarks of tests/bench
// (which write it) and the report generator tests/bench/benchdoc (which renders it into
// docs/benchmarks.md's tables and docs/bench/*.svg). Every result names the machine it was
// measured on; the file keeps what is known of each machine, and a run replaces only its own
// groups on its own machine, so the results of several machines live side by side.
package results

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
)

// Result is one (machine, group, metric, path): its samples (one per round), their median and the
// paired ratios against the group's baseline (and the underlay, where the group has one).
type Result struct {
	Group    string    `json:"group"`
	Metric   string    `json:"metric"`
	Unit     string    `json:"unit"`
	Better   string    `json:"better,omitempty"` // "higher" or "lower"; empty means higher
	Path     string    `json:"path"`
	Baseline string    `json:"baseline"`
	Samples  []float64 `json:"samples"`
	Median   float64   `json:"median"`
	Ratio    float64   `json:"ratio_median"` // median of per-round ratios path/baseline
	RatioMin float64   `json:"ratio_min"`
	RatioMax float64   `json:"ratio_max"`
	// Against the raw underlay (the physical limit), where the group has it.
	UnderlayRatio    float64 `json:"underlay_ratio_median,omitempty"`
	UnderlayRatioMin float64 `json:"underlay_ratio_min,omitempty"`
	UnderlayRatioMax float64 `json:"underlay_ratio_max,omitempty"`
	// Against the veth floor (pods on plain veth pairs, kernel routing only: the cheapest
	// veth-based pod path), where the group has it; not for the floor itself or the underlay.
	VethFloorRatio    float64   `json:"veth_floor_ratio_median,omitempty"`
	VethFloorRatioMin float64   `json:"veth_floor_ratio_min,omitempty"`
	VethFloorRatioMax float64   `json:"veth_floor_ratio_max,omitempty"`
	P50us             []float64 `json:"p50_us,omitempty"`
	P99us             []float64 `json:"p99_us,omitempty"`
	// Per round, what the event listeners received and what the ring buffer dropped (both nodes).
	Events     []uint64 `json:"events,omitempty"`
	EventsLost []uint64 `json:"events_lost,omitempty"`
	// The TCP congestion control of the senders (bulk streams: BENCH_TCP_CC, iperf3 -C).
	TCPCongestion string `json:"tcp_congestion,omitempty"`
	// The run: when this group was measured, on which machine (Machine.ID), at which commit.
	Date        string `json:"date,omitempty"`
	Machine     string `json:"machine,omitempty"`
	GitRevision string `json:"git_revision,omitempty"`
}

// Machine is what is known of a machine results were measured on.
type Machine struct {
	ID     string `json:"id"`
	CPU    string `json:"cpu,omitempty"` // model name from /proc/cpuinfo
	Cores  int    `json:"cores,omitempty"`
	Kernel string `json:"kernel,omitempty"`
	// The machine's default TCP congestion control (net.ipv4.tcp_congestion_control); the bulk
	// streams set their own (Result.TCPCongestion).
	DefaultTCPCongestion string `json:"default_tcp_congestion,omitempty"`
	Note                 string `json:"note,omitempty"` // provenance, for machines recorded by hand
}

// File is bench/results.json.
type File struct {
	Date     string    `json:"date,omitempty"` // of the last write
	Machines []Machine `json:"machines,omitempty"`
	Results  []Result  `json:"results"`
}

// Read returns the file at path; a missing or unreadable file is an empty one. Results written
// before results were dated carry the file's date.
func Read(path string) File {
	var f File
	buf, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(buf, &f) != nil {
		return File{}
	}
	for i := range f.Results {
		if f.Results[i].Date == "" {
			f.Results[i].Date = f.Date
		}
	}
	return f
}

// Write writes f to path, indented, creating its directory.
func Write(path string, f File) error {
	buf, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating the results directory: %w", err)
	}
	if err := os.WriteFile(path, append(buf, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	return nil
}

// Merge adds fresh results, measured on machine m, to f: they replace the results of the same
// groups on the same machine and leave every other group and machine alone, so that benchmarks
// run alone (-bench BenchmarkEventStream) and runs on other machines do not erase each other.
func (f *File) Merge(m Machine, fresh []Result) {
	measured := map[string]bool{}
	for _, r := range fresh {
		measured[r.Group] = true
	}
	var out []Result
	for _, r := range f.Results {
		if r.Machine != m.ID || !measured[r.Group] {
			out = append(out, r)
		}
	}
	f.Results = append(out, fresh...)
	for i, old := range f.Machines {
		if old.ID == m.ID {
			f.Machines[i] = m
			return
		}
	}
	f.Machines = append(f.Machines, m)
}

// Machine returns what f knows of the machine id (only the ID if nothing).
func (f File) Machine(id string) Machine {
	for _, m := range f.Machines {
		if m.ID == id {
			return m
		}
	}
	return Machine{ID: id}
}

var notSlug = regexp.MustCompile(`[^a-z0-9.]+`)

// Slug turns s into a lower-case name fit for a file: letters, digits, dots and dashes.
func Slug(s string) string {
	return strings.Trim(notSlug.ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// ThisMachine describes the machine the benchmark runs on: the first CPU's model name, the
// number of CPUs and the kernel release. Its ID is id when given (BENCH_MACHINE: two machines
// with the same CPU model name, core count and kernel are only told apart that way), else a slug
// of those three.
func ThisMachine(id string) Machine {
	m := Machine{CPU: "unknown CPU", Cores: runtime.NumCPU()}
	if buf, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(buf), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if buf, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(buf))
	}
	if buf, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control"); err == nil {
		m.DefaultTCPCongestion = strings.TrimSpace(string(buf))
	}
	m.ID = id
	if m.ID == "" {
		m.ID = Slug(fmt.Sprintf("%s %dcpu %s", m.CPU, m.Cores, m.Kernel))
	}
	return m
}

// GitRevision is the commit of the working tree in dir (git describe --always --dirty), or ""
// outside a git checkout.
func GitRevision(dir string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
