package netdev

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/internal/netnstest"
)

// TestCachedNextHops: a second pass over 200 peers behind the underlay's gateway asks the kernel
// for no route and lists the neighbours at most once; a route added since, and a gateway whose
// MAC changed, are followed at once.
func TestCachedNextHops(t *testing.T) {
	netnstest.Run(t, func() {
		eth, gwMAC, peerMAC := underlayWithNeighbours(t)
		c := NewCachedNextHops(eth.Attrs().Index)
		defer watchCache(t, c)()
		peers := make([]netip.Addr, 200)
		for i := range peers {
			peers[i] = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		}
		pass := func() {
			t.Helper()
			for _, ip := range peers {
				if mac, err := c.NextHop(ip); err != nil || mac.String() != gwMAC.String() {
					t.Fatalf("NextHop(%s) = %v, %v; want the gateway's %s", ip, mac, err, gwMAC)
				}
			}
		}
		pass()
		routes0, lists0 := c.Lookups()
		pass()
		routes, lists := c.Lookups()
		if routes != routes0 || lists-lists0 > 1 {
			t.Errorf("second pass over %d peers: %d route lookups and %d neighbour listings, want 0 and at most 1",
				len(peers), routes-routes0, lists-lists0)
		}

		// Peers the routing table does not reach (an unreachable route, as the agent's host routes
		// toward unreachable domains, or no route at all): the answer is kept as well.
		gen0, _ := c.RouteGeneration()
		must(t, netlink.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IP{198, 19, 0, 0}, Mask: net.CIDRMask(16, 32)},
			Type: unix.RTN_UNREACHABLE}))
		eventually(t, func() bool { gen, _ := c.RouteGeneration(); return gen != gen0 }) // its notification came
		unreachable := func() {
			t.Helper()
			for i := range 100 {
				if mac, err := c.NextHop(netip.AddrFrom4([4]byte{198, 19, 1, byte(i)})); err == nil || mac != nil {
					t.Fatalf("NextHop(198.19.1.%d) = %v, %v; want an error", i, mac, err)
				}
			}
		}
		unreachable()
		routes0, _ = c.Lookups()
		unreachable()
		if routes, _ := c.Lookups(); routes != routes0 {
			t.Errorf("second pass over 100 unreachable peers: %d route lookups, want 0", routes-routes0)
		}
		// CachedHop answers from what the lookups kept: the gateway, no neighbour for an
		// unreachable peer, and nothing known for a peer not looked up since the last route change.
		if hop, known := c.CachedHop(peers[0]); known {
			t.Errorf("CachedHop(%s) = %v, known after a route change", peers[0], hop)
		}
		if _, err := c.NextHop(peers[0]); err != nil {
			t.Fatal(err)
		}
		if hop, known := c.CachedHop(peers[0]); !known || hop != netip.MustParseAddr("192.168.50.1") {
			t.Errorf("CachedHop(%s) = %v, %v; want the gateway 192.168.50.1", peers[0], hop, known)
		}
		if hop, known := c.CachedHop(netip.MustParseAddr("198.19.1.0")); !known || hop.IsValid() {
			t.Errorf("CachedHop(198.19.1.0) = %v, %v; want no neighbour, known", hop, known)
		}
		if hop, known := c.CachedHop(netip.MustParseAddr("198.19.2.0")); known {
			t.Errorf("CachedHop of an address never looked up = %v, known", hop)
		}

		// A route toward some peers through another gateway: followed at the next lookup.
		gen, watched := c.RouteGeneration()
		must(t, netlink.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IP{198, 18, 0, 0}, Mask: net.CIDRMask(24, 32)},
			Gw: net.ParseIP("192.168.50.3"), LinkIndex: eth.Attrs().Index}))
		eventually(t, func() bool { now, still := c.RouteGeneration(); return watched && still && now != gen })
		if mac, err := c.NextHop(peers[7]); err != nil || mac.String() != peerMAC.String() {
			t.Errorf("NextHop(%s) = %v, %v after a route through 192.168.50.3 was added; want %s", peers[7], mac, err, peerMAC)
		}
		// The gateway's MAC changes: followed at the next lookup (the notification empties the
		// neighbour cache).
		newGW, _ := net.ParseMAC("0e:00:00:00:00:11")
		outside := netip.MustParseAddr("203.0.113.7")
		if mac, err := c.NextHop(outside); err != nil || mac.String() != gwMAC.String() {
			t.Fatalf("NextHop(%s) = %v, %v; want the gateway's %s", outside, mac, err, gwMAC)
		}
		must(t, netlink.NeighSet(&netlink.Neigh{LinkIndex: eth.Attrs().Index, IP: net.ParseIP("192.168.50.1"),
			HardwareAddr: newGW, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}))
		start := time.Now()
		eventually(t, func() bool { mac, _ := c.NextHop(outside); return mac.String() == newGW.String() })
		if waited := time.Since(start); waited > neighbourTTL/2 {
			t.Errorf("the gateway's new MAC took %v to be seen", waited)
		}
	})
}

