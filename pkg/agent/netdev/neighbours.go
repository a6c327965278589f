package netdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// NextHops resolves outer destination MACs from the kernel's routes and neighbour table.
type NextHops struct {
	UnderlayIndex int
	// seen, when set, is called for every neighbour notification of the underlay that
	// WatchResolved receives, and watching when its subscription starts (true) and ends (false)
	// (CachedNextHops).
	seen     func()
	watching func(bool)
}

const resolvedStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// NextHop returns the MAC of the next hop toward ip on the underlay: ip itself when on-link, else
// the gateway. When the kernel has no usable entry yet it asks the kernel to resolve one (NTF_USE)
// and returns nil: the next resync picks the answer up.
func (n NextHops) NextHop(ip netip.Addr) (net.HardwareAddr, error) {
	hop, err := n.route(ip)
	if err != nil {
		return nil, err
	}
	neighs, err := n.resolvedNeighbours()
	if err != nil {
		return nil, err
	}
	if mac, ok := neighs[hop]; ok {
		return mac, nil
	}
	return nil, n.solicit(hop)
}

var errNoRoute = errors.New("no route")

// errRouteElsewhere: the kernel routes the address through another interface than the underlay.
type errRouteElsewhere struct {
	ifindex  int
	underlay int
}

func (e errRouteElsewhere) Error() string {
	return fmt.Sprintf("it leaves through ifindex %d, not the underlay (%d)", e.ifindex, e.underlay)
}

func isRouteElsewhere(err error) bool {
	var e errRouteElsewhere
	return errors.As(err, &e)
}

// routeError is route's error for one address. The cause (the netlink request's error, or the
// routing table's answer: errNoRoute, errRouteElsewhere, an errno) does not name the address, so
// that the next hop cache keeps one value a peer and formats the message only when read.
type routeError struct {
	ip    netip.Addr
	cause error
}

func (e *routeError) Error() string { return fmt.Sprintf("route to %s: %v", e.ip, e.cause) }
func (e *routeError) Unwrap() error { return e.cause }

// route returns the hop toward ip on the underlay: ip itself when on-link, else the gateway.
func (n NextHops) route(ip netip.Addr) (netip.Addr, error) {
	hop, cause := n.routeCause(ip)
	if cause != nil {
		return netip.Addr{}, &routeError{ip, cause}
	}
	return hop, nil
}

// routeCause is route without the address in its error.
func (n NextHops) routeCause(ip netip.Addr) (netip.Addr, error) {
	routes, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return netip.Addr{}, err
	}
	if len(routes) == 0 {
		return netip.Addr{}, errNoRoute
	}
	r := routes[0]
	if r.LinkIndex != n.UnderlayIndex {
		return netip.Addr{}, errRouteElsewhere{r.LinkIndex, n.UnderlayIndex}
	}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		return gw.Unmap(), nil
	}
	return ip, nil
}

// resolvedNeighbours lists the underlay's neighbours whose MAC the kernel holds.
func (n NextHops) resolvedNeighbours() (map[netip.Addr]net.HardwareAddr, error) {
	neighs, err := netlink.NeighList(n.UnderlayIndex, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours: %w", err)
	}
	out := make(map[netip.Addr]net.HardwareAddr, len(neighs))
	for _, nb := range neighs {
		if a, ok := netip.AddrFromSlice(nb.IP); ok && nb.State&resolvedStates != 0 && len(nb.HardwareAddr) == 6 {
			out[a.Unmap()] = nb.HardwareAddr
		}
	}
	return out, nil
}

// WatchResolved calls resolved with the address and MAC of every underlay neighbour the kernel
// resolves or changes (netlink neighbour notifications of this network namespace), until ctx is
// done. Every subscription, the first and each one after a break (the socket overran), lists
// the existing entries too, so that nothing resolved before it is missed: the node reconciler
// looks its next hops up in its start-up pass, before it watches, and a neighbour resolved in
// between would stay unknown to it until its periodic pass.
func (n NextHops) WatchResolved(ctx context.Context, resolved func(netip.Addr, net.HardwareAddr)) error {
	logger := klog.FromContext(ctx)
	for {
		updates := make(chan netlink.NeighUpdate, 256)
		done := make(chan struct{})
		err := netlink.NeighSubscribeWithOptions(updates, done, netlink.NeighSubscribeOptions{
			ListExisting:  true,
			ErrorCallback: func(err error) { logger.V(2).Info("Neighbour notifications", "err", err) },
		})
		if err != nil {
			return fmt.Errorf("subscribing to neighbour notifications: %w", err)
		}
		if n.watching != nil {
			n.watching(true)
		}
		n.forward(ctx, updates, resolved)
		if n.watching != nil {
			n.watching(false)
		}
		close(done)
		// the library's reader may be blocked sending to a full channel: let it see done and
		// close the channel
		go func() {
			for range updates {
			}
		}()
		if ctx.Err() != nil {
			return nil
		}
		logger.Info("Neighbour notifications stopped; subscribing again")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// forward passes resolved underlay neighbours on until ctx is done or updates closes: each address
// once per MAC it resolves to. The kernel also notifies every state change of a resolved entry
// (reachable, stale, delay, probe: every 30-60 s per active neighbour) with the same MAC; passed on,
// each would requeue every peer still unresolved (a route lookup and an ARP probe each).
func (n NextHops) forward(ctx context.Context, updates <-chan netlink.NeighUpdate, resolved func(netip.Addr, net.HardwareAddr)) {
	known := map[netip.Addr]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			if u.LinkIndex != n.UnderlayIndex || u.Family != netlink.FAMILY_V4 {
				continue
			}
			if n.seen != nil {
				n.seen()
			}
			ip, ok := netip.AddrFromSlice(u.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if u.Type != unix.RTM_NEWNEIGH || u.State&resolvedStates == 0 || len(u.HardwareAddr) != 6 {
				delete(known, ip) // gone or failed: its next resolution is news again
				continue
			}
			if mac := string(u.HardwareAddr); known[ip] != mac {
				known[ip] = mac
				resolved(ip, u.HardwareAddr)
			}
		}
	}
}

// solicit asks the kernel to resolve hop as if a packet were sent to it.
func (n NextHops) solicit(hop netip.Addr) error {
	err := netlink.NeighSet(&netlink.Neigh{LinkIndex: n.UnderlayIndex, Family: netlink.FAMILY_V4, IP: hop.AsSlice(), Flags: netlink.NTF_USE})
	if err != nil {
		return fmt.Errorf("soliciting neighbour %s: %w", hop, err)
	}
	return nil
}

// Links answers the pod garbage collector's questions about interfaces.
type Links struct{}

// NameOf is the name of the interface with ifindex.
func (Links) NameOf(ifindex int) (string, bool, error) {
	l, err := netlink.LinkByIndex(ifindex)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) || isNoDevice(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("looking up ifindex %d: %w", ifindex, err)
	}
	return l.Attrs().Name, true, nil
}

// Exists says whether an interface is called name.
func (Links) Exists(name string) (bool, error) {
	_, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) || isNoDevice(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking up %s: %w", name, err)
	}
	return true, nil
}

func isNoDevice(err error) bool { return errors.Is(err, unix.ENODEV) }
