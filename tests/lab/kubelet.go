package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgeplane/edgeplane/pkg/install"
)

// Environment for the kubelet lab (tests/kubelet): the kubelet comes from K8S_BIN (built by
// `scripts/build-k8s.sh kubelet`), containerd, runc and ctr from the host (Debian packages, see
// scripts/install-containerd.sh), and the pause image tarball from EDGEPLANE_PAUSE_IMAGE (the path
// scripts/install-containerd.sh prints).
const (
	EnvPauseImage = "EDGEPLANE_PAUSE_IMAGE"
	// PauseImage is the reference the pause tarball carries.
	PauseImage = "localhost/edgeplane/pause:lab"
)

// KubeletOptions tweak the kubelet node.
type KubeletOptions struct {
	// CNIVersion, when set, replaces the cniVersion of the conflist pkg/install writes. Debian 12's
	// containerd 1.6 vendors libcni v1.1, which parses results up to CNI 1.0.0 only: with
	// pkg/install's "1.1.0" every sandbox fails with `plugin type="edgeplane" failed (add):
	// unsupported CNI result version "1.1.0"` (docs/kubelet-lab.md).
	CNIVersion string
}

// KubeletNode is a lab node that also runs a private containerd and a real kubelet, whose CRI
// runtime invokes the CNI chain from an installed conflist (edgeplane-cni as "edgeplane").
type KubeletNode struct {
	*Node
	Dir        string // <node dir>/kubelet-node: everything below belongs to this instance
	Socket     string // containerd's gRPC socket
	Containerd *Process
	Kubelet    *Process
	// CNIBinDir and CNIConfDir are containerd's CNI directories, as seen in MountNS.
	CNIBinDir  string
	CNIConfDir string
	// MountNS is the node's own mount namespace (a bind-mounted nsfs file) in which containerd
	// and kubelet run, or "" when they run in the host's (StartKubelet).
	MountNS string
	// CgroupRoot is kubelet's cgroupRoot, created in every cgroup hierarchy. With cgroupsPerQOS
	// off kubelet 1.37 still hands the runtime an empty cgroup parent, so containerd 1.6 puts the
	// containers in /k8s.io/<id> (its namespace default); Close removes those of this instance and
	// /k8s.io itself when that leaves it empty.
	CgroupRoot string
	runcRoot   string
	sysctls    map[string]string // host sysctls kubelet's container manager sets, restored on Close
	closed     bool
}

// kubeletSysctls are the host (not per-netns) sysctls kubelet's container manager changes when
// protectKernelDefaults is off.
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// StartKubelet starts containerd and kubelet for node n (already running its agent) and imports
// the pause image. Everything is torn down by Close, which the lab's Close also runs; on error
// what was started is torn down before returning.
func (l *Lab) StartKubelet(ctx context.Context, n *Node, pauseTar string, opts KubeletOptions) (_ *KubeletNode, err error) {
	k, err := l.newKubeletNode(n)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			k.Close()
		}
	}()
	spec := kubeletSpec{
		cniBinDir:  filepath.Join(k.Dir, "cni-bin"),
		cniConfDir: filepath.Join(k.Dir, "cni-conf"),
		rootDir:    filepath.Join(k.Dir, "kubelet-root"),
		podLogsDir: filepath.Join(k.Dir, "pod-logs"),
		certDir:    filepath.Join(k.Dir, "kubelet-pki"),
		kubeconfig: n.Kubecfg,
		config: `address: 127.0.0.1
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
localStorageCapacityIsolation: false
`,
	}
	for _, d := range []string{spec.cniConfDir, spec.rootDir, spec.podLogsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// CNI: the lab's plugin dir (edgeplane-cni as "edgeplane" + reference plugins) and the
	// conflist edgeplane-install writes, with the node's run dir and a private host-local dataDir
	// (the lab's nodes share one mount namespace).
	if err := os.Symlink(l.pluginDir, spec.cniBinDir); err != nil {
		return nil, err
	}
	conflist, err := install.Conflist(install.Config{RunDir: n.RunDir})
	if err != nil {
		return nil, err
	}
	var list map[string]any
	if err := json.Unmarshal(conflist, &list); err != nil {
		return nil, err
	}
	list["plugins"].([]any)[0].(map[string]any)["ipam"].(map[string]any)["dataDir"] = n.IPAMDir
	if opts.CNIVersion != "" {
		list["cniVersion"] = opts.CNIVersion
	}
	if conflist, err = json.MarshalIndent(list, "", "  "); err != nil {
		return nil, err
	}
	if err := install.WriteAtomic(filepath.Join(spec.cniConfDir, install.DefaultConflistName), conflist, 0o644); err != nil {
		return nil, err
	}
	if err := k.start(ctx, pauseTar, spec); err != nil {
		return nil, err
	}
	return k, nil
}

