package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/k8s"
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
	links, podVeth := podLinks(t, n)
	if podVeth == "" || len(links) != 6 {
		t.Fatalf("precondition: pinned links %v; want 4 for the NIC and device (tc ingress/egress; the veth NIC gets no XDP program) and two (tc ingress and egress of its host veth) for %s", keys(links), p.Name)
	}
	confDir, binDir := cniDirs(t)

	n.Agent.Stop(5 * time.Second)
	args := []string{"--uninstall", "--cni-conf-dir=" + confDir, "--cni-bin-dir=" + binDir}
	start := time.Now()
	out, err := n.RunAgentOnce(ctx, args...)
	if err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	t.Logf("uninstall took %v:\n%s", time.Since(start).Round(time.Millisecond), out)

	checkUninstalled(t, l, n, podVeth, confDir, binDir)

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

// checkUninstalled checks that node n is as an uninstall leaves it: no edgeplane.1 or cluster
// route, no tcx or XDP program on its NIC or the pod veth, an empty bpffs, no node.json, none of
// edgeplane's CNI files in confDir and binDir (the others stay), no VTEP annotations.
func checkUninstalled(t *testing.T, l *lab.Lab, n *lab.Node, podVeth, confDir, binDir string) {
	t.Helper()
	ctx := t.Context()
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
	if _, err := os.Stat(cninode.Path(n.RunDir)); !os.IsNotExist(err) {
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

}

// TestUninstallWhenDaemonSetDeleted: an agent started with --daemonset keeps every pin when it
// is stopped while its DaemonSet exists (a rolling update, a restart), and uninstalls the node on
// its way out once the DaemonSet was deleted (kubectl delete -k), CNI files included.
func TestUninstallWhenDaemonSetDeleted(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	confDir, binDir := cniDirs(t)
	// The DaemonSet object only: the lab runs no DaemonSet controller, the agent is the harness's.
	labels := map[string]string{"app": "edgeplane-agent-dsdel"}
	ds, err := l.Client.AppsV1().DaemonSets("default").Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-agent-dsdel"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "edgeplane"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = l.Client.AppsV1().DaemonSets("default").Delete(context.Background(), ds.Name, metav1.DeleteOptions{})
	})
	n, err := l.AddNode(ctx, "dsdel", 9, lab.NodeOptions{AgentArgs: []string{
		"--daemonset=default/" + ds.Name, "--cni-conf-dir=" + confDir, "--cni-bin-dir=" + binDir,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNode(t, n) })
	p, err := l.AddPod(ctx, n, "pod-dsdel", lab.PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	links, podVeth := podLinks(t, n)
	waitAgentLog := func(marker string) {
		t.Helper()
		if _, _, err := n.WaitAgentLog(ctx, marker, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitAgentLog("Following the DaemonSet running this agent")

	// Stopped while the DaemonSet exists: everything stays.
	n.StopAgent()
	if after, err := n.PinnedLinks(); err != nil || len(after) != len(links) {
		t.Fatalf("pinned links after a stop with the DaemonSet present: %v (%v), want the %d before", keys(after), err, len(links))
	}
	if _, err := os.Stat(filepath.Join(confDir, "10-edgeplane.conflist")); err != nil {
		t.Fatalf("conflist after a stop with the DaemonSet present: %v", err)
	}
	if !strings.Contains(n.Agent.LogTail(20), "pins stay for the next agent") {
		t.Errorf("the stopped agent did not say it left its pins:\n%s", n.Agent.LogTail(20))
	}
	if err := n.RestartAgent(ctx, n.ExtraArgs, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	waitAgentLog("Following the DaemonSet running this agent")

	// Deleted, then the pod's SIGTERM: the node is uninstalled.
	if err := l.Client.AppsV1().DaemonSets("default").Delete(ctx, ds.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n.StopAgent()
	t.Logf("agent stopped %v after the DaemonSet's deletion:\n%s", time.Since(start).Round(time.Millisecond), n.Agent.LogTail(12))
	if done, err := n.Agent.Exited(); !done || err != nil {
		t.Errorf("agent exit after uninstalling: done=%v err=%v, want a clean exit", done, err)
	}
	if !strings.Contains(n.Agent.LogTail(30), "Uninstalled edgeplane from this node") {
		t.Errorf("the agent did not uninstall:\n%s", n.Agent.LogTail(30))
	}
	checkUninstalled(t, l, n, podVeth, confDir, binDir)
	if err := p.Delete(ctx); err != nil {
		t.Errorf("CNI DEL after uninstall: %v", err)
	}
}

// cniDirs are a node's CNI directories as edgeplane-install leaves them, with another network's
// conflist and a reference plugin beside edgeplane's files (an uninstall must leave those).
func cniDirs(t *testing.T) (confDir, binDir string) {
	t.Helper()
	confDir, binDir = t.TempDir(), t.TempDir()
	for _, f := range []string{
		filepath.Join(confDir, "10-edgeplane.conflist"), filepath.Join(confDir, "20-other.conflist"),
		filepath.Join(binDir, "edgeplane"), filepath.Join(binDir, "host-local"),
	} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return confDir, binDir
}

// podLinks are n's pinned links and the host veth of its one pod (from the "pod-<veth>" pins).
func podLinks(t *testing.T, n *lab.Node) (map[string]lab.PinnedLink, string) {
	t.Helper()
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
	return links, podVeth
}
