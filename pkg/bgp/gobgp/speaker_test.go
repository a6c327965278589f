package gobgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/bgp"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// The tests run real speakers in this process, peering over loopback addresses only: a
// "gateway" listening on 127.0.0.1 at a free high port, and "nodes" that do not listen and
// dial it from 127.0.0.2, 127.0.0.3 (a speaker has one session per peer address, so each node
// needs its own source address; the whole 127/8 is on lo).

const (
	gatewayASN = 65000
	node1ASN   = 65001
	node2ASN   = 65002
)

var (
	gatewayAddr = netip.MustParseAddr("127.0.0.1")
	node1Addr   = netip.MustParseAddr("127.0.0.2")
	node2Addr   = netip.MustParseAddr("127.0.0.3")
	podCIDR1    = netip.MustParsePrefix("10.244.1.0/24")
	podCIDR2    = netip.MustParsePrefix("10.244.2.0/24")
	podCIDR3    = netip.MustParsePrefix("10.244.3.0/24") // a non-speaking node's, announced by node 2
	node3IP     = netip.MustParseAddr("192.0.2.3")
)

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("BGP_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// freePort returns a TCP port free on addr now.
func freePort(t *testing.T, addr netip.Addr) int32 {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func start(t *testing.T, cfg bgp.Config) *Speaker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("starting speaker %s: %v", cfg.RouterID, err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("stopping speaker %s: %v", cfg.RouterID, err)
		}
	})
	return s
}

// lab is a gateway and its listening port.
type lab struct {
	gateway *Speaker
	port    uint16
}

func newLab(t *testing.T) *lab {
	port := freePort(t, gatewayAddr)
	gw := start(t, bgp.Config{
		RouterID: netip.MustParseAddr("192.0.2.254"), ASN: gatewayASN,
		ListenPort: port, ListenAddresses: []netip.Addr{gatewayAddr},
	})
	return &lab{gateway: gw, port: uint16(port)}
}

// gatewayPeer is the gateway's side of a session with a node: passive, since nodes do not listen.
func gatewayPeer(node netip.Addr, asn uint32, gr bool) bgp.PeerConfig {
	return bgp.PeerConfig{Address: node, ASN: asn, Passive: true, GracefulRestart: bgp.GracefulRestart{Enabled: gr}}
}

// nodePeer is a node's side of its session with the gateway.
func (l *lab) nodePeer(node netip.Addr, gr bgp.GracefulRestart) bgp.PeerConfig {
	return bgp.PeerConfig{Address: gatewayAddr, ASN: gatewayASN, Port: l.port, LocalAddress: node, GracefulRestart: gr}
}

func startNode(t *testing.T, node netip.Addr, asn uint32) *Speaker {
	return start(t, bgp.Config{RouterID: node, ASN: asn, ListenPort: -1})
}

func setPeer(t *testing.T, s *Speaker, p bgp.PeerConfig) {
	t.Helper()
	if err := s.SetPeer(t.Context(), p); err != nil {
		t.Fatal(err)
	}
}

func advertise(t *testing.T, s *Speaker, prefix netip.Prefix, nextHop netip.Addr) {
	t.Helper()
	if err := s.Advertise(prefix, nextHop); err != nil {
		t.Fatal(err)
	}
}

// peerStatus returns s's status of peer, and whether s has that peer.
func peerStatusOf(t *testing.T, s *Speaker, peer netip.Addr) (bgpstatus.PeerStatus, bool) {
	t.Helper()
	peers, err := s.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.Address == peer {
			return p, true
		}
	}
	return bgpstatus.PeerStatus{}, false
}

