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
	have, err := ownRoutes()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range have {
		p, ok := prefixOf(r.Dst)
		if w, wanted := want[p]; ok && wanted && routeMatches(r, w, h.UnderlayIndex) {
			delete(want, p) // already right
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("removing route %s: %w", r.Dst, err))
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
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("removing route %s: %w", r.Dst, err))
		}
	}
	return len(have), errors.Join(errs...)
}

func ownRoutes() ([]netlink.Route, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("listing edgeplane's host routes: %w", err)
	}
	return routes, nil
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

func routeMatches(r netlink.Route, w HostRoute, underlay int) bool {
	if w.Unreachable {
		return r.Type == unix.RTN_UNREACHABLE
	}
	gw, _ := netip.AddrFromSlice(r.Gw)
	return r.Type == unix.RTN_UNICAST && gw.Unmap() == w.Via && r.LinkIndex == underlay
}
