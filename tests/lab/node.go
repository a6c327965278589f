package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// Node is a lab node: a namespace on its domain's bridge, a Node object, and an edgeplane-agent.
type Node struct {
	Name  string
	Index int
	Netns Netns
	// Domain is the node's network domain (DomainCloud, DomainSiteA, DomainSiteB).
	Domain string
	// IP is the node's private underlay address, DomainNodeIP(Domain, Index), and the Node
	// object's InternalIP.
	IP netip.Addr
	// PublicIP is where the rest of the cluster reaches the node through the router's NAT,
	// PublicIP(Index), once the lab has domains (EnableDomains).
	PublicIP netip.Addr
	PodCIDR  netip.Prefix
	Dir      string // per-node files
	RunDir   string // --run-dir: node.json
	BPFFS    string // --bpffs-root: this node's private bpffs
	IPAMDir  string // host-local dataDir
	CNICache string // libcni cache dir
	Kubecfg  string
	// SwitchPort is the node's port on its domain's bridge (in Lab.Switch), for captures.
	SwitchPort string
	Agent      *Process
	ExtraArgs  []string // appended to AgentArgs
	agentLogs  int
	lab        *Lab
	removed    bool
	host       *underlayHost

	// AgentBinary, when set, is the edgeplane-agent the next start runs instead of the lab's
	// (an upgrade test's second build).
	AgentBinary string
}

// NodeOptions tweak a node before its agent starts.
type NodeOptions struct {
	Labels map[string]string
	// NoAgent builds the node and its Node object but does not start the agent.
	NoAgent bool
	// SelfRegister builds the node's namespace and underlay only: no Node object (the node's
	// kubelet registers it) and no agent (StartCluster installs it as a DaemonSet).
	SelfRegister bool
	// AgentArgs are appended to the harness's agent flags (kept for restarts), e.g.
	// "--encap-mode=device".
	AgentArgs []string
	// Domain is the node's network domain; "" is the cloud. A node outside the cloud builds the
	// lab's domains (EnableDomains) and reaches the API server at its public address.
	Domain string
	// PublicIPOverwrite creates the Node object with the public-ip-overwrite annotation set to
	// the node's public address, so other nodes tunnel to it through the router's NAT. It builds
	// the lab's domains too.
	PublicIPOverwrite bool
	// Segment places the node on an L2 segment of its domain: 0 or 1 is the domain's bridge, 2 is
	// site-a's second segment, behind the router (routesite.go; Domain must be site-a).
	Segment int
}

// AddNode builds node number index (1-based; its addresses and pod CIDR follow from it) in its
// domain, creates its Node object, starts its agent and waits for the agent's node.json.
func (l *Lab) AddNode(ctx context.Context, name string, index int, opts NodeOptions) (*Node, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	d, err := lookupDomain(opts.Domain)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	if d, err = l.nodeSegment(ctx, d, opts.Segment); err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	n := &Node{
		Name:     name,
		Index:    index,
		Domain:   d.name,
		IP:       d.host(10 + index),
		PublicIP: PublicIP(index),
		PodCIDR:  NodePodCIDR(index),
		Dir:      filepath.Join(l.Dir, name),
		lab:      l,

		ExtraArgs: opts.AgentArgs,
	}
	if len(name) > 15 {
		return nil, fmt.Errorf("node name %q: longer than an interface name (15), which its switch port takes", name)
	}
	n.SwitchPort = name
	n.RunDir = filepath.Join(n.Dir, "run")
	n.BPFFS = filepath.Join(n.Dir, "bpffs")
	n.IPAMDir = filepath.Join(n.Dir, "ipam")
	n.CNICache = filepath.Join(n.Dir, "cni-cache")
	n.Kubecfg = filepath.Join(n.Dir, "kubeconfig")
	for _, d := range []string{n.RunDir, n.IPAMDir, n.CNICache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if d != cloudDomain || opts.PublicIPOverwrite {
		if err := l.EnableDomains(ctx); err != nil {
			return nil, err
		}
	}
	if err := l.mountBPFFS(n.BPFFS); err != nil {
		return nil, err
	}
	// The node namespace gets a short role name: interface-name limits do not apply to netns
	// names, but short names keep `ip netns` readable.
	if n.Netns, err = l.addNetns(ctx, name); err != nil {
		return nil, err
	}
	if err := l.plug(ctx, n.Netns, "eth0", name, n.IP, d); err != nil {
		return nil, err
	}
	n.host = &underlayHost{netns: n.Netns, domain: d, ip: n.IP, public: n.PublicIP}
	if err := l.joinUnderlay(ctx, n.host); err != nil {
		return nil, err
	}
	// What a provisioned Kubernetes node has (kubeadm's preflight insists on it).
	if err := n.Netns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	// The cloud reaches the API server privately; a site only through the internet (a private
	// line can be cut).
	apiURL := l.API.URL
	if d != cloudDomain {
		apiURL = l.API.PublicURL
	}
	if err := l.API.writeKubeconfig(n.Kubecfg, apiURL); err != nil {
		return nil, err
	}
	if !opts.SelfRegister {
		if err := n.createObject(ctx, opts); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	l.nodes[name] = n
	l.mu.Unlock()
	l.onClose(func() { n.stopAgent() })
	if opts.NoAgent || opts.SelfRegister {
		return n, nil
	}
	if err := n.StartAgent(); err != nil {
		return nil, err
	}
	if err := n.WaitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return n, nil
}

// Nodes returns the lab's nodes by name.
func (l *Lab) Nodes() map[string]*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]*Node, len(l.nodes))
	for k, v := range l.nodes {
		out[k] = v
	}
	return out
}

