package lb

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, SvcMapName, SvcKey{}, Svc{})
	layout.Check(t, datapath.MapSpecs, BackendMapName, BackendKey{}, Backend{})
	layout.Check(t, datapath.MapSpecs, CTMapName, CTKey{}, CT{})
	layout.Check(t, datapath.MapSpecs, AffinityMapName, AffinityKey{}, Affinity{})
}

// headerConstants reads the #defines and enum values of bpf/lib/lb.h: neither reaches the
// objects' BTF (the fields are plain __u8/__u16), so the header text is the contract to compare.
func headerConstants(t *testing.T) map[string]uint64 {
	t.Helper()
	src, err := os.ReadFile("../../../bpf/lib/lb.h")
	if err != nil {
		t.Fatal(err)
	}
	define := regexp.MustCompile(`(?m)^#define\s+(LB_\w+)\s+(\d+)`)
	enumerator := regexp.MustCompile(`(?m)^\s+(LB_\w+)\s*=\s*([^,]+),`)
	out := map[string]uint64{}
	for _, m := range define.FindAllStringSubmatch(string(src), -1) {
		v, err := strconv.ParseUint(m[2], 0, 64)
		if err != nil {
			t.Fatalf("%s: %v", m[1], err)
		}
		out[m[1]] = v
	}
	for _, m := range enumerator.FindAllStringSubmatch(string(src), -1) {
		expr := strings.TrimSpace(m[2])
		base, shift, isShift := strings.Cut(expr, "<<")
		v, err := strconv.ParseUint(strings.TrimSpace(base), 0, 64)
		if err == nil && isShift {
			var s uint64
			s, err = strconv.ParseUint(strings.TrimSpace(shift), 0, 64)
			v <<= s
		}
		if err != nil {
			t.Fatalf("%s = %q: %v", m[1], expr, err)
		}
		out[m[1]] = v
	}
	return out
}

func TestConstantsMatchHeader(t *testing.T) {
	c := headerConstants(t)
	want := map[string]uint64{
		"LB_SVC_MAX": SvcMax, "LB_BACKEND_MAX": BackendMax, "LB_CT_MAX": CTMax, "LB_AFFINITY_MAX": AffinityMax,
		"LB_CT_TIMEOUT_TCP": CTTimeoutTCP, "LB_CT_TIMEOUT_TCP_SYN": CTTimeoutTCPSyn,
		"LB_CT_TIMEOUT_TCP_CLOSE": CTTimeoutTCPClose, "LB_CT_TIMEOUT_OTHER": CTTimeoutOther,
		"LB_CT_TIMEOUT_TCP_CLOSE_WAIT": CTTimeoutTCPCloseWait, "LB_CT_TIMEOUT_TCP_TIME_WAIT": CTTimeoutTCPTimeWait,
		"LB_SCOPE_INTERNAL": uint64(ScopeInternal), "LB_SCOPE_EXTERNAL": uint64(ScopeExternal),
		"LB_SVC_AFFINITY": uint64(FlagAffinity), "LB_SVC_NODEPORT": uint64(FlagNodePort),
		"LB_SVC_CLOSED": uint64(FlagClosed), "LB_SVC_LOCAL": uint64(FlagLocal),
		"LB_SVC_EXTERNAL_IP": uint64(FlagExternalIP),
		"LB_CT_DIR_FWD":      uint64(DirFwd), "LB_CT_DIR_REV": uint64(DirRev),
		"LB_CT_SEEN_REPLY": uint64(CTFlagSeenReply), "LB_CT_CLOSING": uint64(CTFlagClosing),
		"LB_CT_HAIRPIN": uint64(CTFlagHairpin), "LB_CT_FIN_FWD": uint64(CTFlagFinFwd),
		"LB_CT_FIN_REV": uint64(CTFlagFinRev), "LB_CT_RST": uint64(CTFlagRST),
	}
	for name, v := range want {
		got, ok := c[name]
		if !ok {
			t.Errorf("%s is not in lb.h", name)
		} else if got != v {
			t.Errorf("%s = %d in lb.h, %d in Go", name, got, v)
		}
	}
	for name := range c {
		if _, ok := want[name]; !ok && name != "EDGEPLANE_LB_H" {
			t.Errorf("lb.h defines %s, which Go does not mirror", name)
		}
	}
	if len(FlagNames) != 5 {
		t.Errorf("FlagNames has %d names", len(FlagNames))
	}
}

