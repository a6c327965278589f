package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// releaseAnyRange stands in for the pod CIDR when DEL runs without node.json: host-local releases
// by container ID and interface whatever the range, but refuses a config without one.
const releaseAnyRange = "169.254.0.0/16"

func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	node, err := cninode.Read(conf.RunDir)
	if err != nil {
		node = nil // release what can be released; the agent's GC handles the datapath
	}
	var ipamConf []byte
	if node != nil {
		ipamConf, err = conf.ipamConf(node)
	} else {
		ipamConf, err = conf.ipamConf(&cninode.Config{PodCIDR: netip.MustParsePrefix(releaseAnyRange)})
	}
	if err != nil {
		return err
	}
	return teardown(args, conf, node, ipamConf)
}

// teardown removes an attachment: endpoint entries that still point at its host veth, the pod
// link, the veth pair, its name index entry, then the address. Every step tolerates "already
// gone", so DEL can be repeated and can follow a half-done ADD or a netns that no longer exists.
func teardown(args *skel.CmdArgs, conf *NetConf, node *cninode.Config, ipamConf []byte) error {
	hostVeth := HostVethName(args.ContainerID, args.IfName)
	host, err := linkByName(hostVeth)
	if err != nil {
		return err
	}
	hostIndex := 0
	if host != nil {
		hostIndex = host.Attrs().Index
	}
	if node != nil {
		if err := removeEndpoints(node.BPFFSRoot, conf, hostVeth, hostIndex); err != nil {
			return err
		}
		if err := datapath.DetachPod(node.BPFFSRoot, hostVeth); err != nil {
			return err
		}
	}
	if err := deleteLinkByName(hostVeth); err != nil {
		return err
	}
	// Before the address is released: once it is, another pod may get it and write its name.
	if err := nameindex.RemovePod(conf.RunDir, args.ContainerID, args.IfName); err != nil {
		fmt.Fprintf(os.Stderr, "edgeplane: %v\n", err) // advisory: a stale entry is hidden by edgeplanectl
	}
	if err := ipam.ExecDel(conf.IPAM.Type, ipamConf); err != nil {
		return fmt.Errorf("releasing the address with %s: %w", conf.IPAM.Type, err)
	}
	return nil
}

// removeEndpoints deletes this attachment's endpoint entries: those pointing at its host veth and
// those for its prevResult addresses unless the address has since been given to another pod.
func removeEndpoints(root string, conf *NetConf, hostVeth string, hostIndex int) error {
	eps, err := endpoints.Open(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // no datapath loaded: nothing to remove
		}
		return err
	}
	defer eps.Close()

	var stale []netip.Addr
	if hostIndex != 0 {
		if err := eps.Iterate(func(ip netip.Addr, ep endpoints.Endpoint) bool {
			if int(ep.Ifindex) == hostIndex {
				stale = append(stale, ip)
			}
			return true
		}); err != nil {
			return err
		}
	}
	if conf.PrevResult != nil {
		if prev, err := types100.NewResultFromResult(conf.PrevResult); err == nil {
			for _, ipc := range prev.IPs {
				ip, ok := netip.AddrFromSlice(ipc.Address.IP)
				if !ok {
					continue
				}
				ep, err := eps.Lookup(ip.Unmap())
				if err == nil && ownedBy(ep, hostVeth, hostIndex) {
					stale = append(stale, ip.Unmap())
				}
			}
		}
	}
	for _, ip := range stale {
		if err := eps.Delete(ip); err != nil {
			return err
		}
	}
	return nil
}

// ownedBy tells whether ep belongs to the attachment whose host veth is hostVeth: it points at
// that veth, or at an interface that no longer exists.
func ownedBy(ep endpoints.Endpoint, hostVeth string, hostIndex int) bool {
	if hostIndex != 0 {
		return int(ep.Ifindex) == hostIndex
	}
	l, err := netlink.LinkByIndex(int(ep.Ifindex))
	if err != nil {
		var notFound netlink.LinkNotFoundError
		return errors.As(err, &notFound)
	}
	return l.Attrs().Name == hostVeth
}
