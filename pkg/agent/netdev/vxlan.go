package netdev

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VXLANPort is Flannel's (and the Linux default's) VXLAN UDP port.
const VXLANPort = 8472

// VXLAN describes the collect_md VXLAN device.
type VXLAN struct {
	Name    string
	MTU     int
	MAC     net.HardwareAddr // the VTEP MAC
	Address netip.Addr       // the pod CIDR's network address, as /32 (like flannel.1)
}

// Device is the VXLAN device as it is now.
type Device struct {
	Index int
	MAC   net.HardwareAddr
}

// VTEPMAC derives a stable, locally administered unicast MAC from the node name, so a recreated
// device (or a reinstalled agent) keeps the MAC peers know.
func VTEPMAC(nodeName string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("edgeplane-vtep/" + nodeName))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// EnsureVXLAN creates the device or converges an existing one: incompatible kinds or VXLAN
// parameters are recreated; MTU, MAC, NOARP, up state and the address are corrected in place.
func EnsureVXLAN(want VXLAN) (Device, error) {
	link, err := ensureVXLANLink(want)
	if err != nil {
		return Device{}, err
	}
	if err := convergeAttrs(link, want); err != nil {
		return Device{}, err
	}
	if err := ensureOnlyAddress(link, want.Address); err != nil {
		return Device{}, err
	}
	l, err := netlink.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return Device{}, fmt.Errorf("reading back %s: %w", want.Name, err)
	}
	return Device{Index: l.Attrs().Index, MAC: l.Attrs().HardwareAddr}, nil
}

func ensureVXLANLink(want VXLAN) (netlink.Link, error) {
	existing, err := netlink.LinkByName(want.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		return nil, fmt.Errorf("looking up %s: %w", want.Name, err)
	case compatible(existing):
		return existing, nil
	default:
		if err := netlink.LinkDel(existing); err != nil {
			return nil, fmt.Errorf("deleting incompatible %s: %w", want.Name, err)
		}
	}
	dev := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: want.Name, MTU: want.MTU, HardwareAddr: want.MAC},
		FlowBased: true,
		Port:      VXLANPort,
		Learning:  false,
	}
	if err := netlink.LinkAdd(dev); err != nil {
		return nil, fmt.Errorf("creating vxlan device %s: %w", want.Name, err)
	}
	l, err := netlink.LinkByName(want.Name)
	if err != nil {
		return nil, fmt.Errorf("looking up %s after creating it: %w", want.Name, err)
	}
	return l, nil
}

// compatible says whether an existing link can serve as the collect_md VXLAN device.
func compatible(l netlink.Link) bool {
	v, ok := l.(*netlink.Vxlan)
	return ok && v.FlowBased && v.Port == VXLANPort && !v.Learning
}

func convergeAttrs(link netlink.Link, want VXLAN) error {
	a := link.Attrs()
	if a.MTU != want.MTU {
		if err := netlink.LinkSetMTU(link, want.MTU); err != nil {
			return fmt.Errorf("setting mtu %d on %s: %w", want.MTU, want.Name, err)
		}
	}
	if want.MAC != nil && a.HardwareAddr.String() != want.MAC.String() {
		if err := netlink.LinkSetHardwareAddr(link, want.MAC); err != nil {
			return fmt.Errorf("setting mac %s on %s: %w", want.MAC, want.Name, err)
		}
	}
	if a.RawFlags&unix.IFF_NOARP == 0 {
		if err := netlink.LinkSetARPOff(link); err != nil {
			return fmt.Errorf("setting noarp on %s: %w", want.Name, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return portInUse(want.Name, err)
		}
	}
	return nil
}

// ensureOnlyAddress leaves exactly addr/32 on the link (the pod CIDR may have changed).
func ensureOnlyAddress(link netlink.Link, addr netip.Addr) error {
	want := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == want.IPNet.String() {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("removing stale address %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	if err := netlink.AddrReplace(link, want); err != nil {
		return fmt.Errorf("adding %s to %s: %w", want.IPNet, link.Attrs().Name, err)
	}
	return nil
}

// DeviceRoute is a route through the VXLAN device: Dst, with Src as the host's source.
type DeviceRoute struct {
	Dst netip.Prefix
	Src netip.Addr
}

// EnsureRoutes routes each of routes through the device and removes every other route on it:
// the cluster CIDR (host -> remote pod traffic, as Flannel does) and the service CIDR (host ->
// ClusterIP traffic: the device's tc egress program translates it like a pod's), both from the pod
// CIDR's network address, and the host-hairpin address (the host's answers to its own Service
// connections to a backend on this node, which overlay_egress translates back), from the node IP.
// The routes of externalIPs and LoadBalancer IPs (ServiceRouteProtocol) are SyncServiceRoutes's
// and stay.
func EnsureRoutes(ifindex int, routes ...DeviceRoute) error {
	want := map[string]bool{}
	for _, route := range routes {
		dst := route.Dst
		r := netlink.Route{
			LinkIndex: ifindex,
			Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)},
			Src:       route.Src.AsSlice(),
			Scope:     netlink.SCOPE_LINK,
		}
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("routing %s via ifindex %d from %s: %w", dst, ifindex, route.Src, err)
		}
		want[r.Dst.String()] = true
	}
	current, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: ifindex, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing routes of ifindex %d: %w", ifindex, err)
	}
	for _, r := range current {
		if r.Dst == nil || want[r.Dst.String()] || r.Protocol == unix.RTPROT_KERNEL || r.Protocol == ServiceRouteProtocol {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			return fmt.Errorf("removing stale route %s: %w", r.Dst, err)
		}
	}
	return nil
}

// DeleteVXLAN removes the VXLAN device called name; its address and routes go with it. A missing
// device is not an error (deleted reports whether there was one); a link of that name that is not
// a VXLAN device is someone else's and is left alone.
func DeleteVXLAN(name string) (deleted bool, err error) {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("looking up %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Vxlan); !ok {
		return false, fmt.Errorf("%s is a %s link, not the vxlan device edgeplane creates: left in place", name, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil {
		return false, fmt.Errorf("deleting %s: %w", name, err)
	}
	return true, nil
}
