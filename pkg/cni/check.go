package cni

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
)

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "the runtime passes the ADD result as prevResult")
	}
	prev, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "cannot convert prevResult: "+err.Error(), "")
	}
	podIP, err := firstIPv4(prev)
	if err != nil {
		return fmt.Errorf("prevResult: %w", err)
	}
	node, err := readNode(conf.RunDir)
	if err != nil {
		return err
	}
	ipamConf, err := conf.ipamConf(node)
	if err != nil {
		return err
	}
	if err := ipam.ExecCheck(conf.IPAM.Type, ipamConf); err != nil {
		return fmt.Errorf("ipam %s: %w", conf.IPAM.Type, err)
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("opening netns %q: %v", args.Netns, err), "")
	}
	defer netns.Close()

	hostVeth := HostVethName(args.ContainerID, args.IfName)
	host, err := linkByName(hostVeth)
	if err != nil {
		return err
	}
	if host == nil {
		return fmt.Errorf("host veth %s does not exist", hostVeth)
	}
	if _, ok := host.(*netlink.Veth); !ok {
		return fmt.Errorf("%s is a %s, not a veth", hostVeth, host.Type())
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", hostVeth)
	}
	if err := checkRoute(host.Attrs().Index, hostRoute(host.Attrs().Index, podIP)); err != nil {
		return fmt.Errorf("node route to the pod: %w", err)
	}
	podMAC, err := checkPod(netns, args.IfName, podIP, host)
	if err != nil {
		return err
	}

	eps, err := endpoints.Open(node.BPFFSRoot)
	if err != nil {
		return err
	}
	defer eps.Close()
	ep, err := eps.Lookup(podIP)
	if err != nil {
		return err
	}
	if int(ep.Ifindex) != host.Attrs().Index || !bytes.Equal(ep.HostMAC[:], host.Attrs().HardwareAddr) || !bytes.Equal(ep.PodMAC[:], podMAC) {
		return fmt.Errorf("endpoint %s is {%s}, want ifindex %d host-mac %s pod-mac %s", podIP, ep, host.Attrs().Index, host.Attrs().HardwareAddr, podMAC)
	}
	return datapath.CheckPod(node.BPFFSRoot, hostVeth, host.Attrs().Index)
}

// checkPod verifies the pod side and returns its MAC.
func checkPod(netns ns.NetNS, ifName string, podIP netip.Addr, host netlink.Link) (mac []byte, err error) {
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("pod interface %s: %w", ifName, err)
		}
		mac = l.Attrs().HardwareAddr
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("listing addresses of %s: %w", ifName, err)
		}
		found := false
		for _, a := range addrs {
			ones, _ := a.Mask.Size()
			found = found || (a.IP.Equal(podIP.AsSlice()) && ones == 32)
		}
		if !found {
			return fmt.Errorf("pod interface %s lacks %s/32", ifName, podIP)
		}
		if err := checkRoute(l.Attrs().Index, defaultRoute(l.Attrs().Index)); err != nil {
			return fmt.Errorf("pod default route: %w", err)
		}
		neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("listing neighbours of %s: %w", ifName, err)
		}
		for _, n := range neighs {
			if n.IP.Equal(cninode.GatewayIP.AsSlice()) && n.State&netlink.NUD_PERMANENT != 0 &&
				bytes.Equal(n.HardwareAddr, host.Attrs().HardwareAddr) {
				return nil
			}
		}
		return fmt.Errorf("pod has no permanent neighbour %s -> %s", cninode.GatewayIP, host.Attrs().HardwareAddr)
	})
	return mac, err
}

func checkRoute(ifindex int, want *netlink.Route) error {
	filter := &netlink.Route{LinkIndex: ifindex, Table: 254}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		dstOK := (r.Dst == nil && want.Dst.IP.IsUnspecified()) || (r.Dst != nil && r.Dst.String() == want.Dst.String())
		if dstOK && r.Gw.Equal(want.Gw) {
			return nil
		}
	}
	return fmt.Errorf("no route to %s via %v on ifindex %d", want.Dst, want.Gw, ifindex)
}
