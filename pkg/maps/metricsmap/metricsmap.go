// Package metricsmap reads metrics_map (bpf/lib/metrics.h): per-CPU packet and byte counters indexed
// by direction * Reasons + reason, where reason 0 counts forwarded packets and the others are drop
// reasons (bpf/lib/drop_reasons.h). The programs only ever increment their own CPU's slot, so
// readers sum the slots; nothing here writes.
package metricsmap

import (
	"fmt"

	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
)

// MapName is the map's name in the objects and under <root>/maps.
const MapName = "metrics_map"

// Reasons is the number of reason slots per direction (METRICS_REASONS).
const Reasons = 64

// Dir is a traffic direction (enum metric_dir).
type Dir uint32

const (
	DirPodEgress  Dir = 0 // pod.c: packets leaving pods
	DirOverlayIn  Dir = 1 // VXLAN received
	DirOverlayOut Dir = 2 // host traffic into the overlay
	DirNodeIn     Dir = 3 // other traffic arriving on the underlay NIC
	DirNodeOut    Dir = 4 // traffic leaving the underlay NIC
	DirNodeXDP    Dir = 5 // the underlay NIC's XDP program: its drops only
	DirPodIngress Dir = 6 // pod.c: what the host stack sends into pods
	dirMax        Dir = 7
)

var dirNames = [...]string{"pod-egress", "overlay-in", "overlay-out", "node-in", "node-out", "node-xdp", "pod-ingress"}

func (d Dir) String() string {
	if d < dirMax {
		return dirNames[d]
	}
	return fmt.Sprintf("dir(%d)", uint32(d))
}

// Metric mirrors struct metric (one CPU's slot, or a sum of them).
type Metric struct {
	Packets uint64
	Bytes   uint64
}

func (m Metric) String() string { return fmt.Sprintf("packets=%d bytes=%d", m.Packets, m.Bytes) }

// Key names one counter.
type Key struct {
	Dir    Dir
	Reason uint32 // 0: forwarded; otherwise a drop reason
}

func (k Key) index() uint32 { return uint32(k.Dir)*Reasons + k.Reason%Reasons }

// Map is an open metrics_map; its owner closes it.
type Map struct {
	m *typed.Map[uint32, []Metric] // index -> one slot per possible CPU
}

// Open opens the map pinned under root.
func Open(root string) (*Map, error) {
	m, err := typed.Open[uint32, []Metric](root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map) Close() error { return m.m.Close() }

// Lookup returns one counter summed over CPUs.
func (m *Map) Lookup(k Key) (Metric, error) {
	perCPU, err := m.m.Get(k.index())
	if err != nil {
		return Metric{}, fmt.Errorf("reading counter %s/%d: %w", k.Dir, k.Reason, err)
	}
	return sum(perCPU), nil
}

// Totals returns every non-zero counter summed over CPUs.
func (m *Map) Totals() (map[Key]Metric, error) {
	out := make(map[Key]Metric)
	err := m.m.Iterate(func(idx uint32, perCPU []Metric) bool {
		if total := sum(perCPU); total != (Metric{}) {
			out[Key{Dir: Dir(idx / Reasons), Reason: idx % Reasons}] = total
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func sum(perCPU []Metric) Metric {
	var total Metric
	for _, c := range perCPU {
		total.Packets += c.Packets
		total.Bytes += c.Bytes
	}
	return total
}