func (n *Node) createObject(ctx context.Context, opts NodeOptions) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux"}},
		Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
	}
	for k, v := range opts.Labels {
		obj.Labels[k] = v
	}
	if opts.PublicIPOverwrite {
		obj.Annotations = map[string]string{k8s.PublicIPOverwriteAnnotation: n.PublicIP.String()}
	}
	created, err := n.lab.Client.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Node %s: %w", n.Name, err)
	}
	created.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.IP.String()},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	created.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "LabNode",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	if _, err := n.lab.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting Node %s status: %w", n.Name, err)
	}
	return nil
}

// SnapshotDir is the agent's --snapshot-dir: what survives a simulated reboot of the node.
func (n *Node) SnapshotDir() string { return filepath.Join(n.Dir, "state") }

// AgentArgs are the flags the harness starts edgeplane-agent with.
func (n *Node) AgentArgs() []string {
	return append([]string{
		"--kubeconfig=" + n.Kubecfg,
		"--node-name=" + n.Name,
		"--bpffs-root=" + n.BPFFS,
		"--run-dir=" + n.RunDir,
		// The snapshot of the last good state: the node's own, never the host's /var/lib/edgeplane.
		"--snapshot-dir=" + n.SnapshotDir(),
		"--cluster-cidr=" + ClusterCIDR.String(),
		"--service-cidr=" + ServiceCIDR.String(),
		"--underlay-interface=eth0",
		// Where StartFlannel's flanneld writes it, never the host's /run/flannel.
		"--flannel-subnet-file=" + filepath.Join(n.Dir, "flannel", "subnet.env"),
	}, n.ExtraArgs...)
}

// StartAgent starts (or restarts) the node's agent. Each start logs to its own file.
func (n *Node) StartAgent() error {
	if n.Agent != nil {
		if done, _ := n.Agent.Exited(); !done {
			return fmt.Errorf("agent on %s is still running", n.Name)
		}
	}
	n.agentLogs++
	logPath := filepath.Join(n.Dir, fmt.Sprintf("agent.%d.log", n.agentLogs))
	p, err := startProcess("edgeplane-agent@"+n.Name, n.Netns, logPath, n.agentBinary(), n.AgentArgs()...)
	if err != nil {
		return err
	}
	n.Agent = p
	return nil
}

// RestartAgent stops the node's agent (SIGTERM: pins stay, pods keep forwarding), starts it again
// with extraArgs in place of the node's extra flags (kept for later restarts), and waits until the
// new agent has programmed the datapath and rewritten node.json.
func (n *Node) RestartAgent(ctx context.Context, extraArgs []string, timeout time.Duration) error {
	n.stopAgent()
	n.ExtraArgs = extraArgs
	start := time.Now()
	if err := n.StartAgent(); err != nil {
		return err
	}
	rewritten, err := n.WaitRewritten(ctx, start, timeout)
	if err != nil {
		return err
	}
	if !rewritten {
		return fmt.Errorf("agent on %s restarted with %q but did not rewrite node.json within %v; log tail:\n%s", n.Name, extraArgs, timeout, n.Agent.LogTail(40))
	}
	return nil
}

