package netdev

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/internal/netnstest"
)

func TestHostRoutes(t *testing.T) {
	netnstest.Run(t, func() {
		eth := underlayFixture(t)
		// Somebody else's route in the same range of the table: never touched.
		foreign := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(10, 244, 9, 0), Mask: net.CIDRMask(24, 32)}, Type: unix.RTN_BLACKHOLE}
		must(t, netlink.RouteAdd(foreign))
		h := HostRoutes{UnderlayIndex: eth.Attrs().Index}
		a, b := netip.MustParsePrefix("10.244.5.0/24"), netip.MustParsePrefix("10.244.6.0/24")
		gw := netip.MustParseAddr("192.168.50.7")
		must(t, h.Sync(map[netip.Prefix]HostRoute{a: {Unreachable: true}, b: {Via: gw}}))
		assertRoute := func(ip string, wantType int, wantGw string) {
			t.Helper()
			got, err := netlink.RouteGet(net.ParseIP(ip))
			if wantType == unix.RTN_UNREACHABLE {
				if err == nil {
					t.Fatalf("route get %s = %v, want unreachable", ip, got)
				}
				return
			}
			must(t, err)
			if got[0].Gw.String() != wantGw {
				t.Fatalf("route get %s = %v, want via %s", ip, got[0], wantGw)
			}
		}
		assertRoute("10.244.5.9", unix.RTN_UNREACHABLE, "")
		assertRoute("10.244.6.9", unix.RTN_UNICAST, gw.String())

		// The gateway moves, the unreachable domain becomes reachable without a gateway.
		gw2 := netip.MustParseAddr("192.168.50.8")
		must(t, h.Sync(map[netip.Prefix]HostRoute{b: {Via: gw2}}))
		assertRoute("10.244.6.9", unix.RTN_UNICAST, gw2.String())
		own, err := ownRoutes()
		must(t, err)
		if len(own) != 1 {
			t.Fatalf("own routes after the second sync: %v", own)
		}
		n, err := DeleteHostRoutes()
		must(t, err)
		if own, _ := ownRoutes(); n != 1 || len(own) != 0 {
			t.Fatalf("DeleteHostRoutes removed %d, left %v", n, own)
		}
		left, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: foreign.Dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if len(left) != 1 {
			t.Fatalf("the foreign route is gone or doubled: %v", left)
		}
	})
}
