package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A Flannel node runs real flanneld (scripts/build-flanneld.sh) in its node namespace instead of
// edgeplane-agent, as a DaemonSet from kube-flannel.yml would: vxlan backend, --kube-subnet-mgr
// (the lease is the Node's spec.podCIDR, the VTEP is published in the flannel.alpha.coreos.com/*
// annotations), --ip-masq, the node's underlay NIC eth0. Its pods are wired by Flannel's CNI plugin
// "flannel", which reads flanneld's subnet.env and delegates to bridge + host-local (cni0 bridge,
// the node's pod CIDR), from a conflist installed in the node's CNI config dir as kube-flannel's
// install-cni step does; AddPod picks it up from there (Node.Conflist).

// EnvFlannelBin names the directory holding flanneld; `make test` sets it from
// scripts/build-flanneld.sh.
const EnvFlannelBin = "FLANNEL_BIN"

// FlannelNetworkName is the network name of kube-flannel's conflist.
const FlannelNetworkName = "cbr0"

// FlannelBinFromEnv reads FLANNEL_BIN and checks that flanneld is there and that the lab's CNI
// plugins directory has Flannel's CNI plugin and bridge. The error tells how to get them.
func FlannelBinFromEnv(cfg Config) (string, error) {
	dir := os.Getenv(EnvFlannelBin)
	var errs []error
	if dir == "" {
		errs = append(errs, fmt.Errorf("%s is not set", EnvFlannelBin))
	} else if _, err := os.Stat(filepath.Join(dir, "flanneld")); err != nil {
		errs = append(errs, fmt.Errorf("%s=%s: %w", EnvFlannelBin, dir, err))
	}
	for _, p := range []string{"flannel", "bridge"} {
		if _, err := os.Stat(filepath.Join(cfg.CNIPluginsBin, p)); err != nil {
			errs = append(errs, fmt.Errorf("%s=%s: %w", EnvCNIPluginsBin, cfg.CNIPluginsBin, err))
		}
	}
	if len(errs) > 0 {
		return "", fmt.Errorf("the Flannel interop lab needs real flanneld and Flannel's CNI plugin: run `make test` (or set %s=$(scripts/build-flanneld.sh) and %s=$(scripts/install-cni-plugins.sh) as the Makefile does): %w",
			EnvFlannelBin, EnvCNIPluginsBin, errors.Join(errs...))
	}
	return dir, nil
}

// Flannel is flanneld running on a lab node.
type Flannel struct {
	Node       *Node
	Dir        string // <node dir>/flannel: net-conf.json, subnet.env, the CNI plugin's data
	NetConf    string // flanneld's --net-config-path
	SubnetFile string // flanneld's --subnet-file, what the CNI plugin reads
	Process    *Process
	bin        string
	starts     int
}

// StartFlannel starts flanneld from binDir (FlannelBinFromEnv) on n, a node added with
// NodeOptions{NoAgent: true}, waits until it has written subnet.env and published its VTEP in the
// Node's annotations, and installs the flannel conflist for n's pods. The lab's Close stops it.
func (l *Lab) StartFlannel(ctx context.Context, n *Node, binDir string) (*Flannel, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if n.Agent != nil {
		return nil, fmt.Errorf("node %s runs edgeplane-agent; a Flannel node is added with NoAgent", n.Name)
	}
	f := &Flannel{Node: n, Dir: filepath.Join(n.Dir, "flannel"), bin: filepath.Join(binDir, "flanneld")}
	f.NetConf = filepath.Join(f.Dir, "net-conf.json")
	f.SubnetFile = filepath.Join(f.Dir, "subnet.env")
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return nil, err
	}
	netConf, err := json.Marshal(map[string]any{"Network": ClusterCIDR.String(), "Backend": map[string]any{"Type": "vxlan"}})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.NetConf, netConf, 0o644); err != nil {
		return nil, err
	}
	if err := l.linkFlannelPlugins(); err != nil {
		return nil, err
	}
	if err := n.Netns.ensureBridgeNetfilter(ctx); err != nil {
		return nil, err
	}
	if err := n.annotateAsKubelet(ctx); err != nil {
		return nil, err
	}
	l.onClose(f.Stop)
	if err := f.Start(ctx); err != nil {
		return nil, err
	}
	if err := f.installConflist(); err != nil {
		return nil, err
	}
	return f, nil
}

// Args are the flags flanneld runs with (kube-flannel.yml's, plus the lab's paths).
func (f *Flannel) Args() []string {
	return []string{
		"--kube-subnet-mgr",
		"--kubeconfig-file=" + f.Node.Kubecfg,
		"--iface=eth0",
		"--ip-masq",
		"--net-config-path=" + f.NetConf,
		"--subnet-file=" + f.SubnetFile,
	}
}

// Start starts (or restarts) flanneld, each start logging to its own file in the node's dir, and
// waits until it is up: subnet.env written (after this start) and the VTEP published.
func (f *Flannel) Start(ctx context.Context) error {
	if f.Process != nil {
		if done, _ := f.Process.Exited(); !done {
			return fmt.Errorf("flanneld on %s is still running", f.Node.Name)
		}
	}
	f.starts++
	since := time.Now()
	logPath := filepath.Join(f.Node.Dir, fmt.Sprintf("flanneld.%d.log", f.starts))
	// env(1) sets NODE_NAME and execs flanneld, so the pid and process group stay flanneld's.
	p, err := startProcess("flanneld@"+f.Node.Name, f.Node.Netns, logPath, "env",
		append([]string{"NODE_NAME=" + f.Node.Name, f.bin}, f.Args()...)...)
	if err != nil {
		return err
	}
	f.Process = p
	return f.waitUp(ctx, since, 60*time.Second)
}

