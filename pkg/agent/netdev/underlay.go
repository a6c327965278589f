// Package netdev converges the host network state the agent owns, through netlink and /proc/sys only:
// it finds the underlay NIC, keeps the collect_md VXLAN device (reused when compatible, recreated
// when not, with a MAC derived from the node name so that a recreated device keeps the VTEP MAC its
// peers know), routes the cluster CIDR through it, sets the sysctls forwarding needs, and answers
// neighbour and link questions for the reconcilers. Every Ensure function compares and converges,
// so calling it again is harmless and repairs what someone changed.
package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Underlay is the NIC that carries VXLAN.
type Underlay struct {
	Name   string
	Index  int
	MAC    net.HardwareAddr
	MTU    int
	IP     netip.Addr   // this node's tunnel endpoint
	Prefix netip.Prefix // the node network on that NIC (IP with its mask)
}

// FindUnderlay picks the underlay: the interface called name when given, else the one holding
// nodeIP (the Node's InternalIP), else the one the default route leaves through.
func FindUnderlay(name string, nodeIP netip.Addr) (Underlay, error) {
	link, err := underlayLink(name, nodeIP)
	if err != nil {
		return Underlay{}, err
	}
	attrs := link.Attrs()
	prefix, err := underlayPrefix(link, nodeIP)
	if err != nil {
		return Underlay{}, err
	}
	return Underlay{
		Name: attrs.Name, Index: attrs.Index, MAC: attrs.HardwareAddr, MTU: attrs.MTU,
		IP: prefix.Addr(), Prefix: prefix,
	}, nil
}

func underlayLink(name string, nodeIP netip.Addr) (netlink.Link, error) {
	if name != "" {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("underlay interface %s: %w", name, err)
		}
		return l, nil
	}
	if nodeIP.IsValid() {
		if l, err := linkHolding(nodeIP); err != nil || l != nil {
			return l, err
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if isDefault(r) && r.LinkIndex > 0 {
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("default route's interface: %w", err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("no interface holds the node IP %s and there is no default route: pass --underlay-interface", nodeIP)
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// linkHolding returns the interface with ip among its addresses, or nil.
func linkHolding(ip netip.Addr) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("interface of %s: %w", ip, err)
			}
			return l, nil
		}
	}
	return nil, nil
}

// underlayPrefix is nodeIP with its mask when the link holds it, else the link's first global IPv4.
func underlayPrefix(link netlink.Link, nodeIP netip.Addr) (netip.Prefix, error) {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	var first netip.Prefix
	for _, a := range addrs {
		p, ok := toPrefix(a.IPNet)
		if !ok || a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		if p.Addr() == nodeIP {
			return p, nil
		}
		if !first.IsValid() {
			first = p
		}
	}
	if !first.IsValid() {
		return netip.Prefix{}, errors.New("underlay interface " + link.Attrs().Name + " has no global IPv4 address")
	}
	return first, nil
}

func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok || !ip.Unmap().Is4() {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}