// eventually waits up to 2 s for ok.
func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 2 s")
		}
	}
}

// BenchmarkNextHopPass* are the next hops of one periodic pass over 5,000 peers behind the
// underlay's gateway: NextHops asks the kernel for a route and the neighbours per peer,
// CachedNextHops (its subscriptions running, nothing changed) for neither. Each runs in its own
// network namespace, on the benchmark's goroutine (a sub-benchmark's goroutine would not be in it).
//
//	go test -run '^$' -bench NextHopPass -benchmem ./pkg/agent/netdev/
func BenchmarkNextHopPassUncached(b *testing.B) {
	netnstest.Run(b, func() {
		eth, peers := nextHopPassFixture(b)
		nextHopPass(b, NextHops{UnderlayIndex: eth.Attrs().Index}, peers)
	})
}

func BenchmarkNextHopPassCached(b *testing.B) {
	netnstest.Run(b, func() {
		eth, peers := nextHopPassFixture(b)
		c := NewCachedNextHops(eth.Attrs().Index)
		defer watchCache(b, c)()
		nextHopPass(b, c, peers)
	})
}

func nextHopPassFixture(b *testing.B) (netlink.Link, []netip.Addr) {
	eth := underlayFixture(b)
	gwMAC, _ := net.ParseMAC("0e:00:00:00:00:01")
	must(b, netlink.NeighAdd(&netlink.Neigh{LinkIndex: eth.Attrs().Index, IP: net.ParseIP("192.168.50.1"),
		HardwareAddr: gwMAC, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}))
	peers := make([]netip.Addr, 5000)
	for i := range peers {
		peers[i] = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
	}
	return eth, peers
}

func nextHopPass(b *testing.B, r interface {
	NextHop(netip.Addr) (net.HardwareAddr, error)
}, peers []netip.Addr) {
	b.ReportAllocs()
	for b.Loop() {
		for _, ip := range peers {
			if mac, err := r.NextHop(ip); err != nil || mac == nil {
				b.Fatalf("NextHop(%s) = %v, %v", ip, mac, err)
			}
		}
	}
}

// TestCachedNextHopsBeforeWatching: until its neighbour subscription runs (the node reconciler's
// start-up pass), a neighbour resolved after a lookup is seen by the next one: nothing would
// report it (TestNextHopResolvedWithNeighbour in tests/e2e).
func TestCachedNextHopsBeforeWatching(t *testing.T) {
	netnstest.Run(t, func() {
		eth := underlayFixture(t)
		c := NewCachedNextHops(eth.Attrs().Index)
		peer := netip.MustParseAddr("192.168.50.3")
		if mac, err := c.NextHop(peer); mac != nil || err != nil {
			t.Fatalf("NextHop(%s) = %v, %v; want unresolved", peer, mac, err)
		}
		peerMAC, _ := net.ParseMAC("0e:00:00:00:00:03")
		must(t, netlink.NeighSet(&netlink.Neigh{LinkIndex: eth.Attrs().Index, IP: peer.AsSlice(),
			HardwareAddr: peerMAC, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}))
		if mac, err := c.NextHop(peer); err != nil || mac.String() != peerMAC.String() {
			t.Errorf("NextHop(%s) = %v, %v right after it resolved; want %s", peer, mac, err, peerMAC)
		}
	})
}

// watchCache runs c's subscriptions in this thread's network namespace until the returned stop
// is called, and returns once the route subscription runs.
func watchCache(t testing.TB, c *CachedNextHops) (stop func()) {
	here, err := netns.Get()
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the subscriptions are made in this thread's namespace
		if err := netns.Set(here); err != nil {
			done <- err
			return
		}
		done <- c.WatchResolved(ctx, func(netip.Addr, net.HardwareAddr) {})
	}()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		here.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, watched := c.RouteGeneration(); watched {
			return stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatal("route subscription not running")
		}
	}
}
