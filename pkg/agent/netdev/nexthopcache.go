package netdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/internal/ipmap"
)

// CachedNextHops is NextHops for the node reconciler's periodic pass over thousands of peers
// (every resync period, most of them unchanged): instead of a route lookup and a neighbour dump
// per peer, it remembers each tunnel endpoint's hop (the endpoint itself or its gateway) while a
// route notification subscription says no route changed, and reads the underlay's neighbours
// once for all the lookups of neighbourTTL while the neighbour subscription runs, again after
// any neighbour notification of the underlay. Without a running WatchResolved (the node
// reconciler's start-up pass comes before it) it asks the kernel every time, as NextHops does:
// a neighbour resolved before the subscription would otherwise stay unseen until the TTL ends
// and nothing would ask again.
type CachedNextHops struct {
	NextHops

	mu sync.Mutex
	// routesWatched is set while the route subscription runs: only then are hops kept.
	routesWatched bool
	routeGen      uint64               // counts route notifications
	hops          ipmap.Map[hopResult] // by tunnel endpoint
	// neighboursWatched is set while the neighbour subscription runs: only then are they kept.
	neighboursWatched bool
	// neighbours is the underlay's resolved neighbours as listed at neighboursAt; nil: list again.
	neighbours   map[netip.Addr]net.HardwareAddr
	neighboursAt time.Time
	// counts of what was asked of the kernel, for the tests
	routeLookups, neighbourLists int
}

type hopResult struct {
	hop   netip.Addr
	cause error // the routing table's answer when the route does not leave through the underlay (routeError's)
}

// neighbourTTL bounds how long a listing of the neighbours answers when a notification was
// missed (the subscription overran): a pass over 5,000 peers takes well under it.
const neighbourTTL = time.Second

// NewCachedNextHops returns the resolver for the underlay with ifindex underlay.
func NewCachedNextHops(underlay int) *CachedNextHops {
	c := &CachedNextHops{}
	c.NextHops = NextHops{UnderlayIndex: underlay, seen: c.neighbourChanged, watching: c.neighboursWatching}
	return c
}

// NextHop is NextHops.NextHop from what is cached where it can be.
func (c *CachedNextHops) NextHop(ip netip.Addr) (net.HardwareAddr, error) {
	h, err := c.hop(ip)
	if err != nil {
		return nil, err
	}
	mac, err := c.neighbour(h)
	if err != nil || mac != nil {
		return mac, err
	}
	return nil, c.solicit(h)
}

func (c *CachedNextHops) hop(ip netip.Addr) (netip.Addr, error) {
	c.mu.Lock()
	r, ok := c.hops.Get(ip)
	gen, watched := c.routeGen, c.routesWatched
	if !ok {
		c.routeLookups++
	}
	c.mu.Unlock()
	if ok {
		if r.cause != nil {
			return r.hop, &routeError{ip, r.cause}
		}
		return r.hop, nil
	}
	h, cause := c.routeCause(ip)
	if cause != nil && !isRoutingAnswer(cause) {
		return h, &routeError{ip, cause} // not an answer to remember
	}
	c.mu.Lock()
	if watched && c.routesWatched && c.routeGen == gen {
		c.hops.Set(ip, hopResult{h, cause})
	}
	c.mu.Unlock()
	if cause != nil {
		return h, &routeError{ip, cause}
	}
	return h, nil
}

// CachedHop is the neighbour that resolves ip's next hop as last looked up (ip itself, or its
// gateway), from the cache alone: known is false when no answer is kept (none was looked up since
// the last route change, or routes are not watched); hop is the zero Addr when the route does not
// leave through the underlay, which no neighbour resolves.
func (c *CachedNextHops) CachedHop(ip netip.Addr) (hop netip.Addr, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.hops.Get(ip)
	if !ok {
		return netip.Addr{}, false
	}
	if r.cause != nil {
		return netip.Addr{}, true
	}
	return r.hop, true
}

func (c *CachedNextHops) neighbour(hop netip.Addr) (net.HardwareAddr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.neighboursWatched {
		c.neighbourLists++
		all, err := c.resolvedNeighbours()
		return all[hop], err
	}
	// Listed under the lock: a notification of a change after the listing empties the cache
	// after it is stored, not before.
	if c.neighbours == nil || time.Since(c.neighboursAt) > neighbourTTL {
		all, err := c.resolvedNeighbours()
		if err != nil {
			return nil, err
		}
		c.neighbours, c.neighboursAt = all, time.Now()
		c.neighbourLists++
	}
	return c.neighbours[hop], nil
}

// neighbourChanged is called for every neighbour notification of the underlay.
func (c *CachedNextHops) neighbourChanged() {
	c.mu.Lock()
	c.neighbours = nil
	c.mu.Unlock()
}

// neighboursWatching is called when the neighbour subscription starts (on) and ends: what was
// listed before it started may have missed a notification.
func (c *CachedNextHops) neighboursWatching(on bool) {
	c.mu.Lock()
	c.neighboursWatched, c.neighbours = on, nil
	c.mu.Unlock()
}

func (c *CachedNextHops) routesChanged(watched bool) {
	c.mu.Lock()
	c.routeGen++
	c.routesWatched = watched
	c.hops.Clear()
	c.mu.Unlock()
}

// WatchResolved is NextHops.WatchResolved, which also keeps the neighbour cache, with the route
// subscription that keeps the hops, until ctx is done.
func (c *CachedNextHops) WatchResolved(ctx context.Context, resolved func(netip.Addr, net.HardwareAddr)) error {
	// The route subscription is made from another goroutine, in the network namespace of this
	// one (where the neighbour subscription is made).
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("finding the network namespace for route notifications: %w", err)
	}
	defer ns.Close()
	var routes sync.WaitGroup
	routes.Go(func() { c.watchRoutes(ctx, ns) })
	defer routes.Wait()
	return c.NextHops.WatchResolved(ctx, resolved)
}

// watchRoutes forgets every hop at each IPv4 route notification, and keeps none while it is not
// subscribed.
func (c *CachedNextHops) watchRoutes(ctx context.Context, ns netns.NsHandle) {
	logger := klog.FromContext(ctx)
	defer c.routesChanged(false)
	for {
		updates := make(chan netlink.RouteUpdate, 256)
		done := make(chan struct{})
		err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{
			Namespace:     &ns,
			ErrorCallback: func(err error) { logger.V(2).Info("Route notifications", "err", err) },
		})
		if err != nil {
			logger.Error(err, "Subscribing to route notifications; next hops are looked up for every peer")
			return
		}
		c.routesChanged(true)
	forward:
		for {
			select {
			case <-ctx.Done():
				break forward
			case _, ok := <-updates:
				if !ok {
					break forward
				}
				c.routesChanged(true)
			}
		}
		c.routesChanged(false)
		close(done)
		go func() { // let the library's reader see done and close the channel
			for range updates {
			}
		}()
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Lookups is how many route lookups and neighbour listings were asked of the kernel.
func (c *CachedNextHops) Lookups() (routes, neighbourLists int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routeLookups, c.neighbourLists
}

// RouteGeneration counts the route notifications seen; watched is false while the route
// subscription is not running (then the count says nothing about the kernel's routes).
func (c *CachedNextHops) RouteGeneration() (gen uint64, watched bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routeGen, c.routesWatched
}

// isRoutingAnswer: err is what the routing table says about the address (no route, unreachable,
// through another interface), which holds until a route changes; other errors (the netlink
// socket's) are not remembered.
func isRoutingAnswer(err error) bool {
	return isRouteElsewhere(err) || errors.Is(err, errNoRoute) ||
		errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH)
}
