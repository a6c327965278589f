package domainsmap

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/domainid"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, MapName, uint32(0), Domain{})
}

func TestNew(t *testing.T) {
	d, err := New("site-a", FlagReachable)
	if err != nil || d.NameString() != "site-a" || !d.Reachable() || d.Local() {
		t.Fatalf("New = %v %v", d, err)
	}
	if _, err := New(strings.Repeat("x", NameLen), 0); err == nil {
		t.Fatal("a 64-byte name was accepted")
	}
}

func TestMap(t *testing.T) {
	m, _ := maptest.Open(t, datapath.Load, Open)
	d, _ := New("cloud", FlagReachable|FlagLocal)
	id := domainid.Of("cloud")
	if err := m.Upsert(id, d); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Lookup(id); err != nil || got != d {
		t.Fatalf("Lookup = %v %v", got, err)
	}
	all, err := m.List()
	if err != nil || len(all) != 1 || all[id] != d {
		t.Fatalf("List = %v %v", all, err)
	}
	if err := m.Delete(id); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lookup(id); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("after Delete: %v", err)
	}
}
