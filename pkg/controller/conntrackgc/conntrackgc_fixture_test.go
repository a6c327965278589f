// The conntrack collector's test fixture: fake maps walked in a fixed key order as the kernel
// walks them, a fake Services view and metrics, and a collector on a clock the test moves.

package conntrackgc

import (
	"fmt"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

// fakeWalker is a map in a fixed key order with the kernel's NextKey rule: a key that is gone
// restarts the walk from the first.
type fakeWalker[K comparable, V any] struct {
	keys    []K
	values  map[K]V
	visited int // entries visited by the last Walk
	walks   int // Walk calls
	// walked, when set, runs as Walk returns: it plays the datapath writing while the collector
	// judges what it read.
	walked func()
}

func newFakeWalker[K comparable, V any]() *fakeWalker[K, V] {
	return &fakeWalker[K, V]{values: map[K]V{}}
}

func (w *fakeWalker[K, V]) put(k K, v V) {
	if _, ok := w.values[k]; !ok {
		w.keys = append(w.keys, k)
	}
	w.values[k] = v
}

func (w *fakeWalker[K, V]) Walk(after *K, max int, fn func(K, V)) (last K, done bool, err error) {
	i := 0
	if after != nil {
		if j := slices.Index(w.keys, *after); j >= 0 {
			i = j + 1
		}
	}
	w.visited = 0
	w.walks++
	for ; w.visited < max; i++ {
		if i >= len(w.keys) {
			w.done()
			return last, true, nil
		}
		last = w.keys[i]
		fn(last, w.values[last])
		w.visited++
	}
	w.done()
	return last, false, nil
}

func (w *fakeWalker[K, V]) done() {
	if w.walked != nil {
		w.walked()
	}
}

func (w *fakeWalker[K, V]) Lookup(k K) (V, error) {
	v, ok := w.values[k]
	if !ok {
		return v, fmt.Errorf("looking up %v: %w", k, ebpf.ErrKeyNotExist)
	}
	return v, nil
}

func (w *fakeWalker[K, V]) Delete(k K) error {
	if i := slices.Index(w.keys, k); i >= 0 {
		w.keys = slices.Delete(w.keys, i, i+1)
	}
	delete(w.values, k)
	return nil
}

type fakeServices struct {
	live         map[controller.BackendKey]bool
	ready        bool
	timeouts     map[uint32]time.Duration
	asked        []controller.BackendKey // every candidate of every UnusedBackends call
	calls        int                     // UnusedBackends calls
	timeoutCalls int                     // AffinityTimeouts calls
}

func (f *fakeServices) UnusedBackends(candidates map[controller.BackendKey]bool) (map[controller.BackendKey]bool, bool) {
	f.calls++
	for k := range candidates {
		f.asked = append(f.asked, k)
	}
	if !f.ready {
		return nil, false
	}
	unused := map[controller.BackendKey]bool{}
	for k := range candidates {
		if !f.live[k] {
			unused[k] = true
		}
	}
	return unused, true
}

func (f *fakeServices) AffinityTimeouts() map[uint32]time.Duration {
	f.timeoutCalls++
	return f.timeouts
}

type fakeGCMetrics map[[2]string]int

func (m fakeGCMetrics) ConntrackDeleted(mapName, reason string, n int) {
	m[[2]string{mapName, reason}] += n
}

const sec = uint64(time.Second)

type gcFixture struct {
	gc       *Collector
	ct       *fakeWalker[lb.CTKey, lb.CT]
	affinity *fakeWalker[lb.AffinityKey, lb.Affinity]
	services *fakeServices
	metrics  fakeGCMetrics
	clock    uint64
}

func newGCFixture(batch int) *gcFixture {
	f := &gcFixture{
		ct:       newFakeWalker[lb.CTKey, lb.CT](),
		affinity: newFakeWalker[lb.AffinityKey, lb.Affinity](),
		services: &fakeServices{},
		metrics:  fakeGCMetrics{},
		clock:    100000 * sec, // more than any timeout, so that now - age does not wrap
	}
	f.gc = &Collector{ct: f.ct, affinity: f.affinity, services: f.services, batch: batch, metrics: f.metrics,
		now: func() (uint64, error) { return f.clock, nil }}
	return f
}

func ctKey(client byte, proto lb.Proto, dir lb.Dir) lb.CTKey {
	return lb.CTKey{Saddr: maps.IPv4{10, 244, 0, client}, Daddr: maps.IPv4{10, 96, 0, 10}, Sport: lb.PortFrom(40000), Dport: lb.PortFrom(53), Proto: proto, Dir: dir}
}

func backendAt(last byte) (maps.IPv4, lb.Port) { return maps.IPv4{10, 244, 1, last}, lb.PortFrom(5353) }

func ct(backend byte, flags uint16, lastSeen uint64) lb.CT {
	ip, port := backendAt(backend)
	return lb.CT{Addr: ip, Port: port, Flags: flags, LastSeen: lastSeen}
}

func (f *gcFixture) left() []byte {
	var out []byte
	for _, k := range f.ct.keys {
		out = append(out, k.Saddr[3])
	}
	return out
}
