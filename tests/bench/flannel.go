package bench

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// FlannelNode is a node netns wired the way flanneld and the bridge CNI plugin wire a real node: a
// cni0 bridge for pods, flannel's masquerade rules and a kube-proxy-sized iptables rule set so
// that conntrack and the nat table are active, and per remote node what the backend installs:
//   - vxlan: a flannel.1 VXLAN device (VNI 1, port 8472, no learning) with a route, a permanent
//     neighbour entry and an FDB entry per remote node; pods' MTU 1450;
//   - host-gw: a plain route per remote node's pod CIDR via that node's underlay address (the nodes
//     share an L2 segment), no encapsulation; pods' MTU that of the underlay (1500).
type FlannelNode struct {
	NetNS   string // node namespace
	NodeIP  string // underlay address
	Index   int    // N in 10.245.N.0/24
	VtepMAC string
	Pods    []string // pod namespaces, first pod at 10.245.N.2, ...
}

// FlannelCluster is a set of Flannel-like nodes on one underlay switch.
type FlannelCluster struct {
	Nodes   []*FlannelNode
	backend FlannelBackend
	cmds    []string // teardown commands (reverse order)
}

// FlannelBackend is how a FlannelCluster's nodes carry pod traffic between them (flanneld's
// Backend.Type).
type FlannelBackend string

const (
	FlannelVXLAN  FlannelBackend = "vxlan"
	FlannelHostGW FlannelBackend = "host-gw"
)

