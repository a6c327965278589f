package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A cluster node (StartCluster) is, like a kind node, its own network namespace and its own mount
// namespace: containerd and kubelet run in both (nsenter --net --mount), so the paths the unmodified
// DaemonSet mounts from the host (hostPath /opt/cni/bin, /etc/cni/net.d, /run/edgeplane,
// /var/lib/edgeplane, /run/flannel, /sys/fs/bpf, /proc/sys/net) resolve per node when runc sets up a container. The
// mount namespace is persistent (unshare --mount=<file>): its nsfs file is bind-mounted under the
// node's kubelet-node dir and goes when KubeletNode.Close unmounts that dir, after every process in
// it has stopped.
//
// Inside it, each of nodeMounts is a bind of a directory under <node dir>/root (so the test process
// reads the node's files there), and /sys/fs/bpf is the node's own bpffs (Node.BPFFS, mounted by
// AddNode; the test process sees its pins there), made shared so that the DaemonSet's
// `mountPropagation: HostToContainer` is accepted (containerd wants the source on a shared or slave
// mount). The mount namespace is copied from the host's with propagation unchanged, and the mounts
// holding the mount points are made private in it first, so nothing mounted in the node reaches the
// host; /run/netns, a shared mount of its own (iproute2 makes it one), stays in the host's peer
// group, so the network namespaces containerd makes for sandboxes (/run/netns/cni-...) are visible
// to the test process.

// nodeMounts are the host paths a cluster node has its own copy of.
var nodeMounts = []string{
	"/opt/cni/bin",
	"/etc/cni/net.d",
	"/run/edgeplane",
	"/run/flannel",
	"/var/lib/edgeplane", // the agent's snapshot (--snapshot-dir)
	"/var/lib/kubelet",
	"/var/lib/cni", // host-local's reservations, libcni's cache
	"/var/log",     // /var/log/pods and the /var/log/containers links
}

// NodeRoot is where the test process finds a cluster node's copy of path (one of the node's own
// mounts, e.g. /etc/cni/net.d), or the path itself for what the node shares with the host.
func (k *KubeletNode) NodeRoot(path string) string {
	for _, m := range nodeMounts {
		if path == m || strings.HasPrefix(path, m+"/") {
			return filepath.Join(k.Node.Dir, "root", path)
		}
	}
	if path == "/sys/fs/bpf" || strings.HasPrefix(path, "/sys/fs/bpf/") {
		return filepath.Join(k.Node.BPFFS, strings.TrimPrefix(path, "/sys/fs/bpf"))
	}
	return path
}

// makeMountNS creates the node's mount namespace (see above) and returns its nsfs file. The mount
// points missing on the host are created there as empty directories and left in place: removing a
// directory another lab's node mounts on would detach that mount.
func (k *KubeletNode) makeMountNS(ctx context.Context) (string, error) {
	holder := filepath.Join(k.Dir, "mntns")
	if err := os.MkdirAll(holder, 0o755); err != nil {
		return "", err
	}
	// The nsfs file must not be on a shared mount (the bind would propagate into the namespace
	// it names): a private bind of its directory onto itself.
	if out, err := run(ctx, "mount", "--bind", holder, holder); err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	if out, err := run(ctx, "mount", "--make-private", holder); err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	file := filepath.Join(holder, "mnt")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		return "", err
	}
	if out, err := run(ctx, "unshare", "--mount="+file, "--propagation=unchanged", "true"); err != nil {
		return "", fmt.Errorf("creating the mount namespace of %s: %w: %s", k.Name, err, out)
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	// Private first: the mounts holding each mount point, in the node's copy only.
	for _, m := range append(append([]string{}, nodeMounts...), "/sys/fs/bpf") {
		if err := os.MkdirAll(m, 0o755); err != nil {
			return "", fmt.Errorf("mount point %s: %w", m, err)
		}
		fmt.Fprintf(&script, "mount --make-private \"$(findmnt -n -o TARGET -T %s)\"\n", m)
	}
	for _, m := range nodeMounts {
		src := filepath.Join(k.Node.Dir, "root", m)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", err
		}
		fmt.Fprintf(&script, "mount --bind %s %s\n", src, m)
	}
	// kubelet wants its root dir shared (mount propagation into containers); a peer group of its
	// own, which the host is not in.
	script.WriteString("mount --make-shared /var/lib/kubelet\n")
	// The host's bpffs goes first (from this copy only): containerd judges a path by the first
	// mount it finds there, which would be the host's, private one.
	script.WriteString("while mountpoint -q /sys/fs/bpf; do umount -l /sys/fs/bpf; done\n")
	fmt.Fprintf(&script, "mount --bind %s /sys/fs/bpf\nmount --make-shared /sys/fs/bpf\n", k.Node.BPFFS)
	// The copy of the host's mounts holds every lab's mounts of the moment (bpffs instances,
	// other nodes' nsfs files), which would live as long as this namespace: detach them here.
	fmt.Fprintf(&script, "findmnt -rn -o TARGET | grep '^%s/edgeplane-lab-' | sort -r | while read -r m; do umount -l \"$m\" 2>/dev/null || true; done\n", filepath.Clean(k.lab.cfg.BaseDir))
	if out, err := run(ctx, "nsenter", "--mount="+file, "--", "sh", "-c", script.String()); err != nil {
		return "", fmt.Errorf("mounts of %s's mount namespace: %w: %s", k.Name, err, out)
	}
	return file, nil
}
