package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Reboot simulates node n's reboot as far as its network goes, without starting anything again:
// its agent is killed (SIGKILL), its pods' interfaces go (their host-side veths are deleted, so
// the pods' namespaces are left without a network, as the sandboxes of a rebooted node are gone;
// kubelet would make new ones), its VXLAN device goes, its bpffs is a new, empty instance (every
// pin, program and link is gone; the links' programs are detached as the last reference to them
// drops) and its run directory, a tmpfs on a real node, is emptied. What a reboot keeps stays:
// the snapshot directory (Node.SnapshotDir), the IPAM reservations (host-local's dataDir under
// /var/lib/cni on a real node), the Node and Pod objects. StartAgent and AddPod bring the node
// back, as the node's init and kubelet would.
func (l *Lab) Reboot(ctx context.Context, n *Node) error {
	if err := l.checkOpen(); err != nil {
		return err
	}
	n.KillAgent()
	for _, p := range l.Pods() {
		if p.Node != n {
			continue
		}
		if veth := p.HostVeth(); veth != "" {
			if err := ignoreMissingLink(n.Netns.IP(ctx, "link", "del", veth)); err != nil {
				return fmt.Errorf("reboot of %s: pod %s: %w", n.Name, p.Name, err)
			}
		}
	}
	if err := ignoreMissingLink(n.Netns.IP(ctx, "link", "del", "edgeplane.1")); err != nil {
		return fmt.Errorf("reboot of %s: %w", n.Name, err)
	}
	// The lab's Close unmounts whatever is mounted there then: the new instance.
	if err := syscall.Unmount(n.BPFFS, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("reboot of %s: unmounting its bpffs: %w", n.Name, err)
	}
	if err := syscall.Mount("bpf", n.BPFFS, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("reboot of %s: mounting a new bpffs: %w", n.Name, err)
	}
	if err := os.RemoveAll(n.RunDir); err != nil {
		return fmt.Errorf("reboot of %s: emptying its run directory: %w", n.Name, err)
	}
	if err := os.MkdirAll(n.RunDir, 0o755); err != nil {
		return err
	}
	l.Logf("lab %s: %s rebooted (agent killed; pods' interfaces, VXLAN device, bpffs and run directory gone)", l.ID, n.Name)
	return nil
}

// ignoreMissingLink drops the error of `ip link del` of a link that is not there.
func ignoreMissingLink(_ string, err error) error {
	if err != nil && strings.Contains(err.Error(), "Cannot find device") {
		return nil
	}
	return err
}
