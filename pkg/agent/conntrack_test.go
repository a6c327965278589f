package agent

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// fakeWalker is a map in a fixed key order with the kernel's NextKey rule: a key that is gone
// restarts the walk from the first.
type fakeWalker[K comparable, V any] struct {
	keys    []K
	values  map[K]V
	visited int // entries visited by the last Walk
	walks   int // Walk calls
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
			return last, true, nil
		}
		last = w.keys[i]
		fn(last, w.values[last])
		w.visited++
	}
	return last, false, nil
}

func (w *fakeWalker[K, V]) Delete(k K) error {
	if i := slices.Index(w.keys, k); i >= 0 {
		w.keys = slices.Delete(w.keys, i, i+1)
	}
	delete(w.values, k)
	return nil
}

type fakeServices struct {
	live     map[controller.BackendKey]bool
	ready    bool
	timeouts map[uint32]time.Duration
}

func (f *fakeServices) LiveBackends() (map[controller.BackendKey]bool, bool) { return f.live, f.ready }
func (f *fakeServices) AffinityTimeouts() map[uint32]time.Duration           { return f.timeouts }

type fakeGCMetrics map[[2]string]int

func (m fakeGCMetrics) ConntrackDeleted(mapName, reason string, n int) {
	m[[2]string{mapName, reason}] += n
}

const sec = uint64(time.Second)

