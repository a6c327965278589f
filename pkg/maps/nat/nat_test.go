package nat

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, FwdMapName, FwdKey{}, FwdValue{})
	layout.Check(t, datapath.MapSpecs, RevMapName, RevKey{}, RevValue{})
}

func TestPort(t *testing.T) {
	if p := PortFrom(443); p != (Port{0x01, 0xbb}) || p.Uint16() != 443 || p.String() != "443" {
		t.Fatalf("PortFrom(443) = %v (%d, %s)", p, p.Uint16(), p)
	}
	if got := Proto(47).String(); got != "proto(47)" {
		t.Fatalf("Proto(47) = %s", got)
	}
}

func TestMaps(t *testing.T) {
	root, d := maptest.Load(t, datapath.Load)
	fwd, err := OpenFwd(root)
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	rev, err := OpenRev(root)
	if err != nil {
		t.Fatal(err)
	}
	defer rev.Close()

	fk := FwdKey{PodIP: maps.IPv4{10, 244, 1, 5}, RemoteIP: maps.IPv4{1, 1, 1, 1}, PodPort: PortFrom(40000), RemotePort: PortFrom(443), Proto: ProtoTCP}
	fv := FwdValue{NodePort: PortFrom(33000)}
	rk, rv := fk.RevKey(fv), RevValue{PodIP: fk.PodIP, PodPort: fk.PodPort}
	if err := fwd.Upsert(fk, fv); err != nil {
		t.Fatal(err)
	}
	if err := rev.Upsert(rk, rv); err != nil {
		t.Fatal(err)
	}
	// node_egress builds the reverse key from the same packet fields: check it byte for byte.
	var raw RevValue
	want := RevKey{RemoteIP: maps.IPv4{1, 1, 1, 1}, RemotePort: Port{0x01, 0xbb}, NodePort: Port{0x80, 0xe8}, Proto: 6}
	if err := d.Map(RevMapName).Lookup(want, &raw); err != nil || raw != rv {
		t.Fatalf("raw lookup of %v: %v %v", want, raw, err)
	}
	if got, err := fwd.Lookup(fk); err != nil || got != fv {
		t.Fatalf("Lookup = %v, %v", got, err)
	}
	n := 0
	if err := rev.Iterate(func(k RevKey, v RevValue) bool { n++; return k == rk && v == rv }); err != nil || n != 1 {
		t.Fatalf("Iterate: n=%d err=%v", n, err)
	}
	for range 2 { // deleting a missing entry is not an error
		if err := fwd.Delete(fk); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fwd.Lookup(fk); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("Lookup after Delete: %v", err)
	}

	ro, err := OpenRevReadOnly(root)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got, err := ro.Lookup(rk); err != nil || got != rv {
		t.Fatalf("read-only Lookup = %v, %v", got, err)
	}
	if err := ro.Delete(rk); err == nil {
		t.Fatal("a read-only handle deleted an entry")
	}
	t.Log(fk, fv, rk, rv)
}