const flannelClusterCIDR = "10.245.0.0/16"

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func nsRun(ns string, args ...string) error {
	return run(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// PodIP is the address of pod i on node n.
func (n *FlannelNode) PodIP(i int) string { return fmt.Sprintf("10.245.%d.%d", n.Index, i+2) }

// SetupFlannel builds len(nodeIPs) Flannel-like nodes of the vxlan backend named <prefix>fN
// (N from 1) attached to the bridge bridge in switchNS, each with podsPerNode pods, and the
// kube-proxy-like rule set of services iptables Services. All names start with prefix; Teardown
// removes them.
func SetupFlannel(prefix, switchNS, bridge string, nodeIPs []string, maskBits, podsPerNode, services int) (*FlannelCluster, error) {
	return SetupFlannelBackend(FlannelVXLAN, 1, prefix, switchNS, bridge, nodeIPs, maskBits, podsPerNode, services)
}

// SetupFlannelBackend is SetupFlannel with the backend's choice, and the nodes numbered from
// first (node N is <prefix>fN with pods in 10.245.N.0/24), so that two clusters of different
// backends can share a lab.
func SetupFlannelBackend(backend FlannelBackend, first int, prefix, switchNS, bridge string, nodeIPs []string, maskBits, podsPerNode, services int) (*FlannelCluster, error) {
	if backend != FlannelVXLAN && backend != FlannelHostGW {
		return nil, fmt.Errorf("unknown flannel backend %q (want %s or %s)", backend, FlannelVXLAN, FlannelHostGW)
	}
	c := &FlannelCluster{backend: backend}
	for i, ip := range nodeIPs {
		index := first + i
		n := &FlannelNode{NetNS: fmt.Sprintf("%sf%d", prefix, index), NodeIP: ip, Index: index,
			VtepMAC: fmt.Sprintf("0e:fa:00:00:00:%02x", index)}
		if err := c.addNode(n, prefix, switchNS, bridge, maskBits, podsPerNode); err != nil {
			c.Teardown()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := c.programPeers(n); err != nil {
			c.Teardown()
			return nil, err
		}
		if err := loadIptables(n, services); err != nil {
			c.Teardown()
			return nil, err
		}
	}
	return c, nil
}

// nodeSteps are the commands that make a baseline node: the namespace netns, plugged into bridge
// in switchNS by the veth sw (eth0 inside, with nodeIP/maskBits), forwarding.
func nodeSteps(netns, switchNS, sw, bridge, nodeIP string, maskBits int) [][]string {
	return [][]string{
		{"ip", "netns", "add", netns},
		{"ip", "-n", netns, "link", "set", "lo", "up"},
		{"ip", "link", "add", sw, "netns", switchNS, "type", "veth", "peer", "name", "eth0", "netns", netns},
		{"ip", "-n", switchNS, "link", "set", sw, "master", bridge, "up"},
		{"ip", "-n", netns, "addr", "add", fmt.Sprintf("%s/%d", nodeIP, maskBits), "dev", "eth0"},
		{"ip", "-n", netns, "link", "set", "eth0", "up"},
		{"ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
}

func (c *FlannelCluster) addNode(n *FlannelNode, prefix, switchNS, bridge string, maskBits, pods int) error {
	sw := fmt.Sprintf("%sfs%d", prefix, n.Index)
	// The pods' MTU: the underlay's less VXLAN's 50 bytes, or the underlay's with host-gw.
	mtu := "1450"
	if c.backend == FlannelHostGW {
		mtu = "1500"
	}
	steps := nodeSteps(n.NetNS, switchNS, sw, bridge, n.NodeIP, maskBits)
	if c.backend == FlannelVXLAN {
		steps = append(steps,
			[]string{"ip", "-n", n.NetNS, "link", "add", "flannel.1", "address", n.VtepMAC, "mtu", mtu, "type", "vxlan",
				"id", "1", "local", n.NodeIP, "dev", "eth0", "dstport", "8472", "nolearning"},
			[]string{"ip", "-n", n.NetNS, "addr", "add", fmt.Sprintf("10.245.%d.0/32", n.Index), "dev", "flannel.1"},
			[]string{"ip", "-n", n.NetNS, "link", "set", "flannel.1", "up"})
	}
	steps = append(steps,
		[]string{"ip", "-n", n.NetNS, "link", "add", "cni0", "mtu", mtu, "type", "bridge"},
		[]string{"ip", "-n", n.NetNS, "addr", "add", fmt.Sprintf("10.245.%d.1/24", n.Index), "dev", "cni0"},
		[]string{"ip", "-n", n.NetNS, "link", "set", "cni0", "up"})
	c.cmds = append(c.cmds, "ip netns del "+n.NetNS, "ip -n "+switchNS+" link del "+sw)
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	for i := 0; i < pods; i++ {
		pod := fmt.Sprintf("%sp%d", n.NetNS, i+1)
		host := fmt.Sprintf("veth%d", i+1)
		podIP := n.PodIP(i)
		steps := [][]string{
			{"ip", "netns", "add", pod},
			{"ip", "-n", pod, "link", "set", "lo", "up"},
			{"ip", "link", "add", host, "netns", n.NetNS, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", pod, "mtu", mtu},
			{"ip", "-n", n.NetNS, "link", "set", host, "master", "cni0", "up"},
			{"ip", "-n", pod, "addr", "add", podIP + "/24", "dev", "eth0"},
			{"ip", "-n", pod, "link", "set", "eth0", "up"},
			{"ip", "-n", pod, "route", "add", "default", "via", fmt.Sprintf("10.245.%d.1", n.Index)},
		}
		c.cmds = append(c.cmds, "ip netns del "+pod)
		for _, s := range steps {
			if err := run(s...); err != nil {
				return err
			}
		}
		n.Pods = append(n.Pods, pod)
	}
	return nil
}

// programPeers installs what flanneld's backend installs for every other node.
func (c *FlannelCluster) programPeers(n *FlannelNode) error {
	for _, p := range c.Nodes {
		if p == n {
			continue
		}
		if c.backend == FlannelHostGW {
			// host-gw's route: the peer's pod CIDR via its underlay address, on the NIC.
			if err := run("ip", "-n", n.NetNS, "route", "replace", fmt.Sprintf("10.245.%d.0/24", p.Index), "via", p.NodeIP, "dev", "eth0"); err != nil {
				return err
			}
			continue
		}
		gw := fmt.Sprintf("10.245.%d.0", p.Index)
		steps := [][]string{
			{"ip", "-n", n.NetNS, "neigh", "replace", gw, "lladdr", p.VtepMAC, "dev", "flannel.1", "nud", "permanent"},
			{"bridge", "-n", n.NetNS, "fdb", "replace", p.VtepMAC, "dev", "flannel.1", "dst", p.NodeIP, "self", "permanent"},
			{"ip", "-n", n.NetNS, "route", "replace", fmt.Sprintf("10.245.%d.0/24", p.Index), "via", gw, "dev", "flannel.1", "onlink"},
		}
		for _, s := range steps {
			if err := run(s...); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadIptables loads flannel's rules and a kube-proxy (iptables mode) rule set for services
// ClusterIP Services with two endpoints each, in one iptables-restore transaction.
func loadIptables(n *FlannelNode, services int) error {
	var b strings.Builder
	pod := fmt.Sprintf("10.245.%d.0/24", n.Index)
	b.WriteString("*filter\n:FLANNEL-FWD - [0:0]\n:KUBE-FORWARD - [0:0]\n")
	b.WriteString("-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n")
	b.WriteString("-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n")
	b.WriteString("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n")
	b.WriteString("-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n")
	fmt.Fprintf(&b, "-A FLANNEL-FWD -s %s -j ACCEPT\n-A FLANNEL-FWD -d %s -j ACCEPT\nCOMMIT\n", flannelClusterCIDR, flannelClusterCIDR)
	b.WriteString("*nat\n:FLANNEL-POSTRTG - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n")
	for i := 0; i < services; i++ {
		fmt.Fprintf(&b, ":KUBE-SVC-%06d - [0:0]\n:KUBE-SEP-%06da - [0:0]\n:KUBE-SEP-%06db - [0:0]\n", i, i, i)
	}
	b.WriteString("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	b.WriteString("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	b.WriteString("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n")
	b.WriteString("-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n")
	b.WriteString("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n")
	b.WriteString("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n")
	b.WriteString("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n")
	b.WriteString("-A KUBE-POSTROUTING -j MASQUERADE --random-fully\n")
	for i := 0; i < services; i++ {
		vip := fmt.Sprintf("10.96.%d.%d", 1+i/250, 1+i%250)
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-%06d\n", vip, i)
		fmt.Fprintf(&b, "-A KUBE-SVC-%06d -m statistic --mode random --probability 0.5 -j KUBE-SEP-%06da\n", i, i)
		fmt.Fprintf(&b, "-A KUBE-SVC-%06d -j KUBE-SEP-%06db\n", i, i)
		for _, s := range []string{"a", "b"} {
			fmt.Fprintf(&b, "-A KUBE-SEP-%06d%s -s 10.245.200.%d/32 -j KUBE-MARK-MASQ\n", i, s, 1+i%250)
			fmt.Fprintf(&b, "-A KUBE-SEP-%06d%s -p tcp -m tcp -j DNAT --to-destination 10.245.200.%d:8080\n", i, s, 1+i%250)
		}
	}
	fmt.Fprintf(&b, "-A FLANNEL-POSTRTG -s %s -d %s -j RETURN\n", pod, flannelClusterCIDR)
	fmt.Fprintf(&b, "-A FLANNEL-POSTRTG -s %s ! -d 224.0.0.0/4 -j MASQUERADE --random-fully\n", flannelClusterCIDR)
	fmt.Fprintf(&b, "-A FLANNEL-POSTRTG ! -s %s -d %s -j RETURN\n", flannelClusterCIDR, pod)
	fmt.Fprintf(&b, "-A FLANNEL-POSTRTG ! -s %s -d %s -j MASQUERADE --random-fully\n", flannelClusterCIDR, flannelClusterCIDR)
	b.WriteString("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j RETURN\nCOMMIT\n")
	cmd := exec.Command("ip", "netns", "exec", n.NetNS, "iptables-restore")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("loading iptables in %s: %w: %s", n.NetNS, err, out)
	}
	return nil
}

// AddService adds to n's kube-proxy rule set a ClusterIP Service vip:port with one endpoint,
// backend:port, as kube-proxy writes it (a KUBE-SVC chain jumping to a KUBE-SEP chain that
// masquerades hairpin traffic and DNATs), its KUBE-SERVICES rule inserted at position (1-based)
// among the other Services' rules: a new connection walks the rules before it.
func (n *FlannelNode) AddService(vip string, port int, backend string, position int) error {
	rules := [][]string{
		{"-N", "KUBE-SVC-BENCH"},
		{"-N", "KUBE-SEP-BENCH"},
		{"-A", "KUBE-SEP-BENCH", "-s", backend + "/32", "-j", "KUBE-MARK-MASQ"},
		{"-A", "KUBE-SEP-BENCH", "-p", "tcp", "-m", "tcp", "-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", backend, port)},
		{"-A", "KUBE-SVC-BENCH", "-j", "KUBE-SEP-BENCH"},
		{"-I", "KUBE-SERVICES", strconv.Itoa(position), "-d", vip + "/32", "-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(port), "-j", "KUBE-SVC-BENCH"},
	}
	for _, r := range rules {
		if err := nsRun(n.NetNS, append([]string{"iptables", "-t", "nat"}, r...)...); err != nil {
			return err
		}
	}
	return nil
}

// Teardown removes everything SetupFlannel created; safe to call twice.
func (c *FlannelCluster) Teardown() {
	for i := len(c.cmds) - 1; i >= 0; i-- {
		_ = run(strings.Fields(c.cmds[i])...)
	}
	c.cmds = nil
}
