package gobgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/bgp"
)

func TestInvalidConfig(t *testing.T) {
	good := bgp.Config{RouterID: netip.MustParseAddr("192.0.2.1"), ASN: 65001}
	for _, tc := range []struct {
		name string
		cfg  func(*bgp.Config)
		want string
	}{
		{"no router ID", func(c *bgp.Config) { c.RouterID = netip.Addr{} }, "router ID"},
		{"IPv6 router ID", func(c *bgp.Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "router ID"},
		{"zero ASN", func(c *bgp.Config) { c.ASN = 0 }, "local ASN 0 is reserved"},
		{"AS_TRANS", func(c *bgp.Config) { c.ASN = 23456 }, "local ASN 23456 is reserved"},
		{"port", func(c *bgp.Config) { c.ListenPort = 70000 }, "listen port 70000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.cfg(&cfg)
			_, err := Start(t.Context(), cfg)
			if !errors.Is(err, bgp.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start: %v, want bgp.ErrInvalidConfig saying %q", err, tc.want)
			}
		})
	}

	// A port already taken fails Start with the address in the message.
	port := freePort(t, gatewayAddr)
	taken, err := net.Listen("tcp", netip.AddrPortFrom(gatewayAddr, uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := good
	busy.ListenPort, busy.ListenAddresses = port, []netip.Addr{gatewayAddr}
	if s, err := Start(t.Context(), busy); err == nil {
		s.Stop(t.Context())
		t.Error("Start listened on a port in use")
	} else if !strings.Contains(err.Error(), fmt.Sprint(port)) {
		t.Errorf("Start on a port in use: %v, want the port in the message", err)
	}

	s := start(t, good)
	goodPeer := bgp.PeerConfig{Address: netip.MustParseAddr("192.0.2.254"), ASN: 65000}
	for _, tc := range []struct {
		name string
		peer func(*bgp.PeerConfig)
		want string
	}{
		{"no address", func(p *bgp.PeerConfig) { p.Address = netip.Addr{} }, "peer address is empty"},
		{"IPv6 address", func(p *bgp.PeerConfig) { p.Address = netip.MustParseAddr("2001:db8::1") }, "not a unicast IPv4 address"},
		{"zero peer ASN", func(p *bgp.PeerConfig) { p.ASN = 0 }, "peer ASN 0 is reserved"},
		{"reserved local ASN", func(p *bgp.PeerConfig) { p.LocalASN = 4294967295 }, "local ASN 4294967295 is reserved"},
		{"hold time 2 s", func(p *bgp.PeerConfig) { p.HoldTime = 2 * time.Second }, "hold time 2s is outside 3s"},
		{"hold time fraction", func(p *bgp.PeerConfig) { p.HoldTime = 3500 * time.Millisecond }, "hold time 3.5s is not a whole number of seconds"},
		{"long password", func(p *bgp.PeerConfig) { p.Password = strings.Repeat("x", 81) }, "TCP-MD5 allows at most 80"},
		{"IPv6 source", func(p *bgp.PeerConfig) { p.LocalAddress = netip.MustParseAddr("::1") }, "local address ::1 is not IPv4"},
		{"restart time without GR", func(p *bgp.PeerConfig) { p.GracefulRestart.RestartTime = time.Minute }, "graceful restart is not enabled"},
		{"restart time too long", func(p *bgp.PeerConfig) {
			p.GracefulRestart = bgp.GracefulRestart{Enabled: true, RestartTime: 5000 * time.Second}
		}, "graceful-restart time 1h23m20s is outside 1s..1h8m15s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := goodPeer
			tc.peer(&p)
			err := s.SetPeer(t.Context(), p)
			if !errors.Is(err, bgp.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("SetPeer: %v, want bgp.ErrInvalidConfig saying %q", err, tc.want)
			}
		})
	}
	if len(s.Peers()) != 0 {
		t.Errorf("invalid peers were added: %+v", s.Peers())
	}

	for _, tc := range []struct {
		prefix, nextHop, want string
	}{
		{"10.244.1.1/24", "", "has host bits set (did you mean 10.244.1.0/24?)"},
		{"fd00::/64", "", "not an IPv4 prefix"},
		{"10.244.1.0/24", "::1", "next hop ::1 is not a unicast IPv4 address"},
	} {
		var nh netip.Addr
		if tc.nextHop != "" {
			nh = netip.MustParseAddr(tc.nextHop)
		}
		err := s.Advertise(netip.MustParsePrefix(tc.prefix), nh)
		if !errors.Is(err, bgp.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Advertise(%s, %s): %v, want bgp.ErrInvalidConfig saying %q", tc.prefix, tc.nextHop, err, tc.want)
		}
	}
	err = s.SetAdvertisements(map[netip.Prefix]netip.Addr{podCIDR1: {}, netip.MustParsePrefix("10.244.2.1/24"): {}})
	if !errors.Is(err, bgp.ErrInvalidConfig) || len(s.Advertisements()) != 0 {
		t.Errorf("SetAdvertisements with one bad prefix: %v, advertising %v; want bgp.ErrInvalidConfig and nothing advertised", err, s.Advertisements())
	}
}