func TestCTTimeout(t *testing.T) {
	sec := uint64(time.Second)
	for _, c := range []struct {
		proto Proto
		flags uint16
		want  time.Duration
	}{
		{ProtoTCP, 0, time.Minute},
		{ProtoTCP, CTFlagSeenReply, 6 * time.Hour},
		{ProtoTCP, CTFlagSeenReply | CTFlagClosing, 2 * time.Minute}, // an older program's: direction unknown
		{ProtoTCP, CTFlagClosing, 2 * time.Minute},
		{ProtoTCP, CTFlagSeenReply | CTFlagClosing | CTFlagFinFwd, time.Hour},
		{ProtoTCP, CTFlagSeenReply | CTFlagClosing | CTFlagFinRev, time.Hour},
		{ProtoTCP, CTFlagSeenReply | CTFlagClosing | CTFlagFinFwd | CTFlagFinRev, 2 * time.Minute},
		{ProtoTCP, CTFlagSeenReply | CTFlagClosing | CTFlagRST, 10 * time.Second},
		{ProtoTCP, CTFlagSeenReply | CTFlagClosing | CTFlagFinFwd | CTFlagRST, 10 * time.Second},
		{ProtoTCP, CTFlagSeenReply | CTFlagHairpin | CTFlagExternal, 6 * time.Hour},
		{ProtoUDP, CTFlagSeenReply, time.Minute},
		{ProtoSCTP, 0, time.Minute},
	} {
		if got := CTTimeout(c.proto, c.flags); got != c.want {
			t.Errorf("CTTimeout(%s, %#x) = %s, want %s", c.proto, c.flags, got, c.want)
		}
	}
	ct := CT{LastSeen: 100 * sec}
	if ct.Expired(ProtoUDP, 160*sec) || !ct.Expired(ProtoUDP, 160*sec+1) {
		t.Error("UDP entry: expiry is not last_seen + 60 s")
	}
	if ct.Expired(ProtoUDP, 50*sec) {
		t.Error("an entry seen after now expired")
	}
	a := Affinity{LastSeen: 100 * sec}
	if a.Expired(10*time.Second, 110*sec) || !a.Expired(10*time.Second, 111*sec) {
		t.Error("affinity expiry is not last_seen + timeout")
	}
}

// The node's configured close timeouts replace lb.h's, field by field (zero: the default).
func TestCTCloseTimeoutsConfigured(t *testing.T) {
	sec := uint64(time.Second)
	c := CTCloseTimeouts{CloseWait: 5 * time.Minute, Close: 3 * time.Second}
	for _, tt := range []struct {
		flags uint16
		want  time.Duration
	}{
		{CTFlagSeenReply | CTFlagClosing | CTFlagFinRev, 5 * time.Minute},
		{CTFlagSeenReply | CTFlagClosing | CTFlagFinFwd | CTFlagFinRev, 2 * time.Minute},
		{CTFlagSeenReply | CTFlagClosing | CTFlagRST, 3 * time.Second},
		{CTFlagSeenReply, 6 * time.Hour},
	} {
		if got := c.Timeout(ProtoTCP, tt.flags); got != tt.want {
			t.Errorf("Timeout(tcp, %#x) = %s, want %s", tt.flags, got, tt.want)
		}
	}
	half := CT{LastSeen: 100 * sec, Flags: CTFlagSeenReply | CTFlagClosing | CTFlagFinFwd}
	if c.Expired(half, ProtoTCP, 400*sec) || !c.Expired(half, ProtoTCP, 401*sec) {
		t.Error("half-closed entry: expiry is not last_seen + the configured close-wait")
	}
	if got := c.String(); got != "close-wait=5m0s time-wait=2m0s close=3s" {
		t.Errorf("String = %q", got)
	}
}

func TestStrings(t *testing.T) {
	k := SvcKey{VIP: maps.IPv4{10, 96, 0, 10}, Port: PortFrom(53), Proto: ProtoUDP, Scope: ScopeInternal}
	if got := k.String(); got != "udp 10.96.0.10:53 internal" {
		t.Errorf("SvcKey = %q", got)
	}
	v := Svc{ID: 7, Count: 2, Flags: FlagAffinity | FlagNodePort | 1<<9, AffinityTimeout: 30}
	if got := v.String(); got != "id=7 count=2 flags=affinity,nodeport,0x200 affinity-timeout=30s" {
		t.Errorf("Svc = %q", got)
	}
	if got := FlagString(0); got != "-" {
		t.Errorf("FlagString(0) = %q", got)
	}
	if p := PortFrom(30080); p.Uint16() != 30080 || p != (Port{0x75, 0x80}) {
		t.Errorf("PortFrom(30080) = %v", p)
	}
	if Proto(47).String() != "proto(47)" || Scope(3).String() != "scope(3)" || Dir(2).String() != "dir(2)" {
		t.Error("unknown values")
	}
}

