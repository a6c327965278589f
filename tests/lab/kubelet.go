package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
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

// Close stops kubelet, removes the containers (runc), stops the shims and containerd, deletes the
// sandbox namespaces containerd made and unmounts everything below the instance's dir. Idempotent.
func (k *KubeletNode) Close() {
	if k.closed {
		return
	}
	k.closed = true
	logf := k.lab.Logf
	if k.Kubelet != nil {
		k.Kubelet.Stop(10 * time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var netnsPaths []string
	if k.Containerd != nil {
		if done, _ := k.Containerd.Exited(); !done {
			netnsPaths = k.sandboxNetnsPaths(ctx)
		}
	}
	// Containers: runc keeps their state under our runc root (one dir per containerd namespace).
	var containerIDs []string
	if dirs, err := os.ReadDir(k.runcRoot); err == nil {
		for _, d := range dirs {
			root := filepath.Join(k.runcRoot, d.Name())
			ids, _ := os.ReadDir(root)
			for _, id := range ids {
				containerIDs = append(containerIDs, id.Name())
				if out, err := run(ctx, "nsenter", append(k.nsenter(), "--", "runc", "--root", root, "delete", "--force", id.Name())...); err != nil {
					logf("kubelet node %s: runc delete %s: %v: %s", k.Name, id.Name(), err, out)
				}
			}
		}
	}
	// Shims run in their own sessions: find ours by the containerd address on their command line.
	for _, pid := range k.shimPids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if k.Containerd != nil {
		k.Containerd.Stop(10 * time.Second)
	}
	for _, p := range netnsPaths {
		if !strings.HasPrefix(filepath.Base(p), "cni-") {
			continue
		}
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			logf("kubelet node %s: removing %s: %v", k.Name, p, err)
		}
	}
	// kubelet links container logs from the fixed /var/log/containers: drop links into our dir.
	if links, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, e := range links {
			p := filepath.Join("/var/log/containers", e.Name())
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, k.Dir+"/") {
				_ = os.Remove(p)
			}
		}
	}
	for key, v := range k.sysctls {
		if b, err := os.ReadFile("/proc/sys/" + key); err == nil && strings.TrimSpace(string(b)) != v {
			if err := os.WriteFile("/proc/sys/"+key, []byte(v), 0o644); err != nil {
				logf("kubelet node %s: restoring %s=%s: %v", k.Name, key, v, err)
			}
		}
	}
	for _, h := range cgroupHierarchies() {
		if k.CgroupRoot != "" {
			removeCgroupTree(filepath.Join(h, k.CgroupRoot))
		}
		for _, id := range containerIDs {
			removeCgroupTree(filepath.Join(h, "k8s.io", id))
		}
		_ = syscall.Rmdir(filepath.Join(h, "k8s.io")) // only if empty: another containerd may use it
	}
	for _, m := range mountsUnder(k.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			logf("kubelet node %s: unmounting %s: %v", k.Name, m, err)
		}
	}
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

func (k *KubeletNode) shimPids() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == k.Socket {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// cgroupHierarchies lists the host's cgroup (v1 and v2) mount points.
func cgroupHierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		i := strings.Index(line, " - ")
		if i < 0 {
			continue
		}
		fields, post := strings.Fields(line[:i]), strings.Fields(line[i+3:])
		if len(fields) < 5 || len(post) < 1 || (post[0] != "cgroup" && post[0] != "cgroup2") {
			continue
		}
		out = append(out, unescapeMount(fields[4]))
	}
	return out
}

// removeCgroupTree removes a cgroup and its children, deepest first (runc delete has emptied them).
func removeCgroupTree(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = syscall.Rmdir(dir)
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
