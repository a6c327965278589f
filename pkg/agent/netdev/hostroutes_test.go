package netdev

import (
	"net"
	"net/netip"
	"runtime"
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

// The listing of edgeplane's host routes, which the domains pass holds while it syncs them (~4,750
// at 5,000 nodes in 20 domains), keeps a compact entry a route: less than 100 bytes where
// netlink.Route takes 376.
func TestOwnRoutesAreCompact(t *testing.T) {
	netnstest.Run(t, func() {
		eth := underlayFixture(t)
		const count = 2000
		want := map[netip.Prefix]HostRoute{}
		for i := range count {
			a := 0x0af00000 + uint32(i)<<6 // 10.240.0.0/12 in /26s
			want[netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 26)] = HostRoute{Unreachable: true}
		}
		must(t, HostRoutes{UnderlayIndex: eth.Attrs().Index}.Sync(want))
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		own, err := ownRoutes()
		must(t, err)
		runtime.GC()
		runtime.ReadMemStats(&after)
		if len(own) != count {
			t.Fatalf("%d own routes, want %d", len(own), count)
		}
		perRoute := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / count
		t.Logf("%d routes listed: %d bytes a route kept", count, perRoute)
		if perRoute >= 100 {
			t.Errorf("the listing keeps %d bytes a route, want < 100", perRoute)
		}
		runtime.KeepAlive(own)
	})
}
