package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks the kernel routes edgeplane owns (`ip route show proto 237`), so that it
// finds and removes its own and never touches anybody else's.
const RouteProtocol netlink.RouteProtocol = 237

// HostRoute is a kernel route the agent keeps for a peer's pod CIDR so that the host stack (host
// sockets, and cloud hosts' traffic a node forwards) fares like pods: Unreachable for a domain
// this node cannot reach (senders get "host unreachable" at once), or Via the cloud gateway. The
// node reconciler (pkg/controller) decides them; HostRoutes puts them in the kernel.
type HostRoute struct {
	Unreachable bool
	Via         netip.Addr
}

// HostRoutes keeps the main table's edgeplane routes for peers' pod CIDRs (HostRoute):
// "unreachable" routes, and routes through the cloud gateway on the underlay NIC.
type HostRoutes struct {
	UnderlayIndex int
}

// Sync makes the routes with RouteProtocol equal to want.
func (h HostRoutes) Sync(want map[netip.Prefix]HostRoute) error {
	// Compared as the dump is read: at 5,000 nodes in 20 domains the table holds ~4,750 of them,
	// and only the few that are wrong are kept, to delete once the dump is over.
	var stale []ownRoute
	err := walkOwnRoutes(func(r ownRoute) {
		if w, wanted := want[r.dst]; wanted && r.dst.IsValid() && r.matches(w, h.UnderlayIndex) {
			delete(want, r.dst) // already right
			return
		}
		stale = append(stale, r)
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range stale {
		if err := netlink.RouteDel(r.route()); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("removing route %s: %w", r.dst, err))
		}
	}
	for p, w := range want {
		r := netlink.Route{
			Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
			Protocol: RouteProtocol,
			Table:    unix.RT_TABLE_MAIN,
		}
		if w.Unreachable {
			r.Type = unix.RTN_UNREACHABLE
		} else {
			r.Gw = w.Via.AsSlice()
			r.LinkIndex = h.UnderlayIndex
		}
		if err := netlink.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("adding route %s (%+v): %w", p, w, err))
		}
	}
	return errors.Join(errs...)
}

// DeleteHostRoutes removes every route edgeplane added (edgeplane-agent --uninstall).
func DeleteHostRoutes() (int, error) {
	have, err := ownRoutes()
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, r := range have {
		if err := netlink.RouteDel(r.route()); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("removing route %s: %w", r.dst, err))
		}
	}
	return len(have), errors.Join(errs...)
}

// ownRoute is one of edgeplane's host routes as listed: what Sync compares and what deleting
// it names. At 5,000 nodes in 20 domains the main table holds ~4,750 of them, listed at every
// domains pass that syncs them; netlink.Route takes 376 bytes and a few allocations a route.
type ownRoute struct {
	dst        netip.Prefix
	gw         netip.Addr
	linkIndex  int
	priority   int
	routeType  uint8
	scope, tos uint8
}

// ownRoutes lists edgeplane's host routes in the main table.
func ownRoutes() ([]ownRoute, error) {
	var out []ownRoute
	if err := walkOwnRoutes(func(r ownRoute) { out = append(out, r) }); err != nil {
		return nil, err
	}
	return out, nil
}

// walkOwnRoutes visits edgeplane's host routes in the main table as the kernel's dump is read;
// fn must not change routes (the dump is still being read).
func walkOwnRoutes(fn func(ownRoute)) error {
	err := netlink.RouteListFilteredIter(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL, func(r netlink.Route) bool {
			dst, _ := prefixOf(r.Dst) // none: a default route, removed by Sync
			gw, _ := netip.AddrFromSlice(r.Gw)
			fn(ownRoute{dst: dst, gw: gw.Unmap(), linkIndex: r.LinkIndex, priority: r.Priority,
				routeType: uint8(r.Type), scope: uint8(r.Scope), tos: uint8(r.Tos)})
			return true
		})
	if err != nil {
		return fmt.Errorf("listing edgeplane's host routes: %w", err)
	}
	return nil
}

// route is the route as netlink deletes it: the fields the kernel matches a route by.
func (r ownRoute) route() *netlink.Route {
	nr := &netlink.Route{
		Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, Type: int(r.routeType),
		Scope: netlink.Scope(r.scope), Tos: int(r.tos), Priority: r.priority, LinkIndex: r.linkIndex,
	}
	if r.dst.IsValid() {
		nr.Dst = &net.IPNet{IP: r.dst.Addr().AsSlice(), Mask: net.CIDRMask(r.dst.Bits(), 32)}
	}
	if r.gw.IsValid() {
		nr.Gw = r.gw.AsSlice()
	}
	return nr
}

func (r ownRoute) matches(w HostRoute, underlay int) bool {
	if w.Unreachable {
		return r.routeType == unix.RTN_UNREACHABLE
	}
	return r.routeType == unix.RTN_UNICAST && r.gw == w.Via && r.linkIndex == underlay
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}