func TestMaps(t *testing.T) {
	root, d := maptest.Load(t, datapath.Load)
	svc, err := OpenSvc(root)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	be, err := OpenBackend(root)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()

	key := SvcKey{VIP: maps.IPv4{10, 96, 0, 10}, Port: PortFrom(53), Proto: ProtoUDP, Scope: ScopeInternal}
	val := Svc{ID: 3, Count: 1, Flags: FlagAffinity, AffinityTimeout: 10800}
	if err := svc.Upsert(key, val); err != nil {
		t.Fatal(err)
	}
	// The programs build the key from the packet: check it byte for byte.
	raw := []byte{10, 96, 0, 10, 0, 53, 17, 0}
	var got Svc
	if err := d.Map(SvcMapName).Lookup(raw, &got); err != nil || got != val {
		t.Fatalf("raw lookup: %v %v", got, err)
	}
	if err := be.Upsert(BackendKey{SvcID: 3}, Backend{IP: maps.IPv4{10, 244, 1, 5}, Port: PortFrom(5353)}); err != nil {
		t.Fatal(err)
	}
	all, err := be.List()
	if err != nil || len(all) != 1 || all[BackendKey{SvcID: 3}].Port.Uint16() != 5353 {
		t.Fatalf("List = %v, %v", all, err)
	}
	for range 2 {
		if err := svc.Delete(key); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Lookup(key); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("Lookup after Delete: %v", err)
	}

	ro, err := OpenCTReadOnly(root)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Upsert(CTKey{Proto: ProtoTCP}, CT{}); err == nil {
		t.Fatal("a read-only handle wrote an entry")
	}
	t.Log(key, val, all)
}

// TestWalk spreads a walk of the conntrack map over bounded passes, deleting as a garbage
// collector does, and sees every entry exactly once per sweep.
func TestWalk(t *testing.T) {
	ct, _ := maptest.Open(t, datapath.Load, OpenCT)
	const n = 100
	for i := range n {
		k := CTKey{Saddr: maps.IPv4{10, 244, 0, byte(i)}, Daddr: maps.IPv4{10, 96, 0, 1}, Sport: PortFrom(40000), Dport: PortFrom(80), Proto: ProtoTCP}
		if err := ct.Upsert(k, CT{LastSeen: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[CTKey]int{}
	var cursor *CTKey
	for pass := 0; ; pass++ {
		if pass > n {
			t.Fatal("the walk does not end")
		}
		var keep *CTKey
		var expired []CTKey
		last, done, err := ct.Walk(cursor, 7, func(k CTKey, v CT) {
			seen[k]++
			if v.LastSeen%2 == 0 {
				expired = append(expired, k)
			} else {
				keep = &k
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range expired {
			if err := ct.Delete(k); err != nil {
				t.Fatal(err)
			}
		}
		if done {
			break
		}
		if keep == nil || *keep != last {
			// The last key is gone: continue after the last one kept, or from the start.
			cursor = keep
		} else {
			cursor = &last
		}
	}
	if len(seen) != n {
		t.Errorf("visited %d entries, want %d", len(seen), n)
	}
	left, _ := ct.List()
	if len(left) != n/2 {
		t.Errorf("%d entries left, want %d", len(left), n/2)
	}
}

// TestBatch writes more backend slots than one batch carries and reads them back in batches, as
// the service reconciler's start-up pass does.
func TestBatch(t *testing.T) {
	be, _ := maptest.Open(t, datapath.Load, OpenBackend)
	const n = 10000 // more than two batches
	keys, values := make([]BackendKey, n), make([]Backend, n)
	for i := range n {
		keys[i] = BackendKey{SvcID: uint32(i/10 + 1), Slot: uint32(i % 10)}
		values[i] = Backend{IP: maps.IPv4{100, 64, byte(i >> 8), byte(i)}, Port: PortFrom(8080)}
	}
	if err := be.UpsertBatch(keys, values); err != nil {
		t.Fatal(err)
	}
	all, err := be.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != n {
		t.Fatalf("List: %d entries, want %d", len(all), n)
	}
	for i, k := range keys {
		if all[k] != values[i] {
			t.Fatalf("%s = %s, want %s", k, all[k], values[i])
		}
	}
	seen := 0
	if err := be.IterateBatch(func(BackendKey, Backend) bool { seen++; return seen < 5 }); err != nil || seen != 5 {
		t.Errorf("IterateBatch stopped after %d entries (%v), want 5", seen, err)
	}
	if err := be.UpsertBatch(keys[:2], values[:1]); err == nil {
		t.Error("UpsertBatch took 2 keys for 1 value")
	}
	// Replacing works as Upsert does.
	values[0].Port = PortFrom(9090)
	if err := be.UpsertBatch(keys[:1], values[:1]); err != nil {
		t.Fatal(err)
	}
	if got, err := be.Lookup(keys[0]); err != nil || got.Port.Uint16() != 9090 {
		t.Errorf("after a batch replace: %s, %v", got, err)
	}
}
