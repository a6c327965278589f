package nodecfg

import (
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, MapName, uint32(0), NodeCfg{})
}

func TestGetPut(t *testing.T) {
	m, _ := maptest.Open(t, Open)
	if c, err := m.Get(); err != nil || c.Flags&FlagReady != 0 {
		t.Fatalf("fresh Get = %v %v", c, err)
	}
	c := NodeCfg{NodeIP: [4]byte{192, 168, 1, 1}, VNI: 1, MTU: 1450, Flags: FlagReady | FlagMasquerade, EncapMode: EncapDevice}
	if err := c.SetPodCIDR(netip.MustParsePrefix("10.244.1.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetClusterCIDR(netip.MustParsePrefix("10.244.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if c.PodMask != [4]byte{255, 255, 255, 0} {
		t.Fatalf("pod mask %v", c.PodMask)
	}
	if err := m.Put(c); err != nil {
		t.Fatal(err)
	}
	got, err := m.Get()
	if err != nil || got != c {
		t.Fatalf("Get = %v %v, want %v", got, err, c)
	}
	if got.PodPrefix() != netip.MustParsePrefix("10.244.1.0/24") || got.ClusterPrefix() != netip.MustParsePrefix("10.244.0.0/16") {
		t.Fatalf("prefixes %s %s", got.PodPrefix(), got.ClusterPrefix())
	}
	t.Log(got)
}
