package bench

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// The veth floor (path "veth-floor"): the cheapest a pod path over a veth pair can be on this
// kernel. Each node is a namespace on the lab's underlay switch; each pod a namespace joined to it
// by a plain veth pair, wired the way Calico wires a pod without its policy: the pod has a /32
// address and a default route via a link-local gateway (169.254.1.1) that a permanent neighbour
// entry resolves to the host-side veth's MAC; the node has a /32 route to each of its pods on the
// host-side veth and, per peer node, a route to the peer's pod CIDR via the peer's underlay
// address (the nodes share one L2 segment). No bridge, no BPF program, no encapsulation, no
// netfilter rule: the kernel's veth hop and IPv4 forwarding only. Against it, the underlay's
// advantage is what the pod's veth hop costs on this kernel, and a pod path's ratio is its own
// cost above that hop (docs/benchmarks.md "The veth floor").

// vethFloorGateway is the pods' default gateway, as Calico's: link-local, never on the wire.
const vethFloorGateway = "169.254.1.1"

// VethFloorNode is one node of the veth floor.
type VethFloorNode struct {
	NetNS  string // node namespace
	NodeIP string // underlay address
	Index  int    // N in 10.246.N.0/24, the node's pod CIDR
	// Pods are the pod namespaces, pod i at PodIP(i) behind host-side veth HostVeth(i).
	Pods []string
}

// VethFloorCluster is a set of veth-floor nodes on one underlay switch.
type VethFloorCluster struct {
	Nodes []*VethFloorNode
	cmds  []string // teardown commands (reverse order)
}

// PodIP is the address of pod i on node n.
func (n *VethFloorNode) PodIP(i int) string { return fmt.Sprintf("10.246.%d.%d", n.Index, i+2) }

// PodCIDR is node n's pod CIDR.
func (n *VethFloorNode) PodCIDR() string { return fmt.Sprintf("10.246.%d.0/24", n.Index) }

// HostVeth is the host-side veth of pod i on node n (in the node's namespace).
func (n *VethFloorNode) HostVeth(i int) string { return fmt.Sprintf("vf%d", i+1) }

