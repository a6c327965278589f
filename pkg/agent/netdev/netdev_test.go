package netdev

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edgeplane/edgeplane/pkg/internal/netnstest"
)

// underlayFixture adds eth0 192.168.50.2/24 with a default route via .1.
func underlayFixture(t testing.TB) netlink.Link {
	t.Helper()
	eth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "switch0"}
	must(t, netlink.LinkAdd(eth))
	peer, err := netlink.LinkByName("switch0")
	must(t, err)
	must(t, netlink.LinkSetUp(peer))
	l, err := netlink.LinkByName("eth0")
	must(t, err)
	must(t, netlink.LinkSetUp(l))
	addr, _ := netlink.ParseAddr("192.168.50.2/24")
	must(t, netlink.AddrAdd(l, addr))
	must(t, netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP("192.168.50.1"), LinkIndex: l.Attrs().Index}))
	lo, _ := netlink.LinkByName("lo")
	must(t, netlink.LinkSetUp(lo))
	return l
}

// underlayWithNeighbours is underlayFixture with the gateway (192.168.50.1) and a peer on the
// segment (192.168.50.3) resolved.
func underlayWithNeighbours(t testing.TB) (eth netlink.Link, gwMAC, peerMAC net.HardwareAddr) {
	eth = underlayFixture(t)
	gwMAC, _ = net.ParseMAC("0e:00:00:00:00:01")
	peerMAC, _ = net.ParseMAC("0e:00:00:00:00:03")
	for ip, mac := range map[string]net.HardwareAddr{"192.168.50.1": gwMAC, "192.168.50.3": peerMAC} {
		must(t, netlink.NeighAdd(&netlink.Neigh{LinkIndex: eth.Attrs().Index, IP: net.ParseIP(ip),
			HardwareAddr: mac, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}))
	}
	return eth, gwMAC, peerMAC
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFindUnderlay(t *testing.T) {
	netnstest.Run(t, func() {
		eth := underlayFixture(t)
		for _, tc := range []struct {
			name   string
			nodeIP string
		}{{"", "192.168.50.2"}, {"", "10.9.9.9"}, {"eth0", ""}} {
			var ip netip.Addr
			if tc.nodeIP != "" {
				ip = netip.MustParseAddr(tc.nodeIP)
			}
			u, err := FindUnderlay(tc.name, ip)
			must(t, err)
			if u.Index != eth.Attrs().Index || u.Prefix != netip.MustParsePrefix("192.168.50.2/24") || u.MTU != 1500 {
				t.Errorf("FindUnderlay(%q, %v) = %+v", tc.name, ip, u)
			}
		}
		if _, err := FindUnderlay("nope0", netip.Addr{}); err == nil {
			t.Error("FindUnderlay of a missing interface succeeded")
		}
	})
}

func TestEnsureVXLANConverges(t *testing.T) {
	netnstest.Run(t, func() {
		underlayFixture(t)
		want := VXLAN{Name: "edgeplane.1", MTU: 1450, MAC: VTEPMAC("node-a"), Address: netip.MustParseAddr("10.244.3.0")}
		dev, err := EnsureVXLAN(want)
		must(t, err)
		check := func(what string) {
			t.Helper()
			l, err := netlink.LinkByName("edgeplane.1")
			must(t, err)
			v, ok := l.(*netlink.Vxlan)
			if !ok || !v.FlowBased || v.Port != VXLANPort || v.Learning || v.MTU != 1450 ||
				v.HardwareAddr.String() != want.MAC.String() || v.Flags&net.FlagUp == 0 {
				t.Fatalf("%s: device %+v", what, l.Attrs())
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			if len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.3.0/32" {
				t.Fatalf("%s: addresses %v", what, addrs)
			}
		}
		check("created")
		if dev.MAC.String() != want.MAC.String() {
			t.Fatalf("Device MAC %s; want %s", dev.MAC, want.MAC)
		}

		l, _ := netlink.LinkByName("edgeplane.1")
		must(t, netlink.LinkSetMTU(l, 1300))
		must(t, netlink.LinkSetDown(l))
		stale, _ := netlink.ParseAddr("10.244.9.0/32")
		must(t, netlink.AddrAdd(l, stale))
		again, err := EnsureVXLAN(want)
		must(t, err)
		if again.Index != dev.Index {
			t.Fatal("a compatible device was recreated")
		}
		check("converged")

		must(t, netlink.LinkDel(l))
		must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "edgeplane.1"}, PeerName: "other"}))
		_, err = EnsureVXLAN(want)
		must(t, err)
		check("recreated")
	})
}

