package results

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A run replaces its own groups on its own machine and keeps the others, dated; results from
// before machines were recorded keep their (empty or hand-set) machine.
func TestMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	old := `{"date": "2026-11-23T00:54:05Z",
		"machines": [{"id": "old-vm", "note": "recorded by hand"}],
		"results": [
		{"group": "cross-node", "metric": "udp_rr", "path": "edgeplane", "median": 2, "machine": "old-vm"},
		{"group": "event-stream", "metric": "tcp_rr", "path": "no-listener", "median": 1, "machine": "new-vm"},
		{"group": "same-node", "metric": "tcp_rr", "path": "edgeplane", "median": 5, "machine": "new-vm"}]}`
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	f := Read(path)
	if len(f.Results) != 3 || f.Results[0].Date != "2026-11-23T00:54:05Z" {
		t.Fatalf("read %+v", f)
	}
	m := Machine{ID: "new-vm", CPU: "AMD EPYC", Cores: 2, Kernel: "6.18"}
	f.Merge(m, []Result{
		{Group: "event-stream", Metric: "tcp_rr", Path: "no-listener", Median: 3, Machine: "new-vm"},
		{Group: "cross-node", Metric: "udp_rr", Path: "edgeplane", Median: 4, Machine: "new-vm"},
	})
	var got []string
	for _, r := range f.Results {
		got = append(got, r.Machine+"/"+r.Group+"="+strconv.FormatFloat(r.Median, 'g', -1, 64))
	}
	want := "old-vm/cross-node=2 new-vm/same-node=5 new-vm/event-stream=3 new-vm/cross-node=4"
	if strings.Join(got, " ") != want {
		t.Errorf("merged %v, want %s", got, want)
	}
	if len(f.Machines) != 2 || f.Machine("new-vm").CPU != "AMD EPYC" || f.Machine("old-vm").Note != "recorded by hand" {
		t.Errorf("machines %+v", f.Machines)
	}
	if err := Write(path, f); err != nil {
		t.Fatal(err)
	}
	if again := Read(path); len(again.Results) != 4 || len(again.Machines) != 2 {
		t.Errorf("written and read back: %+v", again)
	}
	if f := Read(filepath.Join(t.TempDir(), "none.json")); len(f.Results) != 0 {
		t.Errorf("without a file: %+v", f)
	}
}

// This machine is described from /proc and its ID is a file-name slug of that description, unless
// one is given.
func TestThisMachine(t *testing.T) {
	m := ThisMachine("")
	if m.Cores < 1 || m.Kernel == "" || m.CPU == "" {
		t.Errorf("machine %+v", m)
	}
	if m.ID != Slug(m.ID) || !strings.Contains(m.ID, Slug(m.Kernel)) {
		t.Errorf("ID %q is not a slug of the description %+v", m.ID, m)
	}
	if got := ThisMachine("lab-vm-1").ID; got != "lab-vm-1" {
		t.Errorf("given ID: %q", got)
	}
	if got := Slug("Intel Xeon Processor (Icelake) 2cpu 6.18.44-fc"); got != "intel-xeon-processor-icelake-2cpu-6.18.44-fc" {
		t.Errorf("slug %q", got)
	}
}
