package cni

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/cninode"
)

// createVeth creates the pair inside the pod's netns and moves the host side into the plugin's.
//
// gsoIPv4MaxSize, when not 0, is the pair's IPv4 GSO and GRO size, both ends (BIG TCP: node.json's
// gsoIPv4MaxSize). The pod's TCP sizes its packets by its eth0's, the host end passes them on.
func createVeth(netns ns.NetNS, ifName, hostVeth string, mtu, gsoIPv4MaxSize int) (host, pod net.Interface, err error) {
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return host, pod, fmt.Errorf("opening the node's netns: %w", err)
	}
	defer hostNS.Close()
	err = netns.Do(func(ns.NetNS) error {
		var err error
		host, pod, err = ip.SetupVethWithName(ifName, hostVeth, mtu, "", hostNS)
		if err != nil || gsoIPv4MaxSize == 0 {
			return err
		}
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("looking up %s in the pod: %w", ifName, err)
		}
		return netdev.SetGSOIPv4MaxSize(l, gsoIPv4MaxSize)
	})
	if err != nil {
		return host, pod, fmt.Errorf("creating veth %s/%s: %w", hostVeth, ifName, err)
	}
	// SetupVethWithName reports the host side's MAC as seen before the move; read it here.
	l, err := netlink.LinkByName(hostVeth)
	if err != nil {
		return host, pod, fmt.Errorf("looking up %s: %w", hostVeth, err)
	}
	host.Index, host.HardwareAddr = l.Attrs().Index, l.Attrs().HardwareAddr
	if gsoIPv4MaxSize != 0 {
		if err := netdev.SetGSOIPv4MaxSize(l, gsoIPv4MaxSize); err != nil {
			return host, pod, err
		}
	}
	if err := disableIPv6(hostVeth); err != nil {
		return host, pod, err
	}
	return host, pod, nil
}

// disableIPv6 turns IPv6 off on a link of the current netns: the pod network is IPv4, and the
// link-local chatter (router and neighbour solicitations, MLD reports) a pod's eth0 would start
// with only ever reaches pod_egress, to be counted as UNSUPPORTED_L3 drops on an idle cluster. A
// kernel without IPv6 has no such sysctl, which is fine.
func disableIPv6(ifName string) error {
	err := os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", ifName, "disable_ipv6"), []byte("1"), 0o644)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("disabling IPv6 on %s: %w", ifName, err)
	}
	return nil
}

// configurePod gives the pod podIP/32 and a default route through the link-local gateway, which
// a permanent neighbour entry resolves to the host veth: the pod never ARPs for its gateway, and
// whatever it sends reaches the host veth's TC ingress, where pod_egress decides.
func configurePod(netns ns.NetNS, ifName string, podIP netip.Addr, hostMAC net.HardwareAddr) error {
	return netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("looking up %s in the pod: %w", ifName, err)
		}
		idx := l.Attrs().Index
		if err := disableIPv6(ifName); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting the pod's %s up: %w", ifName, err)
		}
		addr := &netlink.Addr{IPNet: host32(podIP)}
		if err := netlink.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("adding %s to the pod's %s: %w", podIP, ifName, err)
		}
		neigh := &netlink.Neigh{
			LinkIndex:    idx,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           cninode.GatewayIP.AsSlice(),
			HardwareAddr: hostMAC,
		}
		if err := netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("adding the gateway neighbour in the pod: %w", err)
		}
		if err := netlink.RouteReplace(defaultRoute(idx)); err != nil {
			return fmt.Errorf("adding the pod's default route: %w", err)
		}
		return nil
	})
}

func defaultRoute(ifindex int) *netlink.Route {
	return &netlink.Route{
		LinkIndex: ifindex,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        cninode.GatewayIP.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
	}
}

// configureHost routes podIP to the host veth, for traffic the node itself sends to the pod.
//
// No sysctls: the host veth needs no address and no proxy ARP (the pod has a static neighbour for
// its gateway), and reverse-path filtering passes because the pod's source address routes back
// through this very veth.
func configureHost(host net.Interface, podIP netip.Addr) error {
	if err := netlink.RouteReplace(hostRoute(host.Index, podIP)); err != nil {
		return fmt.Errorf("routing %s to %s: %w", podIP, host.Name, err)
	}
	return nil
}

func hostRoute(ifindex int, podIP netip.Addr) *netlink.Route {
	return &netlink.Route{LinkIndex: ifindex, Dst: host32(podIP), Scope: netlink.SCOPE_LINK}
}

func host32(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
}

// linkByName returns nil without error when the link does not exist.
func linkByName(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	return l, nil
}

// deleteLinkByName deletes a link (a veth takes its peer along); a missing link is fine.
func deleteLinkByName(name string) error {
	l, err := linkByName(name)
	if err != nil || l == nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil {
		if again, lerr := linkByName(name); lerr == nil && again == nil {
			return nil // deleted concurrently, e.g. with its pod's netns
		}
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}