// deviceRoutes is every dst through the device from src.
func deviceRoutes(src netip.Addr, dsts ...netip.Prefix) []DeviceRoute {
	var routes []DeviceRoute
	for _, dst := range dsts {
		routes = append(routes, DeviceRoute{Dst: dst, Src: src})
	}
	return routes
}

// TestEnsureRoutes: the cluster and service CIDRs route through the device from the pod CIDR's
// network address, the host-hairpin address from the node IP; a changed CIDR replaces the old
// route, and nothing else stays on the device.
func TestEnsureRoutes(t *testing.T) {
	netnstest.Run(t, func() {
		underlayFixture(t)
		dev, err := EnsureVXLAN(VXLAN{Name: "edgeplane.1", MTU: 1450, MAC: VTEPMAC("a"), Address: netip.MustParseAddr("10.244.3.0")})
		must(t, err)
		src := netip.MustParseAddr("10.244.3.0")
		hairpin := DeviceRoute{Dst: netip.MustParsePrefix("169.254.42.2/32"), Src: netip.MustParseAddr("192.168.50.2")}
		must(t, EnsureRoutes(dev.Index, deviceRoutes(src, netip.MustParsePrefix("10.245.0.0/16"), netip.MustParsePrefix("10.97.0.0/16"))...))
		must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: dev.Index, Dst: &net.IPNet{IP: net.ParseIP("172.20.0.0"), Mask: net.CIDRMask(16, 32)}}))
		must(t, EnsureRoutes(dev.Index, append(deviceRoutes(src, netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")), hairpin)...))
		routes, err := netlink.RouteList(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Index: dev.Index}}, netlink.FAMILY_V4)
		must(t, err)
		var got []string
		for _, r := range routes {
			got = append(got, r.Dst.String()+" src "+r.Src.String())
		}
		if strings.Join(got, ", ") != "10.96.0.0/12 src 10.244.3.0, 10.244.0.0/16 src 10.244.3.0, 169.254.42.2/32 src 192.168.50.2" {
			t.Fatalf("routes on the device: %v", got)
		}
		for ip, src := range map[string]string{"10.244.7.9": "10.244.3.0", "10.96.0.10": "10.244.3.0", "169.254.42.2": "192.168.50.2"} {
			r, err := netlink.RouteGet(net.ParseIP(ip))
			must(t, err)
			if r[0].LinkIndex != dev.Index || !r[0].Src.Equal(net.ParseIP(src)) {
				t.Fatalf("%s routes via %d from %s; want the vxlan device from %s", ip, r[0].LinkIndex, r[0].Src, src)
			}
		}
	})
}

func TestEnsureForwarding(t *testing.T) {
	netnstest.Run(t, func() {
		underlayFixture(t)
		_, err := EnsureVXLAN(VXLAN{Name: "edgeplane.1", MTU: 1450, MAC: VTEPMAC("a"), Address: netip.MustParseAddr("10.244.3.0")})
		must(t, err)
		must(t, writeSysctl(DefaultProcSys, "net/ipv4/conf/all/rp_filter", "1"))
		must(t, EnsureForwarding(DefaultProcSys, "edgeplane.1"))
		for name, want := range map[string]string{
			"net/ipv4/ip_forward":                 "1",
			"net/ipv4/conf/edgeplane.1/rp_filter": "0",
			"net/ipv4/conf/all/rp_filter":         "2",
		} {
			if got, err := readSysctl(DefaultProcSys, name); err != nil || got != want {
				t.Errorf("%s = %q, %v; want %s", name, got, err, want)
			}
		}
	})
}

