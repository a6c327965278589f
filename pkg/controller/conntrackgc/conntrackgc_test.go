package conntrackgc

import (
	"cmp"
	"errors"
	gomaps "maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/controller/maptables"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// TestConntrackGCTimeouts: each entry's timeout follows its protocol and state, as lb.h says.
func TestConntrackGCTimeouts(t *testing.T) {
	f := newGCFixture(100)
	now := f.clock
	f.ct.put(ctKey(1, lb.ProtoTCP, lb.DirFwd), ct(1, 0, now-61*sec))                                                // SYN sent, 61 s ago: dead
	f.ct.put(ctKey(2, lb.ProtoTCP, lb.DirFwd), ct(1, 0, now-59*sec))                                                // SYN sent, 59 s ago
	f.ct.put(ctKey(3, lb.ProtoTCP, lb.DirFwd), ct(1, lb.CTFlagSeenReply, now-5*3600*sec))                           // established, idle 5 h
	f.ct.put(ctKey(4, lb.ProtoTCP, lb.DirRev), ct(1, lb.CTFlagSeenReply, now-7*3600*sec))                           // established, idle 7 h: dead
	f.ct.put(ctKey(5, lb.ProtoTCP, lb.DirFwd), ct(1, lb.CTFlagSeenReply|lb.CTFlagClosing|lb.CTFlagRST, now-11*sec)) // reset 11 s ago: dead
	f.ct.put(ctKey(6, lb.ProtoTCP, lb.DirFwd), ct(1, lb.CTFlagClosing|lb.CTFlagRST, now-9*sec))
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

// TestConntrackGCTCPClose: the close is judged per direction, with the programs' timeouts: a
// half-closed connection (one FIN) lives the close-wait timeout (an hour by default: the other side
// may still be sending), FINs both ways the time-wait, an RST the close timeout; an older
// program's CLOSING alone, of unknown direction, the time-wait. With timeouts configured
// (--ct-tcp-*-timeout), those.
func TestConntrackGCTCPClose(t *testing.T) {
	const (
		established = lb.CTFlagSeenReply
		closing     = lb.CTFlagSeenReply | lb.CTFlagClosing
		finFwd      = closing | lb.CTFlagFinFwd
		finRev      = closing | lb.CTFlagFinRev
		finBoth     = finFwd | lb.CTFlagFinRev
		rst         = closing | lb.CTFlagRST
	)
	for _, tt := range []struct {
		name     string
		timeouts lb.CTCloseTimeouts
		entries  map[byte]lb.CT // by client; ages relative to now
		left     []byte
	}{
		{"defaults", lb.CTCloseTimeouts{}, map[byte]lb.CT{
			1:  {Flags: finFwd, LastSeen: 11}, // half-closed by the client 11 s ago: the backend may still send
			2:  {Flags: finRev, LastSeen: 59 * 60},
			3:  {Flags: finFwd, LastSeen: 61 * 60}, // dead
			4:  {Flags: finBoth, LastSeen: 119},
			5:  {Flags: finBoth, LastSeen: 121}, // dead
			6:  {Flags: rst, LastSeen: 9},
			7:  {Flags: rst | lb.CTFlagFinFwd, LastSeen: 11}, // dead
			8:  {Flags: closing, LastSeen: 119},              // an older program's
			9:  {Flags: closing, LastSeen: 121},              // dead
			10: {Flags: established, LastSeen: 121},
		}, []byte{1, 2, 4, 6, 8, 10}},
		{"configured", lb.CTCloseTimeouts{CloseWait: 5 * time.Minute, TimeWait: 30 * time.Second, Close: 2 * time.Second}, map[byte]lb.CT{
			1: {Flags: finFwd, LastSeen: 299},
			2: {Flags: finRev, LastSeen: 301}, // dead
			3: {Flags: finBoth, LastSeen: 29},
			4: {Flags: finBoth, LastSeen: 31}, // dead
			5: {Flags: rst, LastSeen: 1},
			6: {Flags: rst, LastSeen: 3},      // dead
			7: {Flags: closing, LastSeen: 31}, // dead
		}, []byte{1, 3, 5}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newGCFixture(100)
			f.gc.timeouts = tt.timeouts
			for _, client := range slices.Sorted(gomaps.Keys(tt.entries)) {
				e := tt.entries[client]
				for _, dir := range []lb.Dir{lb.DirFwd, lb.DirRev} {
					f.ct.put(ctKey(client, lb.ProtoTCP, dir), ct(1, e.Flags, f.clock-e.LastSeen*sec))
				}
			}
			if err := f.gc.pass(); err != nil {
				t.Fatal(err)
			}
			var left []byte
			for _, c := range f.left() {
				if len(left) == 0 || left[len(left)-1] != c {
					left = append(left, c)
				}
			}
			if !slices.Equal(left, tt.left) || len(f.ct.keys) != 2*len(tt.left) {
				t.Errorf("left %v (%d entries), want %v with both entries each", left, len(f.ct.keys), tt.left)
			}
		})
	}
}

// TestConntrackGCStaleBackends: UDP and SCTP flows to a backend no frontend uses go (once the
// reconciler knows the backends); TCP flows and reverse entries stay until they expire. The
// reconciler is asked about the backends of the batch's live UDP and SCTP flows only, not for
// all it programmed.
func TestConntrackGCStaleBackends(t *testing.T) {
	f := newGCFixture(100)
	now := f.clock
	f.ct.put(ctKey(1, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now))  // backend .1 live
	f.ct.put(ctKey(2, lb.ProtoUDP, lb.DirFwd), ct(2, 0, now))  // backend .2 gone
	f.ct.put(ctKey(3, lb.ProtoSCTP, lb.DirFwd), ct(2, 0, now)) // gone
	f.ct.put(ctKey(4, lb.ProtoTCP, lb.DirFwd), ct(2, lb.CTFlagSeenReply, now))
	f.ct.put(ctKey(5, lb.ProtoUDP, lb.DirRev), ct(2, 0, now))
	f.ct.put(ctKey(6, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now))
	f.ct.put(ctKey(7, lb.ProtoUDP, lb.DirFwd), ct(3, 0, now-61*sec)) // expired: not asked about
	f.services.live = map[controller.BackendKey]bool{backendKey(1, lb.ProtoUDP): true, backendKey(1, lb.ProtoSCTP): true}
	for i := range byte(200) { // the rest of the cluster's backends, never asked about
		f.services.live[controller.BackendKey{Backend: service.Backend{IP: netip.AddrFrom4([4]byte{10, 244, 2, i}), Port: 80}, Proto: service.ProtoTCP}] = true
	}
	want := []controller.BackendKey{backendKey(1, lb.ProtoUDP), backendKey(2, lb.ProtoUDP), backendKey(2, lb.ProtoSCTP)}
	checkAsked := func(when string) {
		t.Helper()
		if f.services.calls != 1 || !sameBackends(f.services.asked, want) {
			t.Errorf("%s: %d calls asking about %v, want one about %v", when, f.services.calls, f.services.asked, want)
		}
		f.services.calls, f.services.asked = 0, nil
	}

	f.gc.pass() // the reconciler has not synced: nothing is judged by its backends
	if got := f.left(); !slices.Equal(got, []byte{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("left %v before the reconciler synced", got)
	}
	checkAsked("before the reconciler synced")
	f.services.ready = true
	f.gc.pass()
	if got := f.left(); !slices.Equal(got, []byte{1, 4, 5, 6}) {
		t.Errorf("left %v", got)
	}
	checkAsked("synced")
	if f.metrics[[2]string{lb.CTMapName, gcStaleBackend}] != 2 {
		t.Errorf("metrics %v", f.metrics)
	}
	// A batch without a live UDP or SCTP flow asks nothing.
	f.ct.Delete(ctKey(1, lb.ProtoUDP, lb.DirFwd))
	f.ct.Delete(ctKey(6, lb.ProtoUDP, lb.DirFwd))
	f.gc.pass()
	if f.services.calls != 0 {
		t.Errorf("asked about %v for a batch of TCP and reverse entries", f.services.asked)
	}
}

func backendKey(last byte, proto lb.Proto) controller.BackendKey {
	ip, port := backendAt(last)
	return maptables.ConntrackBackend(lb.CTKey{Proto: proto}, lb.CT{Addr: ip, Port: port})
}

func sameBackends(a, b []controller.BackendKey) bool {
	order := func(x, y controller.BackendKey) int {
		return cmp.Or(x.IP.Compare(y.IP), cmp.Compare(x.Port, y.Port), cmp.Compare(x.Proto, y.Proto))
	}
	a, b = slices.SortedFunc(slices.Values(a), order), slices.SortedFunc(slices.Values(b), order)
	return slices.Equal(a, b)
}

// TestConntrackGCRecheck: the datapath writes while a pass judges its batch; an entry is deleted
// only if a fresh read still finds it dead (expired with the last packet it was judged by, or
// still going to an unused backend), and one gone meanwhile is no error.
func TestConntrackGCRecheck(t *testing.T) {
	f := newGCFixture(100)
	now := f.clock
	f.services.ready = true
	f.services.live = map[controller.BackendKey]bool{backendKey(1, lb.ProtoUDP): true}
	f.ct.put(ctKey(1, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now-61*sec))                // expired, then refreshed
	f.ct.put(ctKey(2, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now-61*sec))                // expired
	f.ct.put(ctKey(3, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now-61*sec))                // expired, then evicted
	f.ct.put(ctKey(4, lb.ProtoTCP, lb.DirFwd), ct(1, lb.CTFlagClosing, now-11*sec)) // closed, then a new connection
	f.ct.put(ctKey(5, lb.ProtoUDP, lb.DirFwd), ct(2, 0, now-sec))                   // stale, then refreshed
	f.ct.put(ctKey(6, lb.ProtoUDP, lb.DirFwd), ct(2, 0, now-sec))                   // stale, then recreated to a live backend
	affinity := func(client byte) lb.AffinityKey {
		return lb.AffinityKey{SvcID: 1, Client: maps.IPv4{10, 244, 0, client}}
	}
	f.services.timeouts = map[uint32]time.Duration{1: 2 * time.Second}
	f.affinity.put(affinity(1), lb.Affinity{LastSeen: now - 3*sec}) // expired, then renewed
	f.affinity.put(affinity(2), lb.Affinity{LastSeen: now - 3*sec}) // expired
	f.ct.walked = func() {
		f.ct.put(ctKey(1, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now+sec))
		f.ct.Delete(ctKey(3, lb.ProtoUDP, lb.DirFwd))
		f.ct.put(ctKey(4, lb.ProtoTCP, lb.DirFwd), ct(1, 0, now+sec))
		f.ct.put(ctKey(5, lb.ProtoUDP, lb.DirFwd), ct(2, 0, now+sec))
		f.ct.put(ctKey(6, lb.ProtoUDP, lb.DirFwd), ct(1, 0, now+sec))
	}
	f.affinity.walked = func() { f.affinity.put(affinity(1), lb.Affinity{LastSeen: now + sec}) }
	if err := f.gc.pass(); err != nil {
		t.Fatal(err)
	}
	if got := f.left(); !slices.Equal(got, []byte{1, 4, 6}) {
		t.Errorf("left %v", got)
	}
	if got := f.affinity.keys; !slices.Equal(got, []lb.AffinityKey{affinity(1)}) {
		t.Errorf("affinity left %v", got)
	}
	want := fakeGCMetrics{{lb.CTMapName, gcExpired}: 1, {lb.CTMapName, gcStaleBackend}: 1, {lb.AffinityMapName, gcExpired}: 1}
	if !reflect.DeepEqual(f.metrics, want) {
		t.Errorf("metrics %v, want %v", f.metrics, want)
	}
	if f.gc.lastDeleted != 2 {
		t.Errorf("lastDeleted %d", f.gc.lastDeleted)
	}
}

// TestConntrackGCRecheckCursor: an entry found live on the second read is where the next pass
// starts, as any entry the pass kept.
func TestConntrackGCRecheckCursor(t *testing.T) {
	f := newGCFixture(3)
	now := f.clock
	for i := range byte(6) {
		f.ct.put(ctKey(i, lb.ProtoTCP, lb.DirFwd), ct(1, 0, now-61*sec)) // SYN sent 61 s ago: dead
	}
	f.ct.walked = func() {
		f.ct.walked = nil
		f.ct.put(ctKey(2, lb.ProtoTCP, lb.DirFwd), ct(1, 0, now)) // the last of the batch, refreshed
	}
	f.gc.pass()
	if f.gc.ctCursor == nil || *f.gc.ctCursor != ctKey(2, lb.ProtoTCP, lb.DirFwd) {
		t.Fatalf("cursor %v", f.gc.ctCursor)
	}
	f.gc.pass()
	if got := f.left(); !slices.Equal(got, []byte{2}) {
		t.Errorf("left %v", got)
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

// TestConntrackGCIdleAsksNothing: a pass over empty maps (no Service traffic) does not ask the
// reconciler anything: its answers walk every programmed frontend.
func TestConntrackGCIdleAsksNothing(t *testing.T) {
	f := newGCFixture(100)
	for range 3 {
		if err := f.gc.pass(); err != nil {
			t.Fatal(err)
		}
	}
	if f.services.calls != 0 || f.services.timeoutCalls != 0 {
		t.Errorf("idle passes asked UnusedBackends %d and AffinityTimeouts %d times, want none", f.services.calls, f.services.timeoutCalls)
	}
}
