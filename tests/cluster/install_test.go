package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// TestInstall: the cluster comes up with edgeplane installed by `kubectl apply -k` alone; every
// node is Ready (through edgeplane's CNI: kubelet reports NotReady until the conflist exists), the
// agent DaemonSet is rolled out, no agent runs but the DaemonSet's containers, and pods on the
// three nodes reach each other by pod IP and through a ClusterIP Service found by name through
// CoreDNS, node3's (site-a) over the private line.
func TestInstall(t *testing.T) {
	start := time.Now()
	c := cluster(t)
	ctx := t.Context()

	nodes, err := c.Lab.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != len(c.Nodes) {
		t.Fatalf("%d Node objects, want %d", len(nodes.Items), len(c.Nodes))
	}
	for _, n := range nodes.Items {
		ready := false
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		k := c.Node(n.Name)
		if !ready || k == nil || n.Spec.PodCIDR != k.PodCIDR.String() {
			t.Errorf("node %s: ready=%v, pod CIDR %q (harness: %v)", n.Name, ready, n.Spec.PodCIDR, k)
		}
		if n.Labels["edgeplane.io/agent"] != "true" || n.Labels["apps.openyurt.io/nodepool"] != k.Domain {
			t.Errorf("node %s labels: %v", n.Name, n.Labels)
		}
	}
	for _, k := range c.Nodes {
		if msg := c.NotReadyBeforeInstall[k.Name]; !strings.Contains(msg, "cni") {
			t.Errorf("node %s before the install: Ready condition %q, want NotReady for want of a CNI config", k.Name, msg)
		}
	}
	ds, err := c.Lab.Client.AppsV1().DaemonSets("edgeplane-system").Get(ctx, "edgeplane-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := ds.Status; s.DesiredNumberScheduled != int32(len(c.Nodes)) || s.NumberReady != s.DesiredNumberScheduled || s.UpdatedNumberScheduled != s.DesiredNumberScheduled {
		t.Fatalf("agent DaemonSet not rolled out: %s", prettyJSON(s))
	}
	if img := ds.Spec.Template.Spec.Containers[0].Image; img != c.EdgeplaneImageRef {
		t.Errorf("agent image %q, want the imported %q", img, c.EdgeplaneImageRef)
	}
	checkAgentsAreContainers(t, c)

	// docs/install.md's check of the init container, on every node: the API server reaches each
	// kubelet (webhook authentication and authorization) for the logs.
	for name, p := range agentPods(t, c) {
		out, err := c.Kubectl(ctx, "-n", "edgeplane-system", "logs", p.Name, "-c", "install-cni")
		if err != nil || !strings.Contains(out, "installed /host/etc/cni/net.d/10-edgeplane.conflist") {
			t.Errorf("node %s: kubectl logs %s -c install-cni: %v: %s", name, p.Name, err, out)
		}
	}

	// The node's files are the installer's and the agent's, in the node's own mount namespace.
	for _, k := range c.Nodes {
		for _, p := range []string{"/etc/cni/net.d/10-edgeplane.conflist", "/opt/cni/bin/edgeplane", "/run/edgeplane/node.json", "/sys/fs/bpf/edgeplane"} {
			if _, err := os.Stat(k.NodeRoot(p)); err != nil {
				t.Errorf("node %s: %s: %v", k.Name, p, err)
			}
		}
	}

	deployEcho(t, c)
	pods := echoPods(t, c)
	lineBefore := routerLineBytes(t, c)
	// Pod to pod, every pair, by pod IP.
	for _, from := range pods {
		for _, to := range pods {
			if from.Name == to.Name {
				continue
			}
			host, err := hello(ctx, from.Netns, net.JoinHostPort(to.IP, strconv.Itoa(echoPort)))
			if err != nil {
				t.Errorf("%s (%s) -> %s (%s) %s: %v", from.Name, from.Node.Name, to.Name, to.Node.Name, to.IP, err)
			} else if host != to.Name {
				t.Errorf("%s -> %s answered as %q", from.Name, to.IP, host)
			}
		}
	}
	if after := routerLineBytes(t, c); after == lineBefore {
		t.Errorf("no byte crossed the private line cloud <-> site-a while node3's pod was reached (%d bytes before and after)", after)
	} else {
		t.Logf("private line cloud <-> site-a carried %d bytes", after-lineBefore)
	}
	// The API server's proxy reaches every pod (its routes to the pod CIDRs; node3's via the
	// router).
	for _, to := range pods {
		out, err := c.Kubectl(ctx, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:8081/proxy/", echoNamespace, to.Name))
		if err != nil || strings.TrimSpace(out) != to.Name {
			t.Errorf("API server proxy to %s on %s: %v: %q", to.Name, to.Node.Name, err, out)
		}
	}
	// Through the Service, found by name: from each pod until every replica has answered.
	svc, err := c.Lab.Client.CoreV1().Services(echoNamespace).Get(ctx, echoName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range pods {
		addrs, err := lookupIn(ctx, from.Netns, echoFQDN)
		if err != nil || len(addrs) != 1 || addrs[0] != svc.Spec.ClusterIP {
			t.Errorf("%s looking up %s through %s: %v %v, want [%s]", from.Name, echoFQDN, lab.KubeDNSIP, addrs, err, svc.Spec.ClusterIP)
			continue
		}
		seen := map[string]bool{}
		deadline := time.Now().Add(30 * time.Second)
		for len(seen) < len(pods) && time.Now().Before(deadline) {
			host, err := hello(ctx, from.Netns, net.JoinHostPort(addrs[0], strconv.Itoa(echoPort)))
			if err != nil {
				t.Errorf("%s -> Service %s: %v", from.Name, addrs[0], err)
				break
			}
			seen[host] = true
		}
		if len(seen) < len(pods) {
			t.Errorf("%s -> Service %s: only %v answered within 30 s", from.Name, addrs[0], keys(seen))
		}
	}
	t.Logf("TestInstall took %v (bring-up %v of it, if this test brought the cluster up)", time.Since(start).Round(time.Millisecond), shared.took.Round(time.Millisecond))
}

// checkAgentsAreContainers: every edgeplane-agent process in a cluster node's network namespace is
// a container's (its parent is a containerd shim of that node's containerd), one per node, and the
// harness started none (no lab Node has an agent process).
func checkAgentsAreContainers(t *testing.T, c *lab.Cluster) {
	t.Helper()
	for _, n := range c.Lab.Nodes() {
		if n.Agent != nil {
			t.Errorf("the harness started an agent on %s", n.Name)
		}
	}
	nodeByNetns := map[string]*lab.KubeletNode{}
	for _, k := range c.Nodes {
		st, err := os.Stat(k.Netns.Path())
		if err != nil {
			t.Fatal(err)
		}
		nodeByNetns[fmt.Sprint(inode(st))] = k
	}
	count := map[string]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		exe, err := os.Readlink(p + "/exe")
		if err != nil || filepath.Base(exe) != "edgeplane-agent" {
			continue
		}
		st, err := os.Stat(p + "/ns/net")
		if err != nil {
			continue
		}
		k := nodeByNetns[fmt.Sprint(inode(st))]
		if k == nil {
			continue // another lab's
		}
		status, _ := os.ReadFile(p + "/status")
		ppid := ""
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				ppid = strings.TrimSpace(v)
			}
		}
		cmdline, _ := os.ReadFile("/proc/" + ppid + "/cmdline")
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" || !strings.Contains(string(cmdline), k.Socket) {
			t.Errorf("edgeplane-agent %s on %s is not a container of the node's containerd (parent %s: %q)", p, k.Name, ppid, args)
		}
		count[k.Name]++
	}
	for _, k := range c.Nodes {
		if count[k.Name] != 1 {
			t.Errorf("%d edgeplane-agent processes on %s, want the DaemonSet's one", count[k.Name], k.Name)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
