package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NextHops resolves outer destination MACs from the kernel's routes and neighbour table.
type NextHops struct {
	UnderlayIndex int
}

const resolvedStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// NextHop returns the MAC of the next hop toward ip on the underlay: ip itself when on-link, else
// the gateway. When the kernel has no usable entry yet it asks the kernel to resolve one (NTF_USE)
// and returns nil: the next resync picks the answer up.
func (n NextHops) NextHop(ip netip.Addr) (net.HardwareAddr, error) {
	routes, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return nil, fmt.Errorf("route to %s: %w", ip, err)
	}
	if len(routes) == 0 {
		return nil, fmt.Errorf("no route to %s", ip)
	}
	r := routes[0]
	if r.LinkIndex != n.UnderlayIndex {
		return nil, fmt.Errorf("route to %s leaves through ifindex %d, not the underlay (%d)", ip, r.LinkIndex, n.UnderlayIndex)
	}
	hop := ip
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		hop = gw.Unmap()
	}
	neighs, err := netlink.NeighList(n.UnderlayIndex, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours: %w", err)
	}
	for _, nb := range neighs {
		if a, ok := netip.AddrFromSlice(nb.IP); ok && a.Unmap() == hop && nb.State&resolvedStates != 0 && len(nb.HardwareAddr) == 6 {
			return nb.HardwareAddr, nil
		}
	}
	return nil, n.solicit(hop)
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
