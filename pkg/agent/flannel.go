package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// Taking over a node from Flannel (docs/install.md, "Moving from Flannel node by node"). Once
// flanneld is stopped on a node, its flannel.1 stays up on UDP 8472, where edgeplane's device
// cannot come up beside it. At start the agent therefore looks at every VXLAN device up on that
// port: flanneld's own (flannel.1, VNI 1, one VNI, no flanneld process in this network namespace)
// is deleted; anything else makes the agent refuse with one message naming the device. The VTEP
// MAC Flannel peers know is kept: the MAC of the flannel.1 taken over, else the one this node's
// backend-data annotation publishes (which is what persists it across restarts and reboots: the
// agent publishes its device's MAC there), else the one derived from the node name. Flanneld's
// cni0 bridge is deleted once no pod is plugged into it any more (its route goes with it), and its
// subnet.env when it describes this node's pod CIDR. Flanneld's iptables rules stay: the agent
// changes kernel state only through netlink and its image has no iptables; it says how to remove
// them.

// flanneldName is the command name flanneld's processes have in /proc/<pid>/comm.
const flanneldName = "flanneld"

// bridgeRecheck is how often the agent looks again at a cni0 that still had pods plugged in.
const bridgeRecheck = 2 * time.Second

// takeOverFromFlannel clears what flanneld leaves on the node that would keep edgeplane's device
// down, and chooses the VTEP MAC (a.vtepMAC). It refuses, with one error naming what to remove,
// when a VXLAN device it does not recognise as a stopped Flannel's holds the VXLAN port.
func (a *Agent) takeOverFromFlannel(ctx context.Context, node *k8s.Node) error {
	logger := klog.FromContext(ctx)
	holders, err := netdev.VXLANPortHolders(netdev.VXLANPort, a.cfg.VXLANDevice)
	if err != nil {
		return err
	}
	var taken net.HardwareAddr
	for _, h := range holders {
		if err := refuseUnlessFlannelLeftover(h, flanneldProcesses); err != nil {
			return err
		}
		if err := netdev.DeletePortHolder(h); err != nil {
			return err
		}
		taken = h.MAC
		logger.Info("Took over from Flannel: deleted its vxlan device, which held the VXLAN port (its routes, neighbours and FDB entries went with it)",
			"device", h.Name, "vni", h.VNI, "port", h.Port, "vtepMAC", h.MAC.String())
		logger.Info("flanneld's iptables rules (chains FLANNEL-POSTRTG in nat, FLANNEL-FWD in filter) may remain; edgeplane does not use iptables and does not remove them. They only masquerade or accept pod traffic that passes through the host's netfilter, which edgeplane's datapath redirects past (but they masquerade pod traffic edgeplane leaves unmasqueraded: --non-masquerade-cidrs, --masquerade=false). Remove them as docs/install.md shows",
			"command", flannelIPTablesCleanup)
	}
	var source string
	a.vtepMAC, source = chooseVTEPMAC(taken, node, a.cfg.NodeName)
	logger.Info("VTEP MAC chosen", "mac", a.vtepMAC.String(), "source", source)
	if err := a.removeFlannelSubnetFile(ctx); err != nil {
		return err
	}
	if done, ports := removeFlannelBridge(ctx); !done {
		logger.Info("Flannel's bridge still has pods plugged in; it is deleted once they are gone (re-create them: they are wired by edgeplane's CNI now)",
			"bridge", netdev.FlannelBridge, "ports", ports)
		return removeFlannelBridgeLater(ctx)
	}
	return nil
}

// flannelIPTablesCleanup removes what flanneld --ip-masq installs in iptables (v0.28).
const flannelIPTablesCleanup = `iptables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG; ` +
	`iptables -t nat -F FLANNEL-POSTRTG; iptables -t nat -X FLANNEL-POSTRTG; ` +
	`iptables -t filter -D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD; ` +
	`iptables -t filter -F FLANNEL-FWD; iptables -t filter -X FLANNEL-FWD`

// refuseUnlessFlannelLeftover returns nil only for a device of Flannel's shape with no flanneld
// running in this network namespace (as far as the agent can see processes: in a container
// without the host's PID namespace it sees none, and the procedure's "Flannel's DaemonSet no
// longer runs here" is what guarantees it). Its error is the one message the agent exits with.
func refuseUnlessFlannelLeftover(h netdev.PortHolder, flanneld func() ([]int, error)) error {
	if !h.FlannelShaped() {
		return fmt.Errorf("UDP port %d is held by %s, which is not a stopped Flannel's %s (VNI 1, UDP %d): edgeplane's vxlan device cannot come up beside it; stop what created it and delete it (ip link delete %s), or give it another port",
			h.Port, h, netdev.FlannelDevice, netdev.VXLANPort, h.Name)
	}
	pids, err := flanneld()
	if err != nil {
		return fmt.Errorf("looking for flanneld before taking over %s: %w", h.Name, err)
	}
	if len(pids) > 0 {
		return fmt.Errorf("UDP port %d is held by %s and flanneld (pid %v) still runs on this node: stop Flannel here first (docs/install.md, \"Moving from Flannel node by node\"); edgeplane then takes over %s",
			h.Port, h, pids, h.Name)
	}
	return nil
}

