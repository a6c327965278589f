// Package cni is the edgeplane CNI plugin (type "edgeplane").
//
// How it works: the agent writes the node's network config to <runDir>/node.json (pkg/cninode)
// once the datapath is loaded; every call reads it. ADD asks the IPAM plugin (host-local by
// default, allocating from the node's pod CIDR) for an address, creates a veth pair whose host side
// is named from a hash of the container ID and interface name, gives the pod podIP/32 with a
// default route via 169.254.1.1 onlink and a permanent neighbour entry for that gateway pointing at
// the host veth's MAC (so the pod never ARPs), routes podIP/32 to the host veth, writes the
// endpoint map entry and attaches the pinned pod program to the host veth's TC ingress. Any
// failure undoes what was done, in reverse. An ADD for an attachment that exists replaces it.
//
// Last, ADD records the pod's name under its IP in the name index beside node.json (pkg/nameindex), for
// edgeplanectl; the index is advisory, so failing to write it is reported on stderr and does not
// fail ADD.
//
// DEL removes the same things (the index entry included) and succeeds when they are already gone;
// CHECK verifies them; STATUS fails until node.json and the pins exist; GC releases addresses,
// datapath state and index entries of attachments the runtime no longer lists.
//
// Everything happens in the network namespace the plugin is started in, which need not be the
// root one (the lab runs one per node), and pins live under node.json's bpffsRoot.
package cni

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Funcs are the plugin's commands, for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC}
}

// HostVethName is the host-side veth of an attachment: "ep" + 11 hex digits of
// sha1(containerID+ifName), stable so that DEL and CHECK find it without state.
func HostVethName(containerID, ifName string) string {
	sum := sha1.Sum([]byte(containerID + ifName))
	return "ep" + hex.EncodeToString(sum[:])[:11]
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "edgeplane must be the first plugin in the chain",
			"put edgeplane first in the conflist's plugins; portmap and bandwidth go after it")
	}
	node, err := readNode(conf.RunDir)
	if err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("opening netns %q: %v", args.Netns, err), "")
	}
	defer netns.Close()
	ipamConf, err := conf.ipamConf(node)
	if err != nil {
		return err
	}

	// A repeated ADD replaces the attachment: release what a previous one left behind first, so
	// host-local does not refuse a second address for the same container.
	if err := teardown(args, conf, node, ipamConf); err != nil {
		return fmt.Errorf("removing the previous attachment of %s: %w", args.ContainerID, err)
	}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	ipamResult, err := ipam.ExecAdd(conf.IPAM.Type, ipamConf)
	if err != nil {
		return fmt.Errorf("allocating an address with %s: %w", conf.IPAM.Type, err)
	}
	undo = append(undo, func() { _ = ipam.ExecDel(conf.IPAM.Type, ipamConf) })
	allocated, err := types100.NewResultFromResult(ipamResult)
	if err != nil {
		return fmt.Errorf("converting the ipam result: %w", err)
	}
	podIP, err := firstIPv4(allocated)
	if err != nil {
		return fmt.Errorf("ipam plugin %s: %w", conf.IPAM.Type, err)
	}

	hostVeth := HostVethName(args.ContainerID, args.IfName)
	host, pod, err := createVeth(netns, args.IfName, hostVeth, conf.podMTU(node), node.GSOIPv4MaxSize)
	if err != nil {
		return err
	}
	undo = append(undo, func() { _ = deleteLinkByName(hostVeth) })

	if err := configurePod(netns, args.IfName, podIP, host.HardwareAddr); err != nil {
		return err
	}
	if err := configureHost(host, podIP); err != nil {
		return err
	}

	eps, err := endpoints.Open(node.BPFFSRoot)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "the edgeplane agent has not loaded the datapath yet")
	}
	defer eps.Close()
	ep := endpoints.Endpoint{Ifindex: uint32(host.Index)}
	copy(ep.PodMAC[:], pod.HardwareAddr)
	copy(ep.HostMAC[:], host.HardwareAddr)
	if err := eps.Upsert(podIP, ep); err != nil {
		return err
	}
	undo = append(undo, func() { _ = eps.Delete(podIP) })

	if err := datapath.AttachPod(node.BPFFSRoot, hostVeth, host.Index); err != nil {
		return err
	}
	undo = append(undo, func() { _ = datapath.DetachPod(node.BPFFSRoot, hostVeth) })
	recordName(conf.RunDir, args, podIP, hostVeth)
	undo = append(undo, func() { _ = nameindex.RemovePod(conf.RunDir, args.ContainerID, args.IfName) })

	result := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: hostVeth, Mac: host.HardwareAddr.String()},
			{Name: args.IfName, Mac: pod.HardwareAddr.String(), Sandbox: args.Netns},
		},
		IPs: []*types100.IPConfig{{
			Interface: types100.Int(1),
			Address:   net.IPNet{IP: podIP.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Gateway:   cninode.GatewayIP.AsSlice(),
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: cninode.GatewayIP.AsSlice()}},
		DNS:    conf.DNS,
	}
	if result.DNS.IsEmpty() {
		result.DNS = allocated.DNS
	}
	return types.PrintResult(result, conf.CNIVersion)
}

func firstIPv4(r *types100.Result) (netip.Addr, error) {
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, errors.New("returned no IPv4 address")
}

// recordName writes the attachment's entry in the name index. The index is advisory (only
// edgeplanectl reads it), so a failure is reported on stderr, which runtimes log, and ADD goes on.
func recordName(runDir string, args *skel.CmdArgs, podIP netip.Addr, hostVeth string) {
	k8sArgs := parseK8sArgs(args.Args)
	err := nameindex.WritePod(runDir, nameindex.Pod{
		IP: podIP, Namespace: k8sArgs["K8S_POD_NAMESPACE"], Name: k8sArgs["K8S_POD_NAME"], UID: k8sArgs["K8S_POD_UID"],
		ContainerID: args.ContainerID, Interface: args.IfName, HostInterface: hostVeth,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgeplane: pod %s is not named in edgeplanectl: %v\n", podIP, err)
	}
}

// parseK8sArgs reads CNI_ARGS ("K=V;K=V"), which kubelet's runtimes fill with K8S_POD_NAMESPACE,
// K8S_POD_NAME and K8S_POD_UID. Malformed pairs are skipped: names are not worth failing ADD for.
func parseK8sArgs(cniArgs string) map[string]string {
	out := map[string]string{}
	for _, pair := range strings.Split(cniArgs, ";") {
		if k, v, ok := strings.Cut(pair, "="); ok && strings.HasPrefix(k, "K8S_") {
			out[k] = v
		}
	}
	return out
}
