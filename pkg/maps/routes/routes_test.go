package routes

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, MapName, Key{}, Route{})
}

func TestMap(t *testing.T) {
	m, _ := maptest.Open(t, datapath.Load, Open)

	cluster := netip.MustParsePrefix("10.244.0.0/16")
	node2 := netip.MustParsePrefix("10.244.2.0/24")
	r1 := Route{NodeIP: [4]byte{192, 168, 0, 1}, Domain: 1, Encap: EncapVXLAN}
	r2 := Route{NodeIP: [4]byte{192, 168, 0, 2}, Domain: 2, Encap: EncapDirect, Flags: FlagLocal}
	if err := m.Upsert(cluster, r1); err != nil {
		t.Fatal(err)
	}
	if err := m.Upsert(netip.MustParsePrefix("10.244.2.9/24"), r2); err != nil { // host bits masked
		t.Fatal(err)
	}
	if p, r, err := m.Match(netip.MustParseAddr("10.244.2.5")); err != nil || p != node2 || r != r2 {
		t.Fatalf("Match in node2 = %s %v %v", p, r, err)
	}
	if p, r, err := m.Match(netip.MustParseAddr("10.244.7.5")); err != nil || p != cluster || r != r1 {
		t.Fatalf("Match elsewhere = %s %v %v", p, r, err)
	}
	if _, _, err := m.Match(netip.MustParseAddr("8.8.8.8")); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("Match outside: %v", err)
	}
	if r, err := m.Lookup(node2); err != nil || r != r2 {
		t.Fatalf("Lookup = %v %v", r, err)
	}
	if _, err := m.Lookup(netip.MustParsePrefix("10.244.3.0/24")); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("Lookup of a prefix only covered by a shorter one: %v", err)
	}
	if err := m.Delete(node2); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(node2); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := m.Iterate(func(netip.Prefix, Route) bool { n++; return true }); err != nil || n != 1 {
		t.Fatalf("Iterate: %d %v", n, err)
	}
	t.Log(r2)
}

// TestIterateBatch: the batch read sees every route of a table larger than one batch, as Iterate does.
func TestIterateBatch(t *testing.T) {
	m, _ := maptest.Open(t, datapath.Load, Open)
	want := map[netip.Prefix]Route{}
	for i := range 5000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(240 + i>>10), byte(i >> 2), byte(i << 6)}), 26)
		r := Route{NodeIP: [4]byte{198, 18, byte(i >> 8), byte(i)}, Domain: uint32(i)}
		if err := m.Upsert(p, r); err != nil {
			t.Fatal(err)
		}
		want[p] = r
	}
	got := map[netip.Prefix]Route{}
	if err := m.IterateBatch(func(p netip.Prefix, r Route) bool { got[p] = r; return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("IterateBatch saw %d routes, want %d", len(got), len(want))
	}
	for p, r := range want {
		if got[p] != r {
			t.Fatalf("IterateBatch: %s -> %v, want %v", p, got[p], r)
		}
	}
}
