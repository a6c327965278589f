package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// hostLocalDataDir is host-local's default store.
const hostLocalDataDir = "/var/lib/cni/networks"

// cmdGC releases everything belonging to attachments not in cni.dev/valid-attachments: their pod
// links, host veths, endpoint entries and name index entries, then their addresses.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := make(map[string]bool, len(conf.ValidAttachments))
	validIDs := make(map[string]bool, len(conf.ValidAttachments))
	for _, a := range conf.ValidAttachments {
		valid[HostVethName(a.ContainerID, a.IfName)] = true
		validIDs[a.ContainerID+"\x00"+a.IfName] = true
		validIDs[a.ContainerID] = true // host-local stores without ifname in old versions
	}
	var errs []error
	node, err := cninode.Read(conf.RunDir)
	if err == nil {
		errs = append(errs, gcDatapath(node.BPFFSRoot, valid))
	}
	if err := nameindex.PrunePods(conf.RunDir, func(p nameindex.Pod) bool { return validIDs[p.ContainerID+"\x00"+p.Interface] }); err != nil {
		fmt.Fprintf(os.Stderr, "edgeplane: %v\n", err) // advisory: edgeplanectl hides stale entries
	}
	if conf.IPAM.Type == defaultIPAM {
		errs = append(errs, gcHostLocal(args, conf, node, validIDs))
	} else {
		ipamConf, err := conf.ipamConf(node)
		if err != nil {
			return err
		}
		errs = append(errs, invoke.DelegateGC(context.TODO(), conf.IPAM.Type, ipamConf, nil))
	}
	return errors.Join(errs...)
}

// isHostVethName tells whether name has the shape of HostVethName's output.
func isHostVethName(name string) bool {
	if len(name) != 13 || !strings.HasPrefix(name, "ep") {
		return false
	}
	for _, c := range name[2:] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func gcDatapath(root string, valid map[string]bool) error {
	var errs []error
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	validIndex := make(map[uint32]bool)
	for _, l := range links {
		name := l.Attrs().Name
		if _, isVeth := l.(*netlink.Veth); !isVeth || !isHostVethName(name) {
			continue
		}
		if valid[name] {
			validIndex[uint32(l.Attrs().Index)] = true
			continue
		}
		errs = append(errs, deleteLinkByName(name))
	}
	pinned, err := datapath.PodLinks(root)
	errs = append(errs, err)
	for _, name := range pinned {
		if !valid[name] {
			errs = append(errs, datapath.DetachPod(root, name))
		}
	}
	eps, err := endpoints.Open(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.Join(errs...)
		}
		return errors.Join(append(errs, err)...)
	}
	defer eps.Close()
	var stale []netip.Addr
	errs = append(errs, eps.Iterate(func(ip netip.Addr, ep endpoints.Endpoint) bool {
		if !validIndex[ep.Ifindex] {
			stale = append(stale, ip)
		}
		return true
	}))
	for _, ip := range stale {
		errs = append(errs, eps.Delete(ip))
	}
	return errors.Join(errs...)
}

// gcHostLocal releases host-local reservations of attachments that are not valid. host-local has
// no GC of its own; its store is one file per address holding "<containerID>\r\n<ifname>", and a
// DEL with that container ID and interface releases it.
func gcHostLocal(args *skel.CmdArgs, conf *NetConf, node *cninode.Config, validIDs map[string]bool) error {
	dataDir, _ := conf.ipam["dataDir"].(string)
	if dataDir == "" {
		dataDir = hostLocalDataDir
	}
	dir := filepath.Join(dataDir, conf.Name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("reading host-local store %s: %w", dir, err)
	}
	if node == nil {
		node = &cninode.Config{PodCIDR: netip.MustParsePrefix(releaseAnyRange)}
	}
	ipamConf, err := conf.ipamConf(node)
	if err != nil {
		return err
	}
	pluginPath, err := invoke.FindInPath(conf.IPAM.Type, filepath.SplitList(args.Path))
	if err != nil {
		return fmt.Errorf("finding %s: %w", conf.IPAM.Type, err)
	}
	var errs []error
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue // lock, last_reserved_ip.*
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // released concurrently
		}
		id, ifName, _ := strings.Cut(strings.TrimSpace(string(b)), "\r\n")
		if validIDs[id+"\x00"+ifName] || (ifName == "" && validIDs[id]) {
			continue
		}
		if ifName == "" {
			ifName = "eth0"
		}
		err = invoke.ExecPluginWithoutResult(context.TODO(), pluginPath, ipamConf,
			&invoke.Args{Command: "DEL", ContainerID: id, IfName: ifName, Path: args.Path}, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("releasing %s of %s: %w", e.Name(), id, err))
		}
	}
	return errors.Join(errs...)
}