// kubeletSpec is what differs between StartKubelet's node and a cluster node: paths as containerd
// and kubelet see them (in the node's mount namespace, if it has one), credentials, and the
// KubeletConfiguration fields about serving, authentication and DNS.
type kubeletSpec struct {
	mountNS               string // the node's mount namespace (a bind-mounted nsfs file); "": the host's
	cniBinDir, cniConfDir string
	rootDir, podLogsDir   string
	certDir               string
	kubeconfig            string
	config                string // KubeletConfiguration lines appended to the common ones
	nodeLabels            map[string]string
}

// newKubeletNode prepares k's directory and cgroup root and registers its Close.
func (l *Lab) newKubeletNode(n *Node) (*KubeletNode, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(l.cfg.K8sBin, "kubelet")); err != nil {
		return nil, fmt.Errorf("kubelet: %w (run scripts/build-k8s.sh kubelet)", err)
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s: %w (run scripts/install-containerd.sh)", b, err)
		}
	}
	k := &KubeletNode{Node: n, Dir: filepath.Join(n.Dir, "kubelet-node")}
	k.Socket = filepath.Join(k.Dir, "containerd.sock")
	k.runcRoot = filepath.Join(k.Dir, "containerd-state", "runc")
	if err := os.MkdirAll(k.Dir, 0o755); err != nil {
		return nil, err
	}
	k.CgroupRoot = "/edgeplane-" + l.ID + "-" + n.Name
	k.sysctls = map[string]string{}
	for _, key := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + key); err == nil {
			k.sysctls[key] = strings.TrimSpace(string(b))
		}
	}
	l.onClose(k.Close)
	for _, h := range cgroupHierarchies() {
		if err := os.MkdirAll(filepath.Join(h, k.CgroupRoot), 0o755); err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", k.CgroupRoot, err)
		}
	}
	return k, nil
}

// nsenter are the nsenter flags that put a process in the node's namespaces.
func (k *KubeletNode) nsenter() []string {
	args := []string{"--net=" + k.Netns.Path()}
	if k.MountNS != "" {
		args = append(args, "--mount="+k.MountNS)
	}
	return args
}

