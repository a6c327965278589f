package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/nodeconfig"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// TestUninstall: on a node of its own, with a pod still wired, the agent is stopped (as deleting
// the DaemonSet does) and `edgeplane-agent --uninstall` run: the node namespace has no
// edgeplane.1 and no tcx program on its NIC or the pod's veth, its bpffs is empty, node.json and
// edgeplane's CNI files are gone (others stay), and its Node lost the VTEP annotations. A second
// uninstall succeeds, and the pod's CNI DEL still works afterwards.
func TestUninstall(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	n, err := l.AddNode(ctx, "uninst", 7, lab.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNode(t, n) })
	p, err := l.AddPod(ctx, n, "pod-uninst", lab.PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	links, err := n.PinnedLinks()
	if err != nil {
		t.Fatal(err)
	}
	var podVeth string
	for name := range links {
		if v, ok := strings.CutPrefix(name, "pod-"); ok {
			podVeth = v
		}
	}
	if podVeth == "" || len(links) != 7 {
		t.Fatalf("precondition: pinned links %v; want 5 for the NIC (tc ingress/egress, XDP) and device and two (tc ingress and egress of its host veth) for %s", keys(links), p.Name)
	}
	confDir, binDir := t.TempDir(), t.TempDir()
	for _, f := range []string{
		filepath.Join(confDir, "10-edgeplane.conflist"), filepath.Join(confDir, "20-other.conflist"),
		filepath.Join(binDir, "edgeplane"), filepath.Join(binDir, "host-local"),
	} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	n.Agent.Stop(5 * time.Second)
	args := []string{"--uninstall", "--cni-conf-dir=" + confDir, "--cni-bin-dir=" + binDir}
	start := time.Now()
	out, err := n.RunAgentOnce(ctx, args...)
	if err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	t.Logf("uninstall took %v:\n%s", time.Since(start).Round(time.Millisecond), out)

	if out, err := n.Netns.IP(ctx, "link", "show", "edgeplane.1"); err == nil {
		t.Errorf("edgeplane.1 still in %s:\n%s", n.Netns, out)
	}
	if routes, err := n.Netns.IP(ctx, "route", "show", lab.ClusterCIDR.String()); err != nil || strings.TrimSpace(routes) != "" {
		t.Errorf("route to the cluster CIDR left: %q, %v", routes, err)
	}
	for _, ifname := range []string{"eth0", podVeth} {
		progs, err := n.Netns.TCXPrograms(ifname)
		if err != nil {
			t.Fatal(err)
		}
		if len(progs) > 0 {
			t.Errorf("%s still runs tcx programs %v", ifname, progs)
		}
	}
	if out, err := n.Netns.IP(ctx, "link", "show", "eth0"); err != nil || strings.Contains(out, "prog/xdp") || strings.Contains(out, " xdp") {
		t.Errorf("eth0 after uninstall: %v; want no XDP program:\n%s", err, out)
	}
	if entries, err := n.BPFFSEntries(); err != nil || len(entries) > 0 {
		t.Errorf("bpffs of %s after uninstall: %v, %v; want empty", n.Name, entries, err)
	}
	if _, err := os.Stat(nodeconfig.Path(n.RunDir)); !os.IsNotExist(err) {
		t.Errorf("node.json: %v; want it gone", err)
	}
	for f, want := range map[string]bool{
		filepath.Join(confDir, "10-edgeplane.conflist"): false, filepath.Join(confDir, "20-other.conflist"): true,
		filepath.Join(binDir, "edgeplane"): false, filepath.Join(binDir, "host-local"): true,
	} {
		if _, err := os.Stat(f); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", f, err == nil, want)
		}
	}
	node, err := l.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{k8s.BackendTypeAnnotation, k8s.BackendDataAnnotation, k8s.PublicIPAnnotation, k8s.KubeSubnetManagerAnnotation} {
		if v, ok := node.Annotations[k]; ok {
			t.Errorf("Node %s still has %s=%s", n.Name, k, v)
		}
	}

	// Peers stop tunnelling to a node that withdrew its VTEP, while its Node object still exists.
	for _, peer := range shared.nodes {
		took, err := eventually(reachTimeout, func() error { return lacksNodeEntries(peer, n) })
		if err != nil {
			t.Errorf("%s after %s was uninstalled: %v", peer.Name, n.Name, err)
		} else {
			t.Logf("%s withdrew %s's route and node entries %v after the uninstall", peer.Name, n.Name, took.Round(time.Millisecond))
		}
	}

	if out, err := n.RunAgentOnce(ctx, args...); err != nil {
		t.Errorf("second uninstall: %v\n%s", err, out)
	}
	if err := p.Delete(ctx); err != nil {
		t.Errorf("CNI DEL after uninstall: %v", err)
	}
}