// Stop stops flanneld (SIGTERM, then SIGKILL). What it programmed (flannel.1, routes, iptables)
// stays, as on a real node.
func (f *Flannel) Stop() {
	if f.Process != nil {
		f.Process.Stop(5 * time.Second)
	}
}

// LogTail is the tail of the current flanneld log.
func (f *Flannel) LogTail(lines int) string {
	if f.Process == nil {
		return "(flanneld not started)"
	}
	return f.Process.LogTail(lines)
}

// SubnetEnv reads flanneld's subnet.env (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU,
// FLANNEL_IPMASQ).
func (f *Flannel) SubnetEnv() (map[string]string, error) {
	file, err := os.Open(f.SubnetFile)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	env := map[string]string{}
	s := bufio.NewScanner(file)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok {
			env[k] = v
		}
	}
	return env, s.Err()
}

func (f *Flannel) waitUp(ctx context.Context, since time.Time, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = f.up(ctx, since); last == nil {
			return nil
		}
		if done, err := f.Process.Exited(); done {
			return fmt.Errorf("flanneld on %s exited (%v): %w; log tail:\n%s", f.Node.Name, err, last, f.LogTail(40))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("flanneld on %s not up after %v: %w; log tail:\n%s", f.Node.Name, timeout, last, f.LogTail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// up reports why flanneld is not up yet: subnet.env missing, older than since or incomplete, or
// no VTEP published.
func (f *Flannel) up(ctx context.Context, since time.Time) error {
	st, err := os.Stat(f.SubnetFile)
	if err != nil {
		return err
	}
	if st.ModTime().Before(since) {
		return fmt.Errorf("%s not rewritten since flanneld started", f.SubnetFile)
	}
	env, err := f.SubnetEnv()
	if err != nil {
		return err
	}
	for _, k := range []string{"FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"} {
		if env[k] == "" {
			return fmt.Errorf("%s has no %s yet", f.SubnetFile, k)
		}
	}
	obj, err := f.Node.lab.Client.CoreV1().Nodes().Get(ctx, f.Node.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if obj.Annotations["flannel.alpha.coreos.com/backend-data"] == "" {
		return fmt.Errorf("Node %s has no flannel.alpha.coreos.com/backend-data annotation yet", f.Node.Name)
	}
	return nil
}

// installConflist writes kube-flannel's conflist (flannel, delegating to bridge with hairpin mode
// and the pod's default route via cni0, then portmap) into the node's CNI config dir, with the
// node's own paths for what a real node keeps in /run/flannel, /var/lib/cni/flannel and
// /var/lib/cni/networks.
func (f *Flannel) installConflist() error {
	conf := map[string]any{
		"name":       FlannelNetworkName,
		"cniVersion": "0.3.1",
		"plugins": []any{
			map[string]any{
				"type":       "flannel",
				"subnetFile": f.SubnetFile,
				"dataDir":    filepath.Join(f.Dir, "cni-data"),
				"ipam":       map[string]any{"type": "host-local", "dataDir": f.Node.IPAMDir},
				"delegate":   map[string]any{"hairpinMode": true, "isDefaultGateway": true},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.Node.ConflistDir(), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(f.Node.ConflistDir(), "10-flannel.conflist"), b, 0o644)
}

// linkFlannelPlugins adds Flannel's CNI plugin and the bridge it delegates to to the lab's plugin
// dir (the edgeplane chain does not use them).
func (l *Lab) linkFlannelPlugins() error {
	for _, p := range []string{"flannel", "bridge"} {
		err := os.Symlink(filepath.Join(l.cfg.CNIPluginsBin, p), filepath.Join(l.pluginDir, p))
		if err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

// annotateAsKubelet gives the Node the annotations a kubelet sets when it registers. flanneld
// v0.28's kube subnet manager writes its own into node.Annotations without allocating the map,
// and panics ("assignment to entry in nil map") on a Node that has none, which never happens
// behind a real kubelet.
func (n *Node) annotateAsKubelet(ctx context.Context) error {
	patch := []byte(`{"metadata":{"annotations":{"node.alpha.kubernetes.io/ttl":"0","volumes.kubernetes.io/controller-managed-attach-detach":"true"}}}`)
	if _, err := n.lab.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotating Node %s as a kubelet would: %w", n.Name, err)
	}
	return nil
}

// ensureBridgeNetfilter makes sure br_netfilter's sysctls exist in ns: flanneld (iptables mode)
// refuses to start without them, as kubeadm's preflight would on a real node. The module is
// loaded once for the machine if it is not yet.
func (ns Netns) ensureBridgeNetfilter(ctx context.Context) error {
	present := func() bool {
		err := InNetns(ns, func() error {
			_, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables")
			return err
		})
		return err == nil
	}
	if present() {
		return nil
	}
	if _, err := run(ctx, "modprobe", "br_netfilter"); err != nil {
		return fmt.Errorf("flanneld needs br_netfilter: %w", err)
	}
	if !present() {
		return fmt.Errorf("flanneld needs br_netfilter: /proc/sys/net/bridge/bridge-nf-call-iptables missing in %s after modprobe", ns)
	}
	return nil
}
