package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ServiceRouteProtocol marks the host routes of externalIPs and LoadBalancer ingress IPs into the
// overlay device (`ip route show proto 238`). A protocol of their own keeps the two other owners
// of host routes off them: EnsureRoutes (the device's cluster and service CIDR routes) leaves them
// alone, and HostRoutes only ever lists RouteProtocol (237).
const ServiceRouteProtocol netlink.RouteProtocol = 238

// SyncServiceRoutes makes the device's ServiceRouteProtocol routes exactly want: `<addr>/32 dev
// <ifindex> src <src>`, src being the overlay address as for the service CIDR, so that host
// traffic to those addresses reaches the device's tc egress program, which translates it.
func SyncServiceRoutes(ifindex int, src netip.Addr, want map[netip.Addr]bool) error {
	have, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: ServiceRouteProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("listing service routes: %w", err)
	}
	missing := make(map[netip.Addr]bool, len(want))
	for a := range want {
		missing[a] = true
	}
	var errs []error
	for _, r := range have {
		p, ok := prefixOf(r.Dst)
		routeSrc, _ := netip.AddrFromSlice(r.Src)
		if ok && p.Bits() == 32 && missing[p.Addr()] && r.LinkIndex == ifindex && routeSrc.Unmap() == src {
			delete(missing, p.Addr()) // already right
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("removing service route %s: %w", r.Dst, err))
		}
	}
	for a := range missing {
		r := netlink.Route{
			LinkIndex: ifindex,
			Dst:       &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Src:       src.AsSlice(),
			Scope:     netlink.SCOPE_LINK,
			Protocol:  ServiceRouteProtocol,
			Table:     unix.RT_TABLE_MAIN,
		}
		if err := netlink.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("routing %s into ifindex %d: %w", a, ifindex, err))
		}
	}
	return errors.Join(errs...)
}
