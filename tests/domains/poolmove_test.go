package domains

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// probeResult is one TCP connect of a prober.
type probeResult struct {
	pair pair
	at   time.Time
	took time.Duration
	err  error
}

func (r probeResult) String() string {
	return fmt.Sprintf("%s->%s at %s after %v: %v", r.pair.src, r.pair.dst, r.at.Format("15:04:05.000"), r.took.Round(time.Millisecond), r.err)
}

// silent reports whether the connect ended without an answer: a timeout.
func (r probeResult) silent() bool {
	var ne net.Error
	return r.err != nil && errors.As(r.err, &ne) && ne.Timeout()
}

// probeContinuously connects from src's pod to dst's echo port again and again (connect only:
// an exchange already established when the connectivity changes under it sees no error, by
// TCP's design, whatever the datapath does) until ctx ends.
func (c *cluster) probeContinuously(ctx context.Context, src, dst string, timeout time.Duration, out chan<- probeResult) {
	to := netip.AddrPortFrom(c.pod(dst).IP, echoPort)
	for ctx.Err() == nil {
		start := time.Now()
		conn, err := lab.DialTCP(c.pod(src).Netns, to, timeout)
		if err == nil {
			conn.Close()
		}
		out <- probeResult{pair{src, dst}, start, time.Since(start), err}
		time.Sleep(time.Millisecond)
	}
}

// TestPoolMoveFailsFast (issue 12, item 2): a node's pool moves so that its pairs with every other
// node become public, and back, while pods probe across those pairs continuously. The nodes
// apply each move one after the other; in between, a receiving node that applied it first
// answers the sender's packets through the tunnel. No probe may time out silently: each one
// connects or fails fast with EHOSTUNREACH.
func TestPoolMoveFailsFast(t *testing.T) {
	c := build(t)
	c.setConfig(t, privateLine)
	c.converge(t, cloudSiteA)
	t.Cleanup(func() { c.setPool(t, "a2", lab.DomainSiteA) })

	const timeout = 500 * time.Millisecond // below TCP's 1 s SYN retransmission: a silent drop times out
	pairs := []pair{{"a1", "a2"}, {"a2", "a1"}, {"c1", "a2"}, {"a2", "c1"}}
	results := make(chan probeResult, 1024)
	ctx, stop := context.WithCancel(t.Context())
	var probers sync.WaitGroup
	for _, p := range pairs {
		for range 2 { // two probers a pair: more connects land in the windows
			probers.Go(func() { c.probeContinuously(ctx, p.src, p.dst, timeout, results) })
		}
	}
	var all []probeResult
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for r := range results {
			all = append(all, r)
		}
	}()

	applied := c.watchRoutes(ctx, t, "a2")
	answersBefore := c.counter(t, metricsmap.DirOverlayIn, dropreason.ICMPSent)
	dropsBefore := c.drops(t)
	const moves = 3
	var cut, restored []time.Duration
	var patched []time.Time // when each pool change was written, moves and returns alternating
	for range moves {
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		patched = append(patched, start)
		c.setPool(t, "a2", "site-c") // a domain of its own: public to every other
		waitTCP(t, c.pod("a1"), c.pod("a2"), false)
		waitTCP(t, c.pod("a2"), c.pod("a1"), false)
		cut = append(cut, time.Since(start))
		time.Sleep(200 * time.Millisecond)
		start = time.Now()
		patched = append(patched, start)
		c.setPool(t, "a2", lab.DomainSiteA)
		waitTCP(t, c.pod("a1"), c.pod("a2"), true)
		waitTCP(t, c.pod("a2"), c.pod("a1"), true)
		restored = append(restored, time.Since(start))
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	probers.Wait()
	close(results)
	<-collected
	changes := <-applied
	windows := applyWindows(t, changes, patched, []string{"a1", "a2", "c1", "c2"})
	answers := c.counter(t, metricsmap.DirOverlayIn, dropreason.ICMPSent) - answersBefore
	var dropped []string
	for k, n := range c.drops(t) {
		if d := n - dropsBefore[k]; d > 0 {
			dropped = append(dropped, fmt.Sprintf("%s +%d", k, d))
		}
	}
	slices.Sort(dropped)
	t.Logf("drops during the moves: %s", strings.Join(dropped, ", "))

	var ok, failed int
	var slowest time.Duration
	var silent, other []string
	for _, r := range all {
		switch {
		case r.err == nil:
			ok++
		case r.silent():
			silent = append(silent, r.String())
		case !errors.Is(r.err, syscall.EHOSTUNREACH):
			other = append(other, r.String())
		default:
			failed++
			slowest = max(slowest, r.took)
		}
	}
	t.Logf("%d probes over %d moves and back: %d connected, %d failed with EHOSTUNREACH (slowest %v), %d timed out, %d other errors",
		len(all), moves, ok, failed, slowest.Round(time.Microsecond), len(silent), len(other))
	t.Logf("move to public took effect for both directions in %v, back to private in %v (probed with 1 s TCP timers)", cut, restored)
	t.Logf("packets caught between the two nodes' updates and answered through the tunnel: %d", answers)
	t.Logf("each change reached the first node's maps and the last one's (a1, a2, c1, c2) after: %s", strings.Join(windows, "; "))
	if failed == 0 || ok == 0 {
		t.Errorf("the probes should both connect and fail across the moves")
	}
	if len(silent) > 0 {
		t.Errorf("%d probes timed out silently (want each to connect or fail fast):\n  %s", len(silent), strings.Join(silent, "\n  "))
	}
	if len(other) > 0 {
		t.Errorf("%d probes failed otherwise than EHOSTUNREACH:\n  %s", len(other), strings.Join(other, "\n  "))
	}
}

