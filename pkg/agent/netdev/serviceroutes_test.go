package netdev

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/internal/netnstest"
)

// TestSyncServiceRoutes: externalIP routes into the device converge to the wanted set, and the two
// other owners of host routes (EnsureRoutes on the device, HostRoutes on protocol 237) leave them
// alone, as they leave theirs.
func TestSyncServiceRoutes(t *testing.T) {
	netnstest.Run(t, func() {
		eth := underlayFixture(t)
		src := netip.MustParseAddr("10.244.3.0")
		dev, err := EnsureVXLAN(VXLAN{Name: "edgeplane.1", MTU: 1450, MAC: VTEPMAC("a"), Address: src})
		must(t, err)
		cidrs := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")}
		must(t, EnsureRoutes(dev.Index, deviceRoutes(src, cidrs...)...))
		lb, ext, gone := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("198.51.100.4")
		must(t, SyncServiceRoutes(dev.Index, src, map[netip.Addr]bool{lb: true, gone: true}))
		must(t, SyncServiceRoutes(dev.Index, src, map[netip.Addr]bool{lb: true, ext: true}))
		// the other owners converge their own routes
		must(t, EnsureRoutes(dev.Index, deviceRoutes(src, cidrs...)...))
		must(t, HostRoutes{UnderlayIndex: eth.Attrs().Index}.Sync(map[netip.Prefix]HostRoute{
			netip.MustParsePrefix("10.244.9.0/24"): {Unreachable: true},
		}))

		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: ServiceRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		must(t, err)
		var got []string
		for _, r := range routes {
			got = append(got, r.Dst.String())
			if r.LinkIndex != dev.Index || !r.Src.Equal(src.AsSlice()) {
				t.Errorf("route %s via %d src %s, want the device from %s", r.Dst, r.LinkIndex, r.Src, src)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"198.51.100.2/32", "198.51.100.3/32"}) {
			t.Fatalf("service routes %v, want 198.51.100.2/32 and .3/32", got)
		}
		for _, ip := range []netip.Addr{lb, ext} {
			r, err := netlink.RouteGet(ip.AsSlice())
			must(t, err)
			if r[0].LinkIndex != dev.Index {
				t.Errorf("%s routes via %d, want the device", ip, r[0].LinkIndex)
			}
		}
		if r, err := netlink.RouteGet(net.IP(gone.AsSlice())); err != nil || r[0].LinkIndex != eth.Attrs().Index {
			t.Errorf("%s: %v %v, want the default route again", gone, r, err)
		}
		// None wanted: all go.
		must(t, SyncServiceRoutes(dev.Index, src, nil))
		routes, err = netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: ServiceRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		must(t, err)
		if len(routes) != 0 {
			t.Errorf("service routes left: %v", routes)
		}
	})
}