type gcFixture struct {
	gc       *conntrackGC
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
	f.gc = &conntrackGC{ct: f.ct, affinity: f.affinity, services: f.services, batch: batch, metrics: f.metrics,
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

// TestConntrackGCTimeouts: each entry's timeout follows its protocol and state, as lb.h says.
func TestConntrackGCTimeouts(t *testing.T) {
	f := newGCFixture(100)
	now := f.clock
	f.ct.put(ctKey(1, lb.ProtoTCP, lb.DirFwd), ct(1, 0, now-61*sec))                                   // SYN sent, 61 s ago: dead
	f.ct.put(ctKey(2, lb.ProtoTCP, lb.DirFwd), ct(1, 0, now-59*sec))                                   // SYN sent, 59 s ago
	f.ct.put(ctKey(3, lb.ProtoTCP, lb.DirFwd), ct(1, lb.CTFlagSeenReply, now-5*3600*sec))              // established, idle 5 h
	f.ct.put(ctKey(4, lb.ProtoTCP, lb.DirRev), ct(1, lb.CTFlagSeenReply, now-7*3600*sec))              // established, idle 7 h: dead
	f.ct.put(ctKey(5, lb.ProtoTCP, lb.DirFwd), ct(1, lb.CTFlagSeenReply|lb.CTFlagClosing, now-11*sec)) // closed 11 s ago: dead
	f.ct.put(ctKey(6, lb.ProtoTCP, lb.DirFwd), ct(1, lb.CTFlagClosing, now-9*sec))
	f.ct.put(ctKey(7, lb.ProtoUDP, lb.DirFwd), ct(1, lb.CTFlagSeenReply, now-61*sec)) // dead
	f.ct.put(ctKey(8, lb.ProtoSCTP, lb.DirFwd), ct(1, 0, now-30*sec))
	f.ct.put(ctKey(9, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now+sec)) // seen after the clock was read
	if err := f.gc.pass(); err != nil {
		t.Fatal(err)
	}
	if got := f.left(); !slices.Equal(got, []byte{2, 3, 6, 8, 9}) {
		t.Errorf("left %v", got)
	}
	if f.metrics[[2]string{lb.CTMapName, gcExpired}] != 4 {
		t.Errorf("metrics %v", f.metrics)
	}
	// Time passes: the rest expires.
	f.clock += 7 * 3600 * sec
	f.gc.pass()
	if got := f.left(); len(got) != 0 {
		t.Errorf("left %v", got)
	}
}

// TestConntrackGCStaleBackends: UDP and SCTP flows to a backend no frontend uses go (once the
// reconciler knows the backends); TCP flows and reverse entries stay until they expire.
func TestConntrackGCStaleBackends(t *testing.T) {
	f := newGCFixture(100)
	now := f.clock
	f.ct.put(ctKey(1, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now))  // backend .1 live
	f.ct.put(ctKey(2, lb.ProtoUDP, lb.DirFwd), ct(2, 0, now))  // backend .2 gone
	f.ct.put(ctKey(3, lb.ProtoSCTP, lb.DirFwd), ct(2, 0, now)) // gone
	f.ct.put(ctKey(4, lb.ProtoTCP, lb.DirFwd), ct(2, lb.CTFlagSeenReply, now))
	f.ct.put(ctKey(5, lb.ProtoUDP, lb.DirRev), ct(2, 0, now))
	f.ct.put(ctKey(6, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now))
	ip, port := backendAt(1)
	live := service.Backend{IP: ip.Addr(), Port: port.Uint16()}
	f.services.live = map[controller.BackendKey]bool{{Backend: live, Proto: lb.ProtoUDP}: true, {Backend: live, Proto: lb.ProtoSCTP}: true}

	f.gc.pass() // the reconciler has not synced: nothing is judged by its backends
	if got := f.left(); len(got) != 6 {
		t.Fatalf("left %v before the reconciler synced", got)
	}
	f.services.ready = true
	f.gc.pass()
	if got := f.left(); !slices.Equal(got, []byte{1, 4, 5, 6}) {
		t.Errorf("left %v", got)
	}
	if f.metrics[[2]string{lb.CTMapName, gcStaleBackend}] != 2 {
		t.Errorf("metrics %v", f.metrics)
	}
}

// TestConntrackGCBounded: a pass visits at most a batch; sweeps resume where they stopped, also
// when the last entries of a pass were deleted, and every entry is judged.
func TestConntrackGCBounded(t *testing.T) {
	f := newGCFixture(4)
	now := f.clock
	for i := range byte(22) {
		lastSeen := now
		if i%3 != 0 {
			lastSeen = now - 100*sec // UDP: dead
		}
		f.ct.put(ctKey(i, lb.ProtoUDP, lb.DirFwd), ct(1, 0, lastSeen))
	}
	for pass := 0; len(f.left()) > 8; pass++ {
		if pass > 10 {
			t.Fatalf("not swept after %d passes: %v", pass, f.left())
		}
		f.gc.pass()
		if f.ct.visited > 4 {
			t.Fatalf("a pass visited %d entries", f.ct.visited)
		}
	}
	if got := f.left(); !slices.Equal(got, []byte{0, 3, 6, 9, 12, 15, 18, 21}) {
		t.Errorf("left %v", got)
	}
}

// TestConntrackGCCatchesUp: under connection churn one interval keeps sweeping while its batches
// are mostly dead, and stops at a batch of live entries.
func TestConntrackGCCatchesUp(t *testing.T) {
	f := newGCFixture(4)
	now := f.clock
	for i := range byte(40) {
		lastSeen := now - 100*sec // UDP: dead
		if i >= 30 {
			lastSeen = now
		}
		f.ct.put(ctKey(i, lb.ProtoUDP, lb.DirFwd), ct(1, 0, lastSeen))
	}
	if err := f.gc.sweep(t.Context(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := f.left(); len(got) != 10 || got[0] != 30 {
		t.Errorf("left after one sweep %v, want the 10 live entries", got)
	}
	// Live entries only: one pass each, no more.
	for range 3 {
		before := f.ct.walks
		if err := f.gc.sweep(t.Context(), time.Minute); err != nil {
			t.Fatal(err)
		}
		if n := f.ct.walks - before; n != 1 {
			t.Errorf("a sweep of live entries made %d passes", n)
		}
	}
	// A zero budget still runs one pass.
	f.ct.put(ctKey(50, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now-100*sec))
	for range 4 {
		_ = f.gc.sweep(t.Context(), 0)
	}
	if slices.Contains(f.left(), 50) {
		t.Errorf("dead entry left after %d zero-budget sweeps: %v", 4, f.left())
	}
}

// TestConntrackGCAffinity: affinity entries expire after their Service's timeout; those of a set
// the reconciler does not know after the longest timeout Kubernetes allows.
func TestConntrackGCAffinity(t *testing.T) {
	f := newGCFixture(100)
	now := f.clock
	f.clock = now + 86400*sec
	now = f.clock
	f.services.timeouts = map[uint32]time.Duration{1: 10 * time.Second, 2: time.Hour}
	put := func(id uint32, client byte, age uint64) {
		f.affinity.put(lb.AffinityKey{SvcID: id, Client: maps.IPv4{10, 244, 0, client}}, lb.Affinity{LastSeen: now - age})
	}
	put(1, 1, 11*sec) // dead
	put(1, 2, 9*sec)
	put(2, 3, 3599*sec)
	put(2, 4, 3601*sec)  // dead
	put(9, 5, 86399*sec) // unknown set
	put(9, 6, 86401*sec) // dead
	if err := f.gc.pass(); err != nil {
		t.Fatal(err)
	}
	var left []byte
	for _, k := range f.affinity.keys {
		left = append(left, k.Client[3])
	}
	if !slices.Equal(left, []byte{2, 3, 5}) {
		t.Errorf("left %v", left)
	}
	if f.metrics[[2]string{lb.AffinityMapName, gcExpired}] != 3 {
		t.Errorf("metrics %v", f.metrics)
	}
}

func TestConntrackGCClockError(t *testing.T) {
	f := newGCFixture(100)
	f.gc.now = func() (uint64, error) { return 0, errors.New("no clock") }
	f.ct.put(ctKey(1, lb.ProtoUDP, lb.DirFwd), ct(1, 0, 0))
	if err := f.gc.pass(); err == nil || len(f.left()) != 1 {
		t.Errorf("pass without a clock: %v, left %v", err, f.left())
	}
}

func TestBootTime(t *testing.T) {
	a, err := bootTime()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	b, _ := bootTime()
	if a == 0 || b <= a {
		t.Errorf("CLOCK_BOOTTIME %d then %d", a, b)
	}
}

func TestLBAdapters(t *testing.T) {
	k := service.FrontendKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: lb.ProtoUDP, Scope: lb.ScopeExternal}
	key, err := svcKey(k)
	if err != nil || frontendKey(key) != k || key.Port != (lb.Port{0, 53}) {
		t.Errorf("svcKey %v %v", key, err)
	}
	if _, err := svcKey(service.FrontendKey{VIP: netip.MustParseAddr("fd00::1")}); err == nil {
		t.Error("an IPv6 frontend converted")
	}
	b := service.Backend{IP: netip.MustParseAddr("10.244.1.5"), Port: 8080}
	v, err := lbBackend(b)
	if err != nil || serviceBackend(v.IP, v.Port) != b {
		t.Errorf("lbBackend %v %v", v, err)
	}
}