func TestEnsureConntrackCloseWait(t *testing.T) {
	netnstest.Run(t, func() {
		if _, err := os.Stat(filepath.Join(DefaultProcSys, conntrackCloseWait)); err != nil {
			t.Skipf("nf_conntrack is not loaded on this host: %v", err)
		}
		set, err := EnsureConntrackCloseWait(DefaultProcSys, time.Hour)
		if err != nil || !set {
			t.Fatalf("EnsureConntrackCloseWait = %v, %v; want true", set, err)
		}
		if got, err := readSysctl(DefaultProcSys, conntrackCloseWait); err != nil || got != "3600" {
			t.Errorf("%s = %q, %v; want 3600", conntrackCloseWait, got, err)
		}
		// Rounded up to whole seconds, as the flag says.
		if _, err := EnsureConntrackCloseWait(DefaultProcSys, 1500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if got, _ := readSysctl(DefaultProcSys, conntrackCloseWait); got != "2" {
			t.Errorf("%s = %q after 1.5s; want 2", conntrackCloseWait, got)
		}
	})
	// Where nf_conntrack is not loaded there is nothing to set, and that is no error.
	if set, err := EnsureConntrackCloseWait(t.TempDir(), time.Hour); set || err != nil {
		t.Errorf("without nf_conntrack: %v, %v; want false, nil", set, err)
	}
}

func TestNextHop(t *testing.T) {
	netnstest.Run(t, func() {
		eth, gwMAC, peerMAC := underlayWithNeighbours(t)
		n := NextHops{UnderlayIndex: eth.Attrs().Index}
		for ip, want := range map[string]string{"192.168.50.3": peerMAC.String(), "203.0.113.7": gwMAC.String(), "192.168.50.4": ""} {
			mac, err := n.NextHop(netip.MustParseAddr(ip))
			if want != "" && (err != nil || mac.String() != want) {
				t.Errorf("NextHop(%s) = %v, %v; want %s", ip, mac, err, want)
			}
			if want == "" && (mac != nil || err != nil) {
				t.Errorf("NextHop(%s) = %v, %v; want unresolved and a solicitation sent", ip, mac, err)
			}
		}
		if _, ok, err := (Links{}).NameOf(999999); ok || err != nil {
			t.Errorf("NameOf(missing) = %v, %v", ok, err)
		}
		if name, ok, err := (Links{}).NameOf(eth.Attrs().Index); !ok || err != nil || name != "eth0" {
			t.Errorf("NameOf(eth0) = %q, %v, %v", name, ok, err)
		}
	})
}

func TestVTEPMACIsStableUnicastLocal(t *testing.T) {
	a, b := VTEPMAC("node-a"), VTEPMAC("node-a")
	if a.String() != b.String() || a[0]&1 != 0 || a[0]&2 == 0 || VTEPMAC("node-b").String() == a.String() {
		t.Fatalf("VTEPMAC: %s %s", a, b)
	}
}

// WatchResolved reports a neighbour of the underlay the moment the kernel holds its MAC, and
// nothing about other links.
func TestWatchResolved(t *testing.T) {
	netnstest.Run(t, func() {
		eth := underlayFixture(t)
		here, err := netns.Get()
		must(t, err)
		defer here.Close()
		type resolved struct {
			ip  netip.Addr
			mac string
		}
		got := make(chan resolved, 16)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			// The subscription is made in the namespace of the thread that makes it.
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			if err := netns.Set(here); err != nil {
				done <- err
				return
			}
			done <- NextHops{UnderlayIndex: eth.Attrs().Index}.WatchResolved(ctx, func(ip netip.Addr, mac net.HardwareAddr) {
				got <- resolved{ip, mac.String()}
			})
		}()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		time.Sleep(100 * time.Millisecond) // subscribed
		must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "other0"}, PeerName: "other1"}))
		other, err := netlink.LinkByName("other0")
		must(t, err)
		must(t, netlink.LinkSetUp(other))
		must(t, netlink.NeighAdd(&netlink.Neigh{LinkIndex: other.Attrs().Index, IP: net.ParseIP("10.9.9.9"),
			HardwareAddr: net.HardwareAddr{0x0e, 0, 0, 0, 0, 9}, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}))
		must(t, netlink.NeighAdd(&netlink.Neigh{LinkIndex: eth.Attrs().Index, IP: net.ParseIP("192.168.50.3"),
			HardwareAddr: net.HardwareAddr{0x0e, 0, 0, 0, 0, 3}, State: netlink.NUD_REACHABLE, Family: netlink.FAMILY_V4}))
		select {
		case r := <-got:
			if r.ip != netip.MustParseAddr("192.168.50.3") || r.mac != "0e:00:00:00:00:03" {
				t.Errorf("resolved %v %s, want 192.168.50.3 0e:00:00:00:00:03 (and nothing of other0)", r.ip, r.mac)
			}
		case err := <-done:
			t.Fatalf("WatchResolved returned early: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("no neighbour reported")
		}
	})
}
