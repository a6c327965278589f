package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// nextHopLimit is how soon after a node's agent is ready its nodes_map must hold the next-hop MAC
// of a peer on its segment (and the peers' the new node's): the kernel resolves the neighbour in
// milliseconds, and the agent follows its notifications. Without them the MAC waited for the next
// resync, 30 s.
const nextHopLimit = 3 * time.Second

// TestNextHopResolvedWithNeighbour (issue 12, item 7): a node joins a segment whose peers its
// kernel has never talked to; the next-hop MACs in its nodes_map (and in the peers' entries for it)
// are filled as soon as the neighbours are resolved, not at the next resync.
func TestNextHopResolvedWithNeighbour(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	n, err := l.AddNode(ctx, "nexthop", 8, lab.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNode(t, n) })
	tReady := time.Now()

	macOf := func(node *lab.Node) [6]byte {
		t.Helper()
		out, err := node.Netns.IP(ctx, "-br", "link", "show", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		fields := strings.Fields(out)
		if len(fields) < 3 {
			t.Fatalf("ip -br link on %s: %q", node.Name, out)
		}
		mac, err := net.ParseMAC(fields[2])
		if err != nil {
			t.Fatal(err)
		}
		return [6]byte(mac)
	}
	nextHop := func(on, peer *lab.Node, want [6]byte) func() error {
		return func() error {
			entries, err := on.RemoteNodes()
			if err != nil {
				return err
			}
			e, ok := entries[peer.IP]
			if !ok {
				return fmt.Errorf("%s has no nodes_map entry for %s", on.Name, peer.Name)
			}
			if e.NextHopMAC != want {
				return fmt.Errorf("%s's next hop toward %s is %v, want %v", on.Name, peer.Name, net.HardwareAddr(e.NextHopMAC[:]), net.HardwareAddr(want[:]))
			}
			return nil
		}
	}
	newMAC := macOf(n)
	for _, peer := range shared.nodes {
		took, err := eventually(nextHopLimit, nextHop(n, peer, macOf(peer)))
		if err != nil {
			neigh, _ := n.Netns.IP(ctx, "neigh", "show", "dev", "eth0")
			t.Errorf("%v after the agent was ready: %v; %s's neighbours:\n%s", time.Since(tReady).Round(time.Millisecond), err, n.Name, neigh)
			continue
		}
		t.Logf("%s -> %s next hop filled %v after the agent was ready (waited %v)", n.Name, peer.Name, time.Since(tReady).Round(time.Millisecond), took.Round(time.Millisecond))
		if _, err := eventually(nextHopLimit, nextHop(peer, n, newMAC)); err != nil {
			t.Errorf("%v after the new agent was ready: %v", time.Since(tReady).Round(time.Millisecond), err)
		}
	}
}