// KillAgent kills the agent with SIGKILL (pinned state stays) and removes nothing.
func (n *Node) KillAgent() {
	if n.Agent != nil {
		n.Agent.Kill()
	}
}

func (n *Node) stopAgent() {
	if n.Agent != nil {
		n.Agent.Stop(5 * time.Second)
	}
}

// WaitReady waits for the agent's node.json, failing early with the log tail if the agent exits.
func (n *Node) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if _, err := cninode.Read(n.RunDir); err == nil {
			return nil
		} else {
			last = err
		}
		if n.Agent != nil {
			if done, err := n.Agent.Exited(); done {
				return fmt.Errorf("agent on %s exited (%v) before writing node.json; log tail:\n%s", n.Name, err, n.Agent.LogTail(40))
			}
		}
		select {
		case <-ctx.Done():
			tail := ""
			if n.Agent != nil {
				tail = n.Agent.LogTail(40)
			}
			return fmt.Errorf("agent on %s not ready after %v: %w; log tail:\n%s", n.Name, timeout, last, tail)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitRewritten waits for the agent to write node.json again after since (a restarted agent
// programs the datapath again and rewrites it). It reports false, without error, when the file
// stays unchanged for the whole timeout while the agent keeps running.
func (n *Node) WaitRewritten(ctx context.Context, since time.Time, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(cninode.Path(n.RunDir)); err == nil && !st.ModTime().Before(since) {
			if _, err := cninode.Read(n.RunDir); err == nil {
				return true, nil
			}
		}
		if done, err := n.Agent.Exited(); done {
			return false, fmt.Errorf("agent on %s exited (%v); log tail:\n%s", n.Name, err, n.Agent.LogTail(40))
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false, nil
}

// Config reads the node.json the agent wrote.
func (n *Node) Config() (*cninode.Config, error) { return cninode.Read(n.RunDir) }

// Remove takes the node out of the cluster: the agent is stopped, the Node object deleted (pods
// on it are deleted first, through CNI DEL), and its namespace removed. Other nodes are expected to
// forget it.
func (n *Node) Remove(ctx context.Context) error {
	l := n.lab
	var errs []error
	for _, p := range l.Pods() {
		if p.Node == n {
			if err := p.Delete(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	n.stopAgent()
	if err := l.Client.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("deleting Node %s: %w", n.Name, err))
	}
	if err := deleteNetns(n.Netns); err != nil {
		errs = append(errs, err)
	}
	if n.host != nil {
		if err := l.leaveUnderlay(ctx, n.host); err != nil {
			errs = append(errs, err)
		}
	}
	l.mu.Lock()
	delete(l.nodes, n.Name)
	l.mu.Unlock()
	n.removed = true
	return errors.Join(errs...)
}

// AgentLogs returns the tail of every agent log of this node (one per start).
func (n *Node) AgentLogs(lines int) string {
	var s string
	for i := 1; i <= n.agentLogs; i++ {
		p := filepath.Join(n.Dir, fmt.Sprintf("agent.%d.log", i))
		s += fmt.Sprintf("----- %s (last %d lines)\n%s\n", p, lines, TailFile(p, lines))
	}
	return s
}

// SetSwitchPortGSOIPv4 raises the IPv4 GSO and GRO size of n's port on the lab's switch (the
// peer of its eth0 there) for a BIG TCP node (the agent's --ipv4-big-tcp): a NIC's TSO puts
// such a node's 192 KiB packets on the wire as frames, which in the lab they cross whole; a port
// left at 64 KiB would have the switch segment them in software on their way (correct, and
// slower than the hardware it stands for).
func (l *Lab) SetSwitchPortGSOIPv4(n *Node, size int) error {
	return InNetns(l.Switch, func() error {
		port, err := netlink.LinkByName(n.Name)
		if err != nil {
			return fmt.Errorf("%s's switch port: %w", n.Name, err)
		}
		return netdev.SetGSOIPv4MaxSize(port, size)
	})
}
