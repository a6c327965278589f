package lab

import (
	"context"
	"path/filepath"
)

// CtlCommand is the command line that runs edgeplanectl with args on the cluster node k: in its
// network namespace, against the pins and run directory of the DaemonSet's agent
// (/sys/fs/bpf/edgeplane and /run/edgeplane inside the node, as deploy/base mounts them).
func (k *KubeletNode) CtlCommand(args ...string) []string {
	return append([]string{"nsenter", "--net=" + k.Netns.Path(),
		filepath.Join(k.lab.cfg.EdgeplaneBin, "edgeplanectl"),
		"--bpffs-root", k.NodeRoot("/sys/fs/bpf/edgeplane"), "--run-dir", k.NodeRoot("/run/edgeplane")}, args...)
}

// Ctl runs edgeplanectl with args on k (CtlCommand) and returns its combined output.
func (k *KubeletNode) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := k.CtlCommand(args...)
	return run(ctx, cmd[0], cmd[1:]...)
}
