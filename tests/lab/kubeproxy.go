package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// A kube-proxy node is the baseline Services dataplane: the real kube-proxy
// (scripts/build-k8s.sh kube-proxy) in iptables mode, in the namespace of a node added with
// NodeOptions{NoAgent: true}, authenticated as system:kube-proxy. Everything it programs lives in
// the node's namespace: its nat and filter rules, route_localnet there (for localhost NodePorts),
// conntrack entries it flushes. The conntrack sysctls it would tune are left alone: in a child
// namespace nf_conntrack_max is read-only (the host's) and the hash size is a module parameter of
// the whole machine, so --conntrack-max-per-core=0 skips both, and the timeouts are set to 0 ("leave
// as is") so that kube-proxy writes nothing under net/netfilter at all. Health and metrics listen
// on the node namespace's own loopback, so every node uses the default ports.
//
// Its pods need a CNI chain: UseBridgeCNI gives the node the bridge plugin (cni0, host-local on the
// node's pod CIDR), which connects the node's pods with each other and the node; StartFlannel
// gives it Flannel's chain and VXLAN to the other nodes instead.

// KubeProxyOptions tweak kube-proxy.
type KubeProxyOptions struct {
	// ExtraArgs are appended to KubeProxy.Args (e.g. "--masquerade-all"). The harness reads the
	// iptables rules, so the proxy mode stays iptables.
	ExtraArgs []string
}

// KubeProxy is kube-proxy running on a lab node.
type KubeProxy struct {
	Node       *Node
	Dir        string // <node dir>/kube-proxy: kubeconfig, logs
	Kubeconfig string
	Process    *Process
	bin        string
	extraArgs  []string
	starts     int
}

// Loopback ports of kube-proxy's health and metrics servers in a node namespace (the defaults).
const (
	KubeProxyHealthzPort = 10256
	KubeProxyMetricsPort = 10249
)

