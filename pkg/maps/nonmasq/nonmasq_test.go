package nonmasq

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, MapName, Key{}, Value(0))
}

func list(t *testing.T, m *Map) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	if err := m.Iterate(func(p netip.Prefix) bool { out = append(out, p); return true }); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

func TestMap(t *testing.T) {
	m, _ := maptest.Open(t, datapath.Load, Open)
	private := netip.MustParsePrefix("192.168.0.0/16")
	if err := m.Upsert(netip.MustParsePrefix("192.168.7.7/16")); err != nil { // host bits masked
		t.Fatal(err)
	}
	if err := m.Upsert(private); err != nil { // again: fine
		t.Fatal(err)
	}
	if got := list(t, m); !slices.Equal(got, []netip.Prefix{private}) {
		t.Fatalf("entries %v, want [%v]", got, private)
	}
	for addr, want := range map[string]bool{"192.168.3.4": true, "10.1.2.3": false} {
		if got, err := m.Match(netip.MustParseAddr(addr)); err != nil || got != want {
			t.Errorf("Match(%s) = %v, %v; want %v", addr, got, err, want)
		}
	}
	if err := m.Upsert(netip.MustParsePrefix("fd00::/8")); err == nil {
		t.Error("an IPv6 prefix was accepted")
	}
	if err := m.Delete(private); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(private); err != nil {
		t.Fatalf("deleting a missing prefix: %v", err)
	}
	if got := list(t, m); len(got) != 0 {
		t.Fatalf("entries %v after delete", got)
	}
	t.Log(Key{Prefixlen: 16, Addr: [4]byte{192, 168, 0, 0}})
}

func TestSync(t *testing.T) {
	m, _ := maptest.Open(t, datapath.Load, Open)
	p := netip.MustParsePrefix
	for _, step := range []struct {
		want, then []netip.Prefix
	}{
		{[]netip.Prefix{p("10.244.0.0/16"), p("192.168.0.0/16")}, []netip.Prefix{p("10.244.0.0/16"), p("192.168.0.0/16")}},
		// a CIDR dropped from the flags goes; one added comes; a host-bit spelling is the same CIDR
		{[]netip.Prefix{p("10.244.1.1/16"), p("172.16.0.0/12")}, []netip.Prefix{p("10.244.0.0/16"), p("172.16.0.0/12")}},
		{nil, nil},
	} {
		if err := m.Sync(step.want); err != nil {
			t.Fatal(err)
		}
		if got := list(t, m); !slices.Equal(got, step.then) {
			t.Fatalf("after Sync(%v): %v, want %v", step.want, got, step.then)
		}
	}
}
