package main

import (
	"testing"

	"github.com/edgeplane/edgeplane/tests/bench/results"
)

func TestScaleTable(t *testing.T) {
	f := results.File{Results: []results.Result{
		{Group: "cross-node", Metric: "tcp_rr", Path: "flannel", Machine: "m", Median: 1},
		{Group: "scale-5000n-10000s-150000e", Metric: "peak_rss", Unit: "MiB", Path: "edgeplane", Machine: "m",
			Samples: []float64{40, 42.5, 41}, Median: 41, Ratio: 0.531, Baseline: "target"},
		{Group: "scale-5000n-10000s-150000e", Metric: "idle_apiserver_rx", Unit: "bytes/s per agent", Path: "edgeplane", Machine: "m",
			Samples: []float64{120, 130, 125}, Median: 125},
	}}
	got := scaleTable(byMachine(f)[0])
	want := "Scale (`scale-5000n-10000s-150000e`), one sample per agent (new node: per round):\n\n" +
		"| metric | unit | median | samples | worst vs target |\n|---|---|---|---|---|\n" +
		"| peak_rss | MiB | 41 | 40, 42.5, 41 | 0.53x |\n" +
		"| idle_apiserver_rx | bytes/s per agent | 125 | 120, 130, 125 | - |\n\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