// start starts containerd (and imports the pause image into it) and kubelet as spec says.
func (k *KubeletNode) start(ctx context.Context, pauseTar string, spec kubeletSpec) (err error) {
	n, l := k.Node, k.lab
	k.MountNS, k.CNIBinDir, k.CNIConfDir = spec.mountNS, spec.cniBinDir, spec.cniConfDir
	// containerd: private root, state, sockets, runc root; CRI with the local pause image.
	cfgPath := filepath.Join(k.Dir, "containerd.toml")
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[8]q
    conf_dir = %[9]q
    max_conf_num = 1
`, filepath.Join(k.Dir, "containerd-root"), filepath.Join(k.Dir, "containerd-state"), k.Socket, k.Socket+".ttrpc",
		filepath.Join(k.Dir, "containerd-opt"), PauseImage, k.runcRoot, spec.cniBinDir, spec.cniConfDir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if k.Containerd, err = startProcessIn("containerd-"+n.Name, k.nsenter(), filepath.Join(k.Dir, "containerd.log"),
		"containerd", "--config", cfgPath); err != nil {
		return err
	}
	if err := k.waitContainerd(ctx, 30*time.Second); err != nil {
		return err
	}
	if out, err := k.Ctr(ctx, "images", "import", pauseTar); err != nil {
		return fmt.Errorf("importing the pause image: %w: %s", err, out)
	}

	// kubelet: private root dir, the node's kubeconfig, out of the host's cgroup hierarchy as far
	// as kubelet allows (no QoS cgroups, nothing enforced).
	kcfg := filepath.Join(k.Dir, "kubelet.yaml")
	if err := os.WriteFile(kcfg, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
cgroupRoot: %[3]s
enforceNodeAllocatable: ["none"]
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://%[1]s
failSwapOn: false
registerNode: true
podLogsDir: %[2]q
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
`, k.Socket, spec.podLogsDir, k.CgroupRoot)+spec.config), 0o644); err != nil {
		return err
	}
	args := []string{
		"--config=" + kcfg,
		"--kubeconfig=" + spec.kubeconfig,
		"--root-dir=" + spec.rootDir,
		"--cert-dir=" + spec.certDir,
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP.String(),
		"--v=2",
	}
	if len(spec.nodeLabels) > 0 {
		var labels []string
		for key, v := range spec.nodeLabels {
			labels = append(labels, key+"="+v)
		}
		sort.Strings(labels)
		args = append(args, "--node-labels="+strings.Join(labels, ","))
	}
	if k.Kubelet, err = startProcessIn("kubelet-"+n.Name, k.nsenter(), filepath.Join(k.Dir, "kubelet.log"),
		filepath.Join(l.cfg.K8sBin, "kubelet"), args...); err != nil {
		return err
	}
	return nil
}

// Ctr runs ctr against this node's containerd, in the k8s.io namespace.
func (k *KubeletNode) Ctr(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "ctr", append([]string{"--address", k.Socket, "--namespace", "k8s.io"}, args...)...)
}

func (k *KubeletNode) waitContainerd(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if _, err := run(ctx, "ctr", "--address", k.Socket, "version"); err == nil {
			return nil
		}
		if done, werr := k.Containerd.Exited(); done {
			return fmt.Errorf("containerd exited (%v): %s", werr, k.Containerd.LogTail(30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd not answering on %s: %w: %s", k.Socket, ctx.Err(), k.Containerd.LogTail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// SandboxNetns finds the network namespace containerd made for the sandbox holding ip: the
// sandbox containers' OCI specs name their netns (/var/run/netns/cni-...).
func (k *KubeletNode) SandboxNetns(ctx context.Context, ip string) (Netns, error) {
	for _, p := range k.sandboxNetnsPaths(ctx) {
		ns := Netns(filepath.Base(p))
		if out, err := ns.IP(ctx, "-4", "-o", "addr", "show", "dev", "eth0"); err == nil && strings.Contains(out, " "+ip+"/") {
			return ns, nil
		}
	}
	return "", fmt.Errorf("no sandbox netns of %s's containerd holds %s", k.Name, ip)
}

// sandboxNetnsPaths lists the netns paths in this containerd's container specs.
func (k *KubeletNode) sandboxNetnsPaths(ctx context.Context) []string {
	out, err := k.Ctr(ctx, "containers", "ls", "-q")
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var paths []string
	for _, id := range strings.Fields(out) {
		info, err := k.Ctr(ctx, "containers", "info", id)
		if err != nil {
			continue
		}
		var c struct {
			Spec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string }
				}
			}
		}
		if json.Unmarshal([]byte(info), &c) != nil {
			continue
		}
		for _, ns := range c.Spec.Linux.Namespaces {
			if ns.Type == "network" && ns.Path != "" && !seen[ns.Path] {
				seen[ns.Path] = true
				paths = append(paths, ns.Path)
			}
		}
	}
	return paths
}

// Stopped reports whether kubelet or containerd has died, with their log tails.
func (k *KubeletNode) Stopped() error {
	for _, p := range []*Process{k.Containerd, k.Kubelet} {
		if p == nil {
			continue
		}
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%v):\n%s", p.Name, err, p.LogTail(40))
		}
	}
	return nil
}
