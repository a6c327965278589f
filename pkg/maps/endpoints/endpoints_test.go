package endpoints

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
	layout.Check(t, datapath.MapSpecs, MapName, maps.IPv4{}, Endpoint{})
}

func TestMap(t *testing.T) {
	m, d := maptest.Open(t, datapath.Load, Open)

	ip := netip.MustParseAddr("10.244.1.7")
	ep := Endpoint{Ifindex: 9, PodMAC: [6]byte{2, 0, 0, 0, 0, 1}, HostMAC: [6]byte{2, 0, 0, 0, 0, 2}}
	if err := m.Upsert(ip, ep); err != nil {
		t.Fatal(err)
	}
	// The program reads the key as __be32: the first byte on the wire is the first byte in memory.
	var raw Endpoint
	if err := d.Map(MapName).Lookup([4]byte{10, 244, 1, 7}, &raw); err != nil || raw != ep {
		t.Fatalf("raw lookup: %v %v", raw, err)
	}
	if got, err := m.Lookup(ip); err != nil || got != ep {
		t.Fatalf("Lookup = %v, %v", got, err)
	}
	n := 0
	if err := m.Iterate(func(a netip.Addr, e Endpoint) bool { n++; return a == ip && e == ep }); err != nil || n != 1 {
		t.Fatalf("Iterate: n=%d err=%v", n, err)
	}
	if err := m.Delete(ip); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ip); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if _, err := m.Lookup(ip); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("Lookup after Delete: %v", err)
	}
	if err := m.Upsert(netip.MustParseAddr("fd00::1"), ep); !errors.Is(err, maps.ErrNotIPv4) {
		t.Fatalf("IPv6 key: %v", err)
	}
	if ep.String() == "" {
		t.Fatal("empty String")
	}
}