// flanneldProcesses lists the flanneld processes this process can see that share its network
// namespace (in a lab, other nodes' flanneld run in other namespaces).
func flanneldProcesses() ([]int, error) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("reading this process's network namespace: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != flanneldName {
			continue // gone meanwhile, or another command
		}
		if ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns/net")); err == nil && ns == self {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// chooseVTEPMAC keeps the MAC Flannel peers know: the one of the Flannel device taken over now,
// else the one this node publishes in backend-data (Flannel's, or the one edgeplane chose before),
// else the one derived from the node name. It says which it took.
func chooseVTEPMAC(takenOver net.HardwareAddr, node *k8s.Node, nodeName string) (net.HardwareAddr, string) {
	if usableVTEPMAC(takenOver) {
		return takenOver, "the " + netdev.FlannelDevice + " taken over"
	}
	if node != nil {
		if vtep, err := k8s.NodeVTEP(node); err == nil && usableVTEPMAC(vtep.MAC) {
			return vtep.MAC, "this node's " + k8s.BackendDataAnnotation + " annotation"
		}
	}
	return netdev.VTEPMAC(nodeName), "derived from the node name"
}

// usableVTEPMAC: a unicast Ethernet address that is not all zeros.
func usableVTEPMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&0x01 == 0 && !slicesAllZero(mac)
}

func slicesAllZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// removeFlannelSubnetFile removes flanneld's subnet.env when it describes this node's pod CIDR
// (FLANNEL_SUBNET): Flannel's CNI plugin, should it run, then fails instead of wiring a pod from a
// lease flanneld no longer serves. Another subnet's file is left, with a line saying so.
func (a *Agent) removeFlannelSubnetFile(ctx context.Context) error {
	path := a.cfg.FlannelSubnetFile
	if path == "" {
		return nil
	}
	env, err := readSubnetEnv(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	logger := klog.FromContext(ctx)
	if err != nil {
		logger.Error(err, "Leaving Flannel's subnet file: unreadable", "path", path)
		return nil
	}
	subnet, err := netip.ParsePrefix(env["FLANNEL_SUBNET"])
	if err != nil || subnet.Masked() != a.podCIDR {
		logger.Info("Leaving Flannel's subnet file: it is not about this node's pod CIDR", "path", path,
			"FLANNEL_SUBNET", env["FLANNEL_SUBNET"], "podCIDR", a.podCIDR)
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing Flannel's subnet file %s: %w", path, err)
	}
	logger.Info("Took over from Flannel: removed its subnet file", "path", path, "FLANNEL_SUBNET", env["FLANNEL_SUBNET"])
	return nil
}

func readSubnetEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "="); ok {
			env[k] = v
		}
	}
	return env, s.Err()
}

// removeFlannelBridgeLater rechecks cni0 every bridgeRecheck until it is gone or ctx is done, from
// a thread in this thread's network namespace (the agent's).
func removeFlannelBridgeLater(ctx context.Context) error {
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("reading this network namespace: %w", err)
	}
	go func() {
		defer ns.Close()
		// The thread stays locked: if Set moved it, it ends with the goroutine.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			klog.FromContext(ctx).Error(err, "Cannot recheck Flannel's bridge; delete it by hand once no pod uses it",
				"bridge", netdev.FlannelBridge)
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(bridgeRecheck):
			}
			if done, _ := removeFlannelBridge(ctx); done {
				return
			}
		}
	}()
	return nil
}

// removeFlannelBridge deletes Flannel's cni0 once no pod is plugged into it; it reports whether
// there is nothing left to do (deleted, absent, or an error that retrying would not fix), and
// otherwise the ports that keep it.
func removeFlannelBridge(ctx context.Context) (done bool, ports []string) {
	logger := klog.FromContext(ctx)
	var deleted bool
	var err error
	deleted, ports, err = netdev.DeleteEmptyBridge(netdev.FlannelBridge)
	switch {
	case err != nil:
		logger.Error(err, "Leaving Flannel's bridge in place; delete it by hand once no pod uses it", "bridge", netdev.FlannelBridge,
			"command", "ip link delete "+netdev.FlannelBridge)
		return true, nil
	case deleted:
		logger.Info("Took over from Flannel: deleted its bridge, which no pod used any more (its route went with it)", "bridge", netdev.FlannelBridge)
		return true, nil
	}
	return len(ports) == 0, ports
}
