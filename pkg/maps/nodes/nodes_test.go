package nodes

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, MapName, maps.IPv4{}, Node{})
}

func TestMap(t *testing.T) {
	m, _ := maptest.Open(t, datapath.Load, Open)
	ip := netip.MustParseAddr("192.168.1.2")
	n := Node{VtepMAC: [6]byte{0xa, 0, 0, 0, 0, 1}, NexthopMAC: [6]byte{0xa, 0, 0, 0, 0, 2}, Domain: 3, Flags: FlagNexthopValid}
	if err := m.Upsert(ip, n); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Lookup(ip); err != nil || got != n {
		t.Fatalf("Lookup = %v %v", got, err)
	}
	count := 0
	if err := m.Iterate(func(a netip.Addr, got Node) bool { count++; return a == ip && got == n }); err != nil || count != 1 {
		t.Fatalf("Iterate %d %v", count, err)
	}
	if err := m.Delete(ip); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lookup(ip); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("after Delete: %v", err)
	}
	t.Log(n)
}

// TestIterateBatch: the batch read sees every node of a table larger than one batch, as Iterate does.
func TestIterateBatch(t *testing.T) {
	m, _ := maptest.Open(t, datapath.Load, Open)
	want := map[netip.Addr]Node{}
	for i := range 5000 {
		ip := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		n := Node{VtepMAC: [6]byte{2, 0, 0, 0, byte(i >> 8), byte(i)}, Domain: uint32(i)}
		if err := m.Upsert(ip, n); err != nil {
			t.Fatal(err)
		}
		want[ip] = n
	}
	got := map[netip.Addr]Node{}
	if err := m.IterateBatch(func(ip netip.Addr, n Node) bool { got[ip] = n; return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("IterateBatch saw %d nodes, want %d", len(got), len(want))
	}
	for ip, n := range want {
		if got[ip] != n {
			t.Fatalf("IterateBatch: %s -> %v, want %v", ip, got[ip], n)
		}
	}
}
