package bench

import (
	"math"
	"testing"
)

func TestParseProcessCPU(t *testing.T) {
	// A command name with a space and a parenthesis, then fields 3.. of /proc/<pid>/stat.
	stat := "4242 (edgeplane (x) a) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 0 0\n"
	got, err := parseProcessCPU(stat)
	if err != nil || got != 3.25 {
		t.Errorf("got %v, %v; want 3.25 s (250 + 75 ticks)", got, err)
	}
	if _, err := parseProcessCPU("4242 (x) S 1"); err == nil {
		t.Error("a short line parsed")
	}
}

// Watch event bytes per second and per open watch of the kind's resource, whichever label names
// the kind.
func TestWatchBytesPerWatch(t *testing.T) {
	m0 := map[string]float64{
		`apiserver_watch_events_sizes_sum{group="",kind="Node",version="v1"}`: 1000,
	}
	m1 := map[string]float64{
		`apiserver_watch_events_sizes_sum{group="",kind="Node",version="v1"}`:                                                                                  7000,
		`apiserver_watch_events_sizes_sum{group="discovery.k8s.io",resource="endpointslices",version="v1"}`:                                                    600,
		`apiserver_longrunning_requests{component="apiserver",group="",resource="nodes",scope="cluster",subresource="",verb="WATCH"}`:                          3,
		`apiserver_longrunning_requests{component="apiserver",group="discovery.k8s.io",resource="endpointslices",scope="cluster",subresource="",verb="WATCH"}`: 3,
		`apiserver_longrunning_requests{component="apiserver",group="",resource="nodes",scope="cluster",subresource="proxy",verb="CONNECT"}`:                   5,
	}
	got := watchBytesPerWatch(m0, m1, 10)
	want := map[string]float64{"Node": 200, "endpointslices": 20}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-9 {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
	if l := label(`m{subverb="x",verb="WATCH"}`, "verb"); l != "WATCH" {
		t.Errorf("label verb: %q", l)
	}
}
