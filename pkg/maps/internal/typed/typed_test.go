package typed_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
)

// TestMap checks the rules every pkg/maps package relies on, on endpoints_map (a hash map).
func TestMap(t *testing.T) {
	root, d := maptest.Load(t, datapath.Load)
	m, err := typed.Open[maps.IPv4, endpoints.Endpoint](root, endpoints.MapName)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	key, value := maps.IPv4{10, 244, 1, 7}, endpoints.Endpoint{Ifindex: 7}
	_, err = m.Get(key)
	if !errors.Is(err, ebpf.ErrKeyNotExist) || !strings.Contains(err.Error(), "endpoints_map[10.244.1.7]") {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if err := m.Delete(key); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if err := m.Put(key, value); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Get(key); err != nil || got != value {
		t.Fatalf("Get = %v, %v", got, err)
	}

	// Fill the map: the kernel's E2BIG comes back explained and still matchable.
	raw := d.Map(endpoints.MapName)
	for i := uint32(1); i < raw.MaxEntries(); i++ {
		if err := m.Put(maps.IPv4{172, 16, byte(i >> 8), byte(i)}, value); err != nil {
			t.Fatal(err)
		}
	}
	err = m.Put(maps.IPv4{172, 17, 0, 0}, value)
	want := fmt.Sprintf("endpoints_map[172.17.0.0]: the map is full (%d entries)", raw.MaxEntries())
	if !errors.Is(err, unix.E2BIG) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Put into a full map: %v", err)
	}

	n := 0
	if err := m.Iterate(func(maps.IPv4, endpoints.Endpoint) bool { n++; return n < 3 }); err != nil || n != 3 {
		t.Fatalf("Iterate stopping after 3: n=%d err=%v", n, err)
	}
}

func TestReadOnly(t *testing.T) {
	root, _ := maptest.Load(t, datapath.Load)
	m, err := typed.OpenReadOnly[uint32, nodecfg.NodeCfg](root, nodecfg.MapName)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Get(0); err != nil {
		t.Fatalf("reading: %v", err)
	}
	if err := m.Put(0, nodecfg.NodeCfg{}); !errors.Is(err, unix.EPERM) {
		t.Fatalf("writing through a read-only handle: %v", err)
	}
}
