package gobgp

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/bgp"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// TestGracefulRestart stops a node's speaker as a crash would and starts a new one: the gateway
// keeps the node's routes, marked stale, while it is away, then takes the new speaker's routes
// as fresh and drops the one it no longer advertises.
func TestGracefulRestart(t *testing.T) {
	l := newLab(t)
	setPeer(t, l.gateway, gatewayPeer(node1Addr, node1ASN, true))
	gr := bgp.GracefulRestart{Enabled: true, RestartTime: 30 * time.Second}

	before := startNode(t, node1Addr, node1ASN)
	advertise(t, before, podCIDR1, netip.Addr{})
	advertise(t, before, podCIDR3, node3IP) // the node stops announcing this one across the restart
	setPeer(t, before, l.nodePeer(node1Addr, gr))
	waitPeer(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001], 10.244.3.0/24 via 192.0.2.3 [65001]",
		"graceful restart negotiated", func(st bgpstatus.PeerStatus) bool { return st.GracefulRestart })

	if err := before.StopForRestart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001] stale, 10.244.3.0/24 via 192.0.2.3 [65001] stale",
		"the node restarting", func(st bgpstatus.PeerStatus) bool {
			return st.PeerRestarting && st.State != bgpstatus.StateEstablished
		})

	// The restarted agent advertises first, then adds its peer (see the package comment).
	after := startNode(t, node1Addr, node1ASN)
	advertise(t, after, podCIDR1, netip.Addr{})
	setPeer(t, after, l.nodePeer(node1Addr, gr))
	waitPeer(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]", "the node back, not restarting",
		func(st bgpstatus.PeerStatus) bool {
			return st.State == bgpstatus.StateEstablished && !st.PeerRestarting
		})
}

// TestStopWithdraws is graceful restart's counterpart: Stop (uninstall) tells the peers, which
// drop the routes at once instead of keeping them stale.
func TestStopWithdraws(t *testing.T) {
	l := newLab(t)
	// Both ends support RFC 8538, under which any NOTIFICATION but Hard Reset keeps the routes.
	gw := gatewayPeer(node1Addr, node1ASN, true)
	gw.GracefulRestart.Notification = true
	setPeer(t, l.gateway, gw)
	node := startNode(t, node1Addr, node1ASN)
	advertise(t, node, podCIDR1, netip.Addr{})
	setPeer(t, node, l.nodePeer(node1Addr, bgp.GracefulRestart{Enabled: true, Notification: true}))
	waitRoutes(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]")

	if err := node.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, l.gateway, node1Addr, "", "the node not treated as restarting", func(st bgpstatus.PeerStatus) bool {
		return !st.PeerRestarting
	})
	if err := node.Advertise(podCIDR2, netip.Addr{}); !errors.Is(err, bgp.ErrStopped) {
		t.Errorf("a stopped speaker's Advertise: %v, want bgp.ErrStopped", err)
	}
	if err := node.Stop(t.Context()); err != nil {
		t.Errorf("stopping a stopped speaker: %v", err)
	}
}

// TestLongLivedGracefulRestart restarts two nodes whose restart time is 1 s: the gateway drops
// the routes of the one without long-lived graceful restart when that second has passed, and
// keeps the other's, stale, for its long-lived stale time.
func TestLongLivedGracefulRestart(t *testing.T) {
	l := newLab(t)
	longLived := bgp.GracefulRestart{Enabled: true, RestartTime: time.Second, LongLivedStaleTime: time.Minute}
	gw1 := gatewayPeer(node1Addr, node1ASN, true)
	gw1.GracefulRestart = bgp.GracefulRestart{Enabled: true, LongLivedStaleTime: time.Minute}
	setPeer(t, l.gateway, gw1)
	setPeer(t, l.gateway, gatewayPeer(node2Addr, node2ASN, true))

	node1 := startNode(t, node1Addr, node1ASN)
	advertise(t, node1, podCIDR1, netip.Addr{})
	setPeer(t, node1, l.nodePeer(node1Addr, longLived))
	node2 := startNode(t, node2Addr, node2ASN)
	advertise(t, node2, podCIDR2, netip.Addr{})
	setPeer(t, node2, l.nodePeer(node2Addr, bgp.GracefulRestart{Enabled: true, RestartTime: time.Second}))
	waitRoutes(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]")
	waitRoutes(t, l.gateway, node2Addr, "10.244.2.0/24 via 127.0.0.3 [65002]")

	for _, n := range []*Speaker{node1, node2} {
		if err := n.StopForRestart(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	waitRoutes(t, l.gateway, node2Addr, "") // restart time over
	time.Sleep(2 * time.Second)
	waitRoutes(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001] stale")
}
