package nodecfg

import (
	"net/netip"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, MapName, uint32(0), NodeCfg{})
}

func TestGetPut(t *testing.T) {
	m, _ := maptest.Open(t, datapath.Load, Open)
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
	if err := c.SetCTCloseTimeouts(lb.CTCloseTimeouts{CloseWait: time.Hour, TimeWait: 1500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if c.CTTCPCloseWait != 3600 || c.CTTCPTimeWait != 2 || c.CTTCPClose != 0 {
		t.Fatalf("close timeouts %d %d %d, want 3600 2 (rounded up) 0 (default)", c.CTTCPCloseWait, c.CTTCPTimeWait, c.CTTCPClose)
	}
	if got := c.CTCloseTimeouts(); got != (lb.CTCloseTimeouts{CloseWait: time.Hour, TimeWait: 2 * time.Second}) {
		t.Fatalf("CTCloseTimeouts = %+v", got)
	}
	if err := c.SetCTCloseTimeouts(lb.CTCloseTimeouts{Close: 1 << 62}); err == nil {
		t.Fatal("a timeout beyond 2^32 s accepted")
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
