package lab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/cni"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
)

// TestCNIWithoutAgent runs the real CNI chain (edgeplane, portmap, bandwidth) through libcni in a
// node namespace whose datapath the test loaded and whose node.json it wrote itself, so plugin and
// harness problems show apart from the agent's. ADD must wire the pod (address from the pod CIDR,
// host veth, endpoints_map entry), CHECK must pass, and DEL must undo all of it.
func TestCNIWithoutAgent(t *testing.T) {
	cfg := harnessConfig(t)
	if _, err := os.Stat(filepath.Join(cfg.EdgeplaneBin, "edgeplane-cni")); cfg.EdgeplaneBin == "" || err != nil {
		t.Fatalf("needs %s/edgeplane-cni: run `make test` (it builds it)", EnvEdgeplaneBin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := newCheckedLab(t, ctx, cfg)
	n, err := l.AddNode(ctx, "node1", 1, NodeOptions{NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	dp, err := datapath.Load(n.BPFFS)
	if err != nil {
		t.Fatalf("loading the datapath into %s: %+v", n.BPFFS, err)
	}
	defer dp.Close()
	if err := cninode.Write(n.RunDir, &cninode.Config{
		NodeName: n.Name, NodeIP: n.IP, PodCIDR: n.PodCIDR, ClusterCIDR: ClusterCIDR,
		MTU: UnderlayMTU - 50, BPFFSRoot: n.BPFFS,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cni log tail:\n%s", TailFile(n.CNILogPath(), 30))
		}
	})

	var pods []*Pod
	for _, name := range []string{"a", "b"} {
		p, err := l.AddPod(ctx, n, "pod-"+name, PodOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
		if !n.PodCIDR.Contains(p.IP) {
			t.Errorf("pod %s got %s, outside the node's pod CIDR %s", p.Name, p.IP, n.PodCIDR)
		}
		if err := p.Check(ctx); err != nil {
			t.Errorf("CNI CHECK for %s: %v", p.Name, err)
		}
	}
	eps, err := n.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	links, _ := n.Netns.IP(ctx, "-br", "link")
	for _, p := range pods {
		if _, ok := eps[p.IP]; !ok {
			t.Errorf("endpoints_map has no %s (%s)", p.Name, p.IP)
		}
		if veth := cni.HostVethName(p.ContainerID, "eth0"); !strings.Contains(links, veth) {
			t.Errorf("host veth %s of %s missing in %s:\n%s", veth, p.Name, n.Netns, links)
		}
		out, _ := p.Netns.IP(ctx, "-br", "addr", "show", "eth0")
		if !strings.Contains(out, p.IP.String()+"/32") {
			t.Errorf("pod %s eth0: %q, want %s/32", p.Name, out, p.IP)
		}
	}
	// Without an agent node_cfg_map is empty and the pod program may fail closed on the replies,
	// so node -> pod is only reported here; the e2e suite asserts it with agents running.
	for _, p := range pods {
		if _, err := Ping(n.Netns, p.IP, 500*time.Millisecond); err != nil {
			t.Logf("agent-less node -> %s: %v", p.Name, err)
		}
	}

	for _, p := range pods {
		if err := p.Delete(ctx); err != nil {
			t.Errorf("deleting %s: %v", p.Name, err)
		}
	}
	if eps, err := n.Endpoints(); err != nil || len(eps) != 0 {
		t.Errorf("endpoints_map after DEL: %v %v", eps, err)
	}
	links2, _ := n.Netns.IP(ctx, "-br", "link")
	for _, p := range pods {
		if veth := cni.HostVethName(p.ContainerID, "eth0"); strings.Contains(links2, veth) {
			t.Errorf("host veth %s of %s still there after DEL", veth, p.Name)
		}
	}
	leftover, _ := filepath.Glob(filepath.Join(n.IPAMDir, "*", "10.244.*"))
	if len(leftover) > 0 {
		t.Errorf("host-local still holds %v after DEL", leftover)
	}
}