// eventually polls cond until it holds or 20 s pass; cond describes what it saw when it fails.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s; last seen: %s", what, saw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// routesString renders routes for comparisons and messages: "prefix via next-hop [as path] stale".
func routesString(routes []bgpstatus.Route) string {
	var parts []string
	for _, r := range routes {
		s := fmt.Sprintf("%s via %s %v", r.Prefix, r.NextHop, r.ASPath)
		if r.Stale {
			s += " stale"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// waitRoutes waits until s's routes received from peer render as want.
func waitRoutes(t *testing.T, s *Speaker, peer netip.Addr, want string) bgpstatus.PeerStatus {
	t.Helper()
	var st bgpstatus.PeerStatus
	eventually(t, fmt.Sprintf("routes from %s = %q", peer, want), func() (bool, string) {
		var ok bool
		st, ok = peerStatusOf(t, s, peer)
		got := routesString(st.ReceivedRoutes)
		return ok && got == want, fmt.Sprintf("state %s, routes %q", st.State, got)
	})
	return st
}

// waitPeer waits until s's status of peer has routes rendering as routes and satisfies cond:
// one snapshot must show both, since GoBGP lists a peer and its routes one after the other.
func waitPeer(t *testing.T, s *Speaker, peer netip.Addr, routes, what string, cond func(bgpstatus.PeerStatus) bool) bgpstatus.PeerStatus {
	t.Helper()
	var st bgpstatus.PeerStatus
	eventually(t, fmt.Sprintf("routes from %s = %q and %s", peer, routes, what), func() (bool, string) {
		var ok bool
		st, ok = peerStatusOf(t, s, peer)
		got := routesString(st.ReceivedRoutes)
		return ok && got == routes && cond(st), fmt.Sprintf("routes %q, %+v", got, st)
	})
	return st
}

func waitState(t *testing.T, s *Speaker, peer netip.Addr, want bgpstatus.SessionState) bgpstatus.PeerStatus {
	t.Helper()
	var st bgpstatus.PeerStatus
	eventually(t, fmt.Sprintf("session with %s %s", peer, want), func() (bool, string) {
		var ok bool
		st, ok = peerStatusOf(t, s, peer)
		return ok && st.State == want, fmt.Sprintf("known %v, state %s, last error %q", ok, st.State, st.LastError)
	})
	return st
}

func TestSessionsAdvertiseAndWithdraw(t *testing.T) {
	l := newLab(t)
	setPeer(t, l.gateway, gatewayPeer(node1Addr, node1ASN, false))
	setPeer(t, l.gateway, gatewayPeer(node2Addr, node2ASN, false))

	node1 := startNode(t, node1Addr, node1ASN)
	node2 := startNode(t, node2Addr, node2ASN)
	advertise(t, node1, podCIDR1, netip.Addr{})
	advertise(t, node2, podCIDR2, netip.Addr{})
	advertise(t, node2, podCIDR3, node3IP)
	setPeer(t, node1, l.nodePeer(node1Addr, bgp.GracefulRestart{}))
	setPeer(t, node2, l.nodePeer(node2Addr, bgp.GracefulRestart{}))

	// The gateway learns each node's pod CIDR with the node as next hop (next-hop-self), and
	// the CIDR node 2 announces for a non-speaking node with that node as next hop.
	waitPeer(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]", "established with node 1, 1 route received",
		func(st bgpstatus.PeerStatus) bool {
			return st.State == bgpstatus.StateEstablished && st.Received == 1 && st.ASN == node1ASN && st.RouterID == node1Addr
		})
	waitRoutes(t, l.gateway, node2Addr, "10.244.2.0/24 via 127.0.0.3 [65002], 10.244.3.0/24 via 192.0.2.3 [65002]")

	// The nodes' side: established, uptime running, what they advertise counted, nothing received.
	st := waitState(t, node2, gatewayAddr, bgpstatus.StateEstablished)
	if st.Advertised != 2 || st.Received != 0 || time.Duration(st.HoldTimeSeconds)*time.Second != bgp.DefaultHoldTime || st.Uptime(time.Now()) <= 0 {
		t.Errorf("node 2's view of the gateway: advertised %d, received %d, hold time %d s, uptime %v; want 2, 0, %v, > 0",
			st.Advertised, st.Received, st.HoldTimeSeconds, st.Uptime(time.Now()), bgp.DefaultHoldTime)
	}

	if since := time.Since(st.Since); since < 0 || since > time.Minute {
		t.Errorf("node 2's session established at %v, %v ago", st.Since, since)
	}

	// Setting an unchanged peer again leaves its session alone.
	setPeer(t, node2, l.nodePeer(node2Addr, bgp.GracefulRestart{}))
	if again := waitState(t, node2, gatewayAddr, bgpstatus.StateEstablished); !again.Since.Equal(st.Since) {
		t.Errorf("re-setting an unchanged peer restarted its session: established at %v, then at %v", st.Since, again.Since)
	}

	// A withdrawal reaches the gateway; the other routes stay.
	if err := node2.Withdraw(podCIDR3); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, l.gateway, node2Addr, "10.244.2.0/24 via 127.0.0.3 [65002]")

	// Converging on a desired set: a changed next hop is re-advertised, a missing prefix
	// withdrawn, a new one advertised.
	err := node2.SetAdvertisements(map[netip.Prefix]netip.Addr{
		podCIDR3:                               netip.MustParseAddr("192.0.2.33"),
		netip.MustParsePrefix("10.244.4.0/24"): {},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, l.gateway, node2Addr, "10.244.3.0/24 via 192.0.2.33 [65002], 10.244.4.0/24 via 127.0.0.3 [65002]")
	if got := node2.Advertisements(); len(got) != 2 || got[podCIDR3] != netip.MustParseAddr("192.0.2.33") {
		t.Errorf("node 2 advertises %v", got)
	}
	// Node 1's route was never disturbed.
	waitRoutes(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]")
}

func TestPeerRemovalWithdraws(t *testing.T) {
	l := newLab(t)
	var mu sync.Mutex
	var changes []bgp.SessionChange
	node1 := start(t, bgp.Config{RouterID: node1Addr, ASN: node1ASN, ListenPort: 0, OnSessionChange: func(c bgp.SessionChange) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, c)
	}})
	node2 := startNode(t, node2Addr, node2ASN)
	for _, n := range []struct {
		s    *Speaker
		addr netip.Addr
		asn  uint32
		cidr netip.Prefix
	}{{node1, node1Addr, node1ASN, podCIDR1}, {node2, node2Addr, node2ASN, podCIDR2}} {
		// Graceful restart on both sides: a removal must withdraw all the same (Hard Reset).
		gr := bgp.GracefulRestart{Enabled: true, Notification: true}
		setPeer(t, l.gateway, gatewayPeer(n.addr, n.asn, true))
		advertise(t, n.s, n.cidr, netip.Addr{})
		setPeer(t, n.s, l.nodePeer(n.addr, gr))
	}
	waitRoutes(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]")
	waitRoutes(t, l.gateway, node2Addr, "10.244.2.0/24 via 127.0.0.3 [65002]")

	// The node removes its gateway (the domain left route mode): the gateway drops the routes
	// at once, not as stale ones kept for a restart.
	if err := node1.RemovePeer(t.Context(), gatewayAddr); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the gateway drops node 1's session and routes, not as a restart", func() (bool, string) {
		st, _ := peerStatusOf(t, l.gateway, node1Addr)
		down := st.State != bgpstatus.StateEstablished && !st.PeerRestarting && st.Received == 0 && len(st.ReceivedRoutes) == 0
		return down, fmt.Sprintf("%+v", st)
	})
	if peers := node1.Peers(); len(peers) != 0 {
		t.Errorf("node 1 still has peers %v", peers)
	}
	if _, ok := peerStatusOf(t, node1, gatewayAddr); ok {
		t.Error("node 1's snapshot still lists the removed gateway")
	}
	eventually(t, "node 1 reports the session established, then lost", func() (bool, string) {
		mu.Lock()
		got := slices.Clone(changes)
		mu.Unlock()
		established := slices.IndexFunc(got, func(c bgp.SessionChange) bool { return c.State == bgpstatus.StateEstablished && c.Peer == gatewayAddr })
		lost := slices.IndexFunc(got, func(c bgp.SessionChange) bool { return c.Lost() && c.Peer == gatewayAddr && c.Reason != "" })
		return established >= 0 && lost > established, fmt.Sprintf("%+v", got)
	})

	// The gateway removes node 2 (the node left the domain): node 2's session goes down.
	if err := l.gateway.RemovePeer(t.Context(), node2Addr); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node 2's session down", func() (bool, string) {
		st, _ := peerStatusOf(t, node2, gatewayAddr)
		return st.State != bgpstatus.StateEstablished, string(st.State)
	})
	if _, ok := peerStatusOf(t, l.gateway, node2Addr); ok {
		t.Error("the gateway's snapshot still lists the removed node 2")
	}
	// Removing again is a no-op.
	if err := l.gateway.RemovePeer(t.Context(), node2Addr); err != nil {
		t.Errorf("removing a removed peer: %v", err)
	}
}

