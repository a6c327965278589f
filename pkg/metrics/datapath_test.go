package metrics

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/nonmasq"
)

// TestDatapathCollector reads a real metrics_map and the other maps, pinned in a private bpffs.
func TestDatapathCollector(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	reg := gatherer(registryOf(NewDatapathCollector(root)))
	for _, d := range NewDatapathCollector(root).Descs() {
		if n := count(t, registryOf(NewDatapathCollector(root)), d.Name); n != 0 {
			t.Fatalf("before the datapath is loaded: %d %s series, want none", n, d.Name)
		}
	}

	d, err := datapath.Load(root)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer d.Close()
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	put := func(dir metricsmap.Dir, reason dropreason.Reason, packets, bytes uint64) {
		slots := make([]metricsmap.Metric, cpus)
		slots[0] = metricsmap.Metric{Packets: packets, Bytes: bytes}
		slots[cpus-1].Packets += packets // per-CPU slots are summed
		slots[cpus-1].Bytes += bytes
		if err := d.Map(metricsmap.MapName).Update(uint32(dir)*metricsmap.Reasons+uint32(reason), slots, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	put(metricsmap.DirOverlayIn, dropreason.VNIMismatch, 3, 300)
	put(metricsmap.DirPodEgress, dropreason.Forwarded, 10, 1000)
	put(metricsmap.DirPodEgress, dropreason.ICMPSent, 1, 576)
	put(metricsmap.DirNodeOut, 40, 1, 60) // a reason newer than this binary
	nm, err := nonmasq.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer nm.Close()
	if err := nm.Sync([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}); err != nil {
		t.Fatal(err)
	}

	svcs, err := lb.OpenSvc(root)
	if err != nil {
		t.Fatal(err)
	}
	defer svcs.Close()
	for i, v := range []lb.Svc{{ID: 1, Count: 2, Unreachable: 2}, {ID: 2, Unreachable: 1}, {ID: 3, Count: 1}, {Flags: lb.FlagClosed | lb.FlagNodePort}} {
		k := lb.SvcKey{VIP: maps.IPv4{10, 96, 0, byte(i)}, Port: lb.PortFrom(80), Proto: lb.ProtoTCP}
		if err := svcs.Upsert(k, v); err != nil {
			t.Fatal(err)
		}
	}

	twice := func(n uint64) float64 { return float64(2 * n) } // in slot 0 and slot cpus-1 (the same slot on one CPU)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{DatapathPackets, map[string]string{"direction": "overlay_in", "reason": "VNI_MISMATCH"}, twice(3)},
		{DatapathBytes, map[string]string{"direction": "overlay_in", "reason": "VNI_MISMATCH"}, twice(300)},
		{DatapathDrops, map[string]string{"direction": "overlay_in", "reason": "VNI_MISMATCH"}, twice(3)},
		{DatapathPackets, map[string]string{"direction": "pod_egress", "reason": "FORWARDED"}, twice(10)},
		{DatapathPackets, map[string]string{"direction": "pod_egress", "reason": "ICMP_SENT"}, twice(1)},
		{DatapathPackets, map[string]string{"direction": "node_out", "reason": "UNKNOWN_40"}, twice(1)},
		{DatapathDrops, map[string]string{"direction": "node_out", "reason": "UNKNOWN_40"}, twice(1)},
		{DatapathDrops, map[string]string{"direction": "node_in", "reason": "NO_ROUTE"}, 0},
		{MapEntries, map[string]string{"map": nonmasq.MapName}, 1},
		{MapEntries, map[string]string{"map": "routes_map"}, 0},
		{MapCapacity, map[string]string{"map": metricsmap.MapName}, float64(len(directions) * metricsmap.Reasons)},
		{ProgramsAttached, map[string]string{"attach_point": "underlay_ingress"}, 0},
		{ProgramsAttached, map[string]string{"attach_point": "underlay_xdp"}, 0}, // optional, still reported
		{ProgramsAttached, map[string]string{"attach_point": AttachPod}, 0},
		{ServiceUnreachable, nil, 3},
		{ServiceNoneReachable, nil, 1},
	} {
		if got, ok := value(t, reg, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := value(t, reg, MapEntries, map[string]string{"map": metricsmap.MapName}); ok {
		t.Errorf("%s reported for an array", MapEntries)
	}
	if _, ok := value(t, reg, DatapathDrops, map[string]string{"reason": "FORWARDED"}); ok {
		t.Errorf("%s counts forwarded packets", DatapathDrops)
	}
	// Every known reason in every direction, zero or not, plus the unknown one.
	known := len(directions) * int(dropreason.Max)
	if got := count(t, registryOf(NewDatapathCollector(root)), DatapathPackets); got != known+1 {
		t.Errorf("%d %s series, want %d", got, DatapathPackets, known+1)
	}
	if got := count(t, registryOf(NewDatapathCollector(root)), DatapathDrops); got != known-2*len(directions)+1 {
		t.Errorf("%d %s series, want %d", got, DatapathDrops, known-2*len(directions)+1)
	}

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// The labels Families documents are the ones collected.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, f := range Families() {
			if f.Name != mf.GetName() {
				continue
			}
			for _, l := range mf.GetMetric()[0].GetLabel() {
				if !slices.Contains(f.Labels, l.GetName()) {
					t.Errorf("%s has label %s; Families says %v", f.Name, l.GetName(), f.Labels)
				}
			}
		}
	}
}
