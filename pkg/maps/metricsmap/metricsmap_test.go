package metricsmap

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, MapName, uint32(0), Metric{})
	specs, err := datapath.MapSpecs()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := specs[MapName].MaxEntries, uint32(dirMax)*Reasons; got != want {
		t.Fatalf("metrics_map has %d entries, Go expects %d directions x %d reasons", got, dirMax, Reasons)
	}
}

func TestTotals(t *testing.T) {
	m, d := maptest.Open(t, datapath.Load, Open)

	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	slots := make([]Metric, cpus)
	for i := range slots {
		slots[i] = Metric{Packets: 1, Bytes: 100}
	}
	k := Key{Dir: DirOverlayIn, Reason: 6}
	if err := d.Map(MapName).Update(k.index(), slots, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	want := Metric{Packets: uint64(cpus), Bytes: 100 * uint64(cpus)}
	if got, err := m.Lookup(k); err != nil || got != want {
		t.Fatalf("Lookup = %v %v, want %v", got, err, want)
	}
	totals, err := m.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if len(totals) != 1 || totals[k] != want {
		t.Fatalf("Totals = %v", totals)
	}
}