func TestPassword(t *testing.T) {
	l := newLab(t)
	gwPeer := gatewayPeer(node1Addr, node1ASN, false)
	gwPeer.Password = "s3cret"
	setPeer(t, l.gateway, gwPeer)
	node := startNode(t, node1Addr, node1ASN)
	advertise(t, node, podCIDR1, netip.Addr{})

	// A wrong key: the gateway's kernel drops the node's SYNs, no session.
	wrong := l.nodePeer(node1Addr, bgp.GracefulRestart{})
	wrong.Password = "guess"
	setPeer(t, node, wrong)
	time.Sleep(3 * time.Second)
	if st, _ := peerStatusOf(t, node, gatewayAddr); st.State == bgpstatus.StateEstablished {
		t.Fatal("session established with a wrong TCP-MD5 key")
	}

	// The right key, set as an update of the peer: the session comes up.
	right := wrong
	right.Password = gwPeer.Password
	setPeer(t, node, right)
	waitRoutes(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]")
	if got := node.Peers(); len(got) != 1 || got[0] != right {
		t.Errorf("node's peers %+v, want only %+v", got, right)
	}
}

func TestSetPeers(t *testing.T) {
	l := newLab(t)
	setPeer(t, l.gateway, gatewayPeer(node1Addr, node1ASN, false))
	node := startNode(t, node1Addr, node1ASN)
	advertise(t, node, podCIDR1, netip.Addr{})
	// A second gateway that does not exist: its session never comes up, which is no error.
	absent := bgp.PeerConfig{Address: netip.MustParseAddr("127.0.0.9"), ASN: 65009, Port: l.port, LocalAddress: node1Addr}
	gateway := l.nodePeer(node1Addr, bgp.GracefulRestart{})
	if err := node.SetPeers(t.Context(), []bgp.PeerConfig{gateway, absent}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]")
	if got := node.Peers(); len(got) != 2 {
		t.Errorf("peers %+v, want the gateway and the absent one", got)
	}

	// A duplicate is refused before anything changes.
	err := node.SetPeers(t.Context(), []bgp.PeerConfig{gateway, gateway})
	if !errors.Is(err, bgp.ErrInvalidConfig) || !strings.Contains(err.Error(), "peer 127.0.0.1 is listed twice") {
		t.Errorf("SetPeers with a duplicate: %v", err)
	}
	if got := node.Peers(); len(got) != 2 {
		t.Errorf("a refused SetPeers changed the peers to %+v", got)
	}

	// Dropping the gateway from the list withdraws the routes it had.
	if err := node.SetPeers(t.Context(), []bgp.PeerConfig{absent}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, l.gateway, node1Addr, "")
	if got := node.Peers(); len(got) != 1 || got[0] != absent {
		t.Errorf("peers %+v, want only %+v", got, absent)
	}
}