// SetupVethFloor builds len(nodeIPs) veth-floor nodes named <prefix>vN (N from first) attached
// to the bridge bridge in switchNS, each with podsPerNode pods, and routes every node's pod CIDR
// on every other node via its underlay address. All names start with prefix; Teardown removes
// them.
func SetupVethFloor(prefix, switchNS, bridge string, first int, nodeIPs []string, maskBits, podsPerNode int) (*VethFloorCluster, error) {
	c := &VethFloorCluster{}
	for i, ip := range nodeIPs {
		n := &VethFloorNode{NetNS: fmt.Sprintf("%sv%d", prefix, first+i), NodeIP: ip, Index: first + i}
		if err := c.addNode(n, prefix, switchNS, bridge, maskBits, podsPerNode); err != nil {
			c.Teardown()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		for _, p := range c.Nodes {
			if p == n {
				continue
			}
			if err := run("ip", "-n", n.NetNS, "route", "replace", p.PodCIDR(), "via", p.NodeIP, "dev", "eth0"); err != nil {
				c.Teardown()
				return nil, err
			}
		}
	}
	return c, nil
}

func (c *VethFloorCluster) addNode(n *VethFloorNode, prefix, switchNS, bridge string, maskBits, pods int) error {
	sw := fmt.Sprintf("%svs%d", prefix, n.Index)
	c.cmds = append(c.cmds, "ip netns del "+n.NetNS, "ip -n "+switchNS+" link del "+sw)
	for _, s := range nodeSteps(n.NetNS, switchNS, sw, bridge, n.NodeIP, maskBits) {
		if err := run(s...); err != nil {
			return err
		}
	}
	for i := 0; i < pods; i++ {
		pod := fmt.Sprintf("%sp%d", n.NetNS, i+1)
		host, podIP := n.HostVeth(i), n.PodIP(i)
		c.cmds = append(c.cmds, "ip netns del "+pod)
		for _, s := range [][]string{
			{"ip", "netns", "add", pod},
			{"ip", "-n", pod, "link", "set", "lo", "up"},
			{"ip", "link", "add", host, "netns", n.NetNS, "type", "veth", "peer", "name", "eth0", "netns", pod},
			{"ip", "-n", n.NetNS, "link", "set", host, "up"},
			{"ip", "-n", pod, "addr", "add", podIP + "/32", "dev", "eth0"},
			{"ip", "-n", pod, "link", "set", "eth0", "up"},
			{"ip", "-n", pod, "route", "add", vethFloorGateway, "dev", "eth0", "scope", "link"},
			{"ip", "-n", pod, "route", "add", "default", "via", vethFloorGateway, "dev", "eth0"},
			{"ip", "-n", n.NetNS, "route", "add", podIP + "/32", "dev", host, "scope", "link"},
		} {
			if err := run(s...); err != nil {
				return err
			}
		}
		// Both neighbour entries static, so that no ARP is needed across the hop (Calico answers
		// the pod's ARP for the gateway by proxy ARP; the packets' path is the same).
		hostMAC, err := linkMAC(n.NetNS, host)
		if err != nil {
			return err
		}
		podMAC, err := linkMAC(pod, "eth0")
		if err != nil {
			return err
		}
		for _, s := range [][]string{
			{"ip", "-n", pod, "neigh", "replace", vethFloorGateway, "lladdr", hostMAC, "dev", "eth0", "nud", "permanent"},
			{"ip", "-n", n.NetNS, "neigh", "replace", podIP, "lladdr", podMAC, "dev", host, "nud", "permanent"},
		} {
			if err := run(s...); err != nil {
				return err
			}
		}
		n.Pods = append(n.Pods, pod)
	}
	return nil
}

// linkMAC is the MAC address of link ifname in namespace netns.
func linkMAC(netns, ifname string) (string, error) {
	out, err := exec.Command("ip", "-n", netns, "-j", "link", "show", "dev", ifname).Output()
	if err != nil {
		return "", fmt.Errorf("ip -n %s link show %s: %w", netns, ifname, err)
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 || links[0].Address == "" {
		return "", fmt.Errorf("ip -n %s link show %s: no address in %q (%v)", netns, ifname, out, err)
	}
	return links[0].Address, nil
}

// Teardown removes everything SetupVethFloor created; safe to call twice.
func (c *VethFloorCluster) Teardown() {
	for i := len(c.cmds) - 1; i >= 0; i-- {
		_ = run(strings.Fields(c.cmds[i])...)
	}
	c.cmds = nil
}

// linkPackets is a link's packet counters (ip -s: stats64).
type linkPackets struct{ rx, tx uint64 }

// readLinkPackets reads the packet counters of link ifname in namespace netns.
func readLinkPackets(netns, ifname string) (linkPackets, error) {
	out, err := exec.Command("ip", "-n", netns, "-j", "-s", "link", "show", "dev", ifname).Output()
	if err != nil {
		return linkPackets{}, fmt.Errorf("ip -n %s -s link show %s: %w", netns, ifname, err)
	}
	var links []struct {
		Stats struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
			TX struct {
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return linkPackets{}, fmt.Errorf("ip -n %s -s link show %s: unexpected %q (%v)", netns, ifname, out, err)
	}
	return linkPackets{rx: links[0].Stats.RX.Packets, tx: links[0].Stats.TX.Packets}, nil
}

// CheckPath proves that pod 0 of from reaches pod 0 of to by the veth floor's path and nothing
// else: every namespace on the way holds only the links the floor created (lo, the underlay
// port, the pods' veths), the nodes have no default route, no BPF program is attached anywhere on the way (bpftool net) and no
// netfilter rule is loaded (iptables-save), and pinging across moves every counter of the path,
// in order: the pod's eth0 (tx), its host-side veth (rx), the node's eth0 (tx), the peer node's
// eth0 (rx), the peer's host-side veth (tx), the peer pod's eth0 (rx).
func (c *VethFloorCluster) CheckPath(from, to *VethFloorNode) error {
	for _, n := range []*VethFloorNode{from, to} {
		want := map[string]bool{"lo": true, "eth0": true}
		for i := range n.Pods {
			want[n.HostVeth(i)] = true
		}
		if err := onlyLinks(n.NetNS, want); err != nil {
			return err
		}
		// No default route on a node: a pod's packet to anything but the lab's pods and nodes
		// goes nowhere.
		if out, err := exec.Command("ip", "-n", n.NetNS, "route", "show", "default").CombinedOutput(); err != nil || len(out) != 0 {
			return fmt.Errorf("veth floor: %s has a default route (%v): %s", n.NetNS, err, out)
		}
		for _, ns := range append([]string{n.NetNS}, n.Pods...) {
			if err := noBPFNoNetfilter(ns); err != nil {
				return err
			}
		}
		for _, pod := range n.Pods {
			if err := onlyLinks(pod, map[string]bool{"lo": true, "eth0": true}); err != nil {
				return err
			}
		}
	}
	hops := []struct {
		netns, ifname string
		tx            bool
	}{
		{from.Pods[0], "eth0", true}, {from.NetNS, from.HostVeth(0), false}, {from.NetNS, "eth0", true},
		{to.NetNS, "eth0", false}, {to.NetNS, to.HostVeth(0), true}, {to.Pods[0], "eth0", false},
	}
	before := make([]linkPackets, len(hops))
	for i, h := range hops {
		var err error
		if before[i], err = readLinkPackets(h.netns, h.ifname); err != nil {
			return err
		}
	}
	const pings = 50
	if out, err := exec.Command("ip", "netns", "exec", from.Pods[0], "ping", "-q", "-c", fmt.Sprint(pings), "-i", "0.01", "-W", "2",
		to.PodIP(0)).CombinedOutput(); err != nil {
		return fmt.Errorf("veth floor: ping %s from %s: %w: %s", to.PodIP(0), from.Pods[0], err, out)
	}
	for i, h := range hops {
		after, err := readLinkPackets(h.netns, h.ifname)
		if err != nil {
			return err
		}
		moved, dir := after.rx-before[i].rx, "rx"
		if h.tx {
			moved, dir = after.tx-before[i].tx, "tx"
		}
		if moved < pings {
			return fmt.Errorf("veth floor: %d pings from %s to %s moved %s's %s %s by %d packets: the path is not the one wired",
				pings, from.PodIP(0), to.PodIP(0), h.netns, h.ifname, dir, moved)
		}
	}
	return nil
}

// onlyLinks fails when namespace netns holds a link not in want.
func onlyLinks(netns string, want map[string]bool) error {
	out, err := exec.Command("ip", "-n", netns, "-j", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("ip -n %s link show: %w", netns, err)
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return fmt.Errorf("ip -n %s link show: %w", netns, err)
	}
	for _, l := range links {
		if !want[l.Name] {
			return fmt.Errorf("veth floor: %s has link %s, which the floor did not create", netns, l.Name)
		}
	}
	return nil
}

// noBPFNoNetfilter fails when a BPF program is attached to a link of namespace netns (XDP, tc or
// tcx) or a netfilter rule is loaded there.
func noBPFNoNetfilter(netns string) error {
	out, err := exec.Command("ip", "netns", "exec", netns, "bpftool", "-j", "net", "show").Output()
	if err != nil {
		return fmt.Errorf("bpftool net show in %s: %w", netns, err)
	}
	var nets []map[string][]json.RawMessage
	if err := json.Unmarshal(out, &nets); err != nil {
		return fmt.Errorf("bpftool net show in %s: %w: %s", netns, err, out)
	}
	for _, n := range nets {
		for kind, progs := range n {
			if len(progs) > 0 {
				return fmt.Errorf("veth floor: %s has BPF programs attached (%s): %s", netns, kind, out)
			}
		}
	}
	out, err = exec.Command("ip", "netns", "exec", netns, "iptables-save").Output()
	if err != nil {
		return fmt.Errorf("iptables-save in %s: %w", netns, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-A ") {
			return fmt.Errorf("veth floor: %s has netfilter rules: %s", netns, line)
		}
	}
	return nil
}
