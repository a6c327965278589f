package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// A benchmark run alone replaces its own groups in results.json and keeps the others, dated.
func TestMergeResults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	old := `{"date": "2026-11-23T00:54:05Z", "results": [
		{"group": "cross-node", "metric": "udp_rr", "path": "edgeplane", "median": 2},
		{"group": "event-stream", "metric": "tcp_rr", "path": "no-listener", "median": 1}]}`
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := []Result{{Group: "event-stream", Metric: "tcp_rr", Path: "no-listener", Median: 3, Date: "2026-11-24T00:00:00Z"}}
	got := mergeResults(readResults(path), fresh)
	if len(got) != 2 || got[0].Group != "cross-node" || got[0].Date != "2026-11-23T00:54:05Z" ||
		got[1].Group != "event-stream" || got[1].Median != 3 {
		t.Errorf("merged %+v", got)
	}
	if got := mergeResults(readResults(filepath.Join(t.TempDir(), "none.json")), fresh); len(got) != 1 {
		t.Errorf("without a previous file: %+v", got)
	}
}