// StartKubeProxy starts kube-proxy on n, a node without edgeplane's agent, and waits until it has
// synced its rules once (the nat table's KUBE-SERVICES chain has rules: the API server's
// kubernetes Service at least). The lab's Close stops it.
func (l *Lab) StartKubeProxy(ctx context.Context, n *Node, opts KubeProxyOptions) (*KubeProxy, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if n.Agent != nil {
		return nil, fmt.Errorf("node %s runs edgeplane-agent; a kube-proxy node is added with NoAgent", n.Name)
	}
	k := &KubeProxy{Node: n, Dir: filepath.Join(n.Dir, "kube-proxy"), bin: filepath.Join(l.cfg.K8sBin, "kube-proxy"), extraArgs: opts.ExtraArgs}
	if _, err := os.Stat(k.bin); err != nil {
		return nil, fmt.Errorf("kube-proxy: %w (run scripts/build-k8s.sh kube-proxy, or make test)", err)
	}
	if err := os.MkdirAll(k.Dir, 0o755); err != nil {
		return nil, err
	}
	k.Kubeconfig = filepath.Join(k.Dir, "kubeconfig")
	apiURL := l.API.URL
	if n.Domain != DomainCloud {
		apiURL = l.API.PublicURL
	}
	if err := l.API.writeComponentKubeconfig(k.Kubeconfig, apiURL, "system:kube-proxy"); err != nil {
		return nil, err
	}
	// Pod-to-Service-to-pod on one bridge needs the bridged reply to pass conntrack.
	if err := n.Netns.ensureBridgeNetfilter(ctx); err != nil {
		return nil, err
	}
	l.onClose(k.Stop)
	if err := k.Start(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// Args are the flags kube-proxy runs with.
func (k *KubeProxy) Args() []string {
	return append([]string{
		"--kubeconfig=" + k.Kubeconfig,
		"--hostname-override=" + k.Node.Name,
		"--proxy-mode=iptables",
		"--cluster-cidr=" + ClusterCIDR.String(),
		fmt.Sprintf("--healthz-bind-address=127.0.0.1:%d", KubeProxyHealthzPort),
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", KubeProxyMetricsPort),
		// Write no conntrack sysctl (see the comment at the top of the file).
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--conntrack-udp-timeout=0",
		"--conntrack-udp-timeout-stream=0",
		// Not -999: a test process has no claim to outlive the rest of the machine.
		"--oom-score-adj=0",
		"--v=2",
	}, k.extraArgs...)
}

// Start starts (or restarts) kube-proxy, each start logging to its own file, and waits for its
// first sync.
func (k *KubeProxy) Start(ctx context.Context) error {
	if k.Process != nil {
		if done, _ := k.Process.Exited(); !done {
			return fmt.Errorf("kube-proxy on %s is still running", k.Node.Name)
		}
	}
	k.starts++
	start := time.Now()
	p, err := startProcess("kube-proxy@"+k.Node.Name, k.Node.Netns, filepath.Join(k.Dir, fmt.Sprintf("kube-proxy.%d.log", k.starts)), k.bin, k.Args()...)
	if err != nil {
		return err
	}
	k.Process = p
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		rules, err := k.NATRules(ctx)
		if err == nil && strings.Contains(rules, "\n-A KUBE-SERVICES ") {
			k.Node.lab.Logf("kube-proxy on %s: rules synced after %v", k.Node.Name, time.Since(start).Round(time.Millisecond))
			return nil
		}
		if done, werr := p.Exited(); done {
			return fmt.Errorf("kube-proxy on %s exited (%v); log tail:\n%s", k.Node.Name, werr, p.LogTail(40))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-proxy on %s programmed no KUBE-SERVICES rule within 60s (%v); log tail:\n%s", k.Node.Name, err, p.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops kube-proxy (SIGTERM, then SIGKILL). Its rules stay, as on a real node.
func (k *KubeProxy) Stop() {
	if k.Process != nil {
		k.Process.Stop(5 * time.Second)
	}
}

// LogTail is the tail of the current kube-proxy log.
func (k *KubeProxy) LogTail(lines int) string {
	if k.Process == nil {
		return "(kube-proxy not started)"
	}
	return k.Process.LogTail(lines)
}

// NATRules is iptables-save's nat table in the node's namespace.
func (k *KubeProxy) NATRules(ctx context.Context) (string, error) {
	return k.Node.Netns.Exec(ctx, "iptables-save", "-t", "nat")
}

// Backends reads which endpoints kube-proxy's nat rules DNAT traffic for frontend over proto to:
// a cluster IP, external IP or load-balancer ingress IP with the Service port (KUBE-SERVICES), or
// the node's IP or 127.0.0.1 with a node port (KUBE-NODEPORTS). It follows the matching rules
// through the KUBE-SVC/SVL/EXT chains to the DNAT target of every KUBE-SEP chain reached. The
// result is sorted; none means no rule for the frontend (or one that rejects: no ready endpoints).
func (k *KubeProxy) Backends(ctx context.Context, proto corev1.Protocol, frontend netip.AddrPort) ([]netip.AddrPort, error) {
	rules, err := k.NATRules(ctx)
	if err != nil {
		return nil, err
	}
	nodePort := frontend.Addr() == k.Node.IP || frontend.Addr().IsLoopback()
	return natBackends(rules, proto, frontend, nodePort)
}

// WaitBackends polls Backends until it lists want endpoints, and returns them.
func (k *KubeProxy) WaitBackends(ctx context.Context, proto corev1.Protocol, frontend netip.AddrPort, want int, timeout time.Duration) ([]netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var got []netip.AddrPort
	var err error
	for {
		if got, err = k.Backends(ctx, proto, frontend); err == nil && len(got) == want {
			return got, nil
		}
		if done, werr := k.Process.Exited(); done {
			return nil, fmt.Errorf("kube-proxy on %s exited (%v); log tail:\n%s", k.Node.Name, werr, k.LogTail(40))
		}
		select {
		case <-ctx.Done():
			return got, fmt.Errorf("kube-proxy on %s: %s %s has backends %v (err %v), want %d, after %v", k.Node.Name, proto, frontend, got, err, want, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// natBackends follows iptables-save nat output from the KUBE-SERVICES rules for frontend (and the
// KUBE-NODEPORTS ones for its port, for a node port) to the DNAT targets of the KUBE-SEP chains
// they reach.
func natBackends(rules string, proto corev1.Protocol, frontend netip.AddrPort, nodePort bool) ([]netip.AddrPort, error) {
	chains := map[string][][]string{}
	for _, line := range strings.Split(rules, "\n") {
		if !strings.HasPrefix(line, "-A ") {
			continue
		}
		f, err := ruleFields(line)
		if err != nil {
			return nil, err
		}
		chains[f[1]] = append(chains[f[1]], f[2:])
	}
	seen := map[string]bool{}
	backends := map[netip.AddrPort]bool{}
	var follow func(chain string) error
	follow = func(chain string) error {
		if seen[chain] {
			return nil
		}
		seen[chain] = true
		for _, r := range chains[chain] {
			target := ruleOption(r, "-j")
			switch {
			case target == "DNAT" && strings.HasPrefix(chain, "KUBE-SEP-"):
				to, err := netip.ParseAddrPort(ruleOption(r, "--to-destination"))
				if err != nil {
					return fmt.Errorf("chain %s: DNAT target: %w", chain, err)
				}
				backends[to] = true
			case strings.HasPrefix(target, "KUBE-SVC-"), strings.HasPrefix(target, "KUBE-SVL-"),
				strings.HasPrefix(target, "KUBE-EXT-"), strings.HasPrefix(target, "KUBE-SEP-"):
				if err := follow(target); err != nil {
					return err
				}
			}
		}
		return nil
	}
	dst := frontend.Addr().String() + "/32"
	matches := func(r []string, d string) bool {
		return ruleOption(r, "-d") == d && strings.EqualFold(ruleOption(r, "-p"), string(proto)) &&
			ruleOption(r, "--dport") == fmt.Sprint(frontend.Port())
	}
	var entries []string
	for _, r := range chains["KUBE-SERVICES"] {
		if matches(r, dst) {
			entries = append(entries, ruleOption(r, "-j"))
		}
	}
	if nodePort {
		for _, r := range chains["KUBE-NODEPORTS"] {
			if matches(r, "") || matches(r, dst) {
				entries = append(entries, ruleOption(r, "-j"))
			}
		}
	}
	for _, chain := range entries {
		if err := follow(chain); err != nil {
			return nil, err
		}
	}
	out := make([]netip.AddrPort, 0, len(backends))
	for b := range backends {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Compare(out[j]) < 0 })
	return out, nil
}

// ruleFields splits an iptables-save line into words, a double-quoted comment being one word.
func ruleFields(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inWord {
		out = append(out, cur.String())
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("short rule %q", line)
	}
	return out, nil
}

// ruleOption is the value following opt in a rule's words, "" if absent.
func ruleOption(words []string, opt string) string {
	for i := 0; i+1 < len(words); i++ {
		if words[i] == opt {
			return words[i+1]
		}
	}
	return ""
}

// BridgeNetworkName is the network name of the conflist UseBridgeCNI installs.
const BridgeNetworkName = "lab-bridge"

// UseBridgeCNI installs a conflist in n's CNI config dir that wires n's pods with the bridge
// plugin: a cni0 bridge that is their default gateway, host-local addresses from n's pod CIDR,
// hairpin mode for a pod reaching itself through a Service, no masquerade, and portmap; the chain
// kube-proxy clusters commonly run under (Flannel delegates to the same). AddPod on n then uses it.
// It routes nothing between nodes: the node's pods reach each other and the node.
func (l *Lab) UseBridgeCNI(n *Node) error {
	err := os.Symlink(filepath.Join(l.cfg.CNIPluginsBin, "bridge"), filepath.Join(l.pluginDir, "bridge"))
	if err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if _, err := os.Stat(filepath.Join(l.pluginDir, "bridge")); err != nil {
		return fmt.Errorf("the bridge CNI plugin: %w (run scripts/install-cni-plugins.sh)", err)
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       BridgeNetworkName,
		"plugins": []any{
			map[string]any{
				"type":             "bridge",
				"bridge":           "cni0",
				"isGateway":        true,
				"isDefaultGateway": true,
				"hairpinMode":      true,
				"ipMasq":           false,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR.String()}}},
					"dataDir": n.IPAMDir,
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.ConflistDir(), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.ConflistDir(), "10-bridge.conflist"), b, 0o644)
}