// routeChange is one node's routes_map entry for a pod CIDR taking a new value.
type routeChange struct {
	at    time.Time
	node  string
	route lab.Route
}

// watchRoutes polls, until ctx ends, every node's routes_map entries that a pool move of node
// moved changes: the moved node's route on every other node (its domain, and its tunnel endpoint
// between private and public address), and on the moved node its own route and those to every
// other node. The changes come out of the returned channel once ctx ends.
func (c *cluster) watchRoutes(ctx context.Context, t *testing.T, moved string) <-chan []routeChange {
	t.Helper()
	out := make(chan []routeChange, 1)
	last := map[string]lab.Route{}
	var changes []routeChange
	poll := func() {
		now := time.Now()
		for _, n := range c.nodes {
			routes, err := n.Routes()
			if err != nil {
				t.Error(err)
				return
			}
			for cidr, r := range routes {
				if n.Name != moved && cidr != c.node(moved).PodCIDR {
					continue // another node's route to a node other than the moved one
				}
				k := n.Name + " " + cidr.String()
				if old, seen := last[k]; seen && old != r {
					changes = append(changes, routeChange{now, n.Name, r})
				}
				last[k] = r
			}
		}
	}
	poll()
	go func() {
		for ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond)
			poll()
		}
		out <- changes
	}()
	return out
}

// applyWindows describes, for each pool change written at patched[i], when its route changes
// (those until the next change) reached the first and the last of nodes: "+first..+last (window
// last-first)". Each node must have applied each change.
func applyWindows(t *testing.T, changes []routeChange, patched []time.Time, nodes []string) []string {
	t.Helper()
	var out []string
	for i, start := range patched {
		end := time.Now()
		if i+1 < len(patched) {
			end = patched[i+1]
		}
		first := map[string]time.Time{}
		var lo, hi time.Time
		for _, ch := range changes {
			if ch.at.Before(start) || !ch.at.Before(end) {
				continue
			}
			if _, seen := first[ch.node]; !seen {
				first[ch.node] = ch.at
			}
			if lo.IsZero() || ch.at.Before(lo) {
				lo = ch.at
			}
			if ch.at.After(hi) {
				hi = ch.at
			}
		}
		for _, n := range nodes {
			if _, ok := first[n]; !ok {
				t.Errorf("pool change %d: no route of %s changed", i+1, n)
			}
		}
		if lo.IsZero() {
			out = append(out, "none")
			continue
		}
		out = append(out, fmt.Sprintf("+%v..+%v (window %v)", lo.Sub(start).Round(time.Millisecond),
			hi.Sub(start).Round(time.Millisecond), hi.Sub(lo).Round(time.Millisecond)))
	}
	return out
}

// drops sums every node's drop and ICMP counters by "direction reason".
func (c *cluster) drops(t *testing.T) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, n := range c.nodes {
		m, err := n.Counters()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range m {
			if r := dropreason.Reason(k.Reason); r != dropreason.Forwarded {
				out[fmt.Sprintf("%v %v", k.Dir, r)] += v.Packets
			}
		}
	}
	return out
}
