package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestUninstall: `kubectl delete -k` of the overlay (the echo workload drained first, as
// docs/install.md advises) makes every agent run its uninstall path on its way out, and each node
// is left as docs/install.md's Uninstall section says: no node.json, no conflist, no
// /opt/cni/bin/edgeplane (the reference plugins stay), no pins, no edgeplane.1, no routes of
// protocol 237 or 238. Last in the file: it takes edgeplane off the shared cluster.
func TestUninstall(t *testing.T) {
	start := time.Now()
	c := cluster(t)
	ctx := t.Context()
	deployEcho(t, c)
	if out, err := c.Kubectl(ctx, "-n", echoNamespace, "delete", "deployment", echoName, "--wait=true", "--timeout=2m"); err != nil {
		t.Fatalf("draining the echo workload: %v: %s", err, out)
	}
	// What the install put on each node, before.
	for _, k := range c.Nodes {
		if _, err := os.Stat(k.NodeRoot("/run/edgeplane/node.json")); err != nil {
			t.Fatalf("node %s was not installed: %v", k.Name, err)
		}
	}
	deleteStart := time.Now()
	out, err := c.Kubectl(ctx, "delete", "-k", c.Overlay, "--wait=true", "--timeout=3m")
	if err != nil {
		t.Fatalf("kubectl delete -k: %v: %s", err, out)
	}
	t.Logf("kubectl delete -k took %v:\n%s", time.Since(deleteStart).Round(time.Millisecond), out)

	for _, k := range c.Nodes {
		var left []string
		deadline := time.Now().Add(60 * time.Second)
		for {
			left = left[:0]
			for _, p := range []string{"/run/edgeplane/node.json", "/etc/cni/net.d/10-edgeplane.conflist", "/opt/cni/bin/edgeplane"} {
				if _, err := os.Stat(k.NodeRoot(p)); !errors.Is(err, os.ErrNotExist) {
					left = append(left, p)
				}
			}
			pins, _ := filepath.Glob(filepath.Join(k.NodeRoot("/sys/fs/bpf"), "edgeplane", "*"))
			for _, p := range pins {
				left = append(left, "pin "+strings.TrimPrefix(p, k.NodeRoot("/sys/fs/bpf")))
			}
			if out, err := k.Netns.IP(ctx, "-o", "link", "show", "edgeplane.1"); err == nil {
				left = append(left, "link "+strings.TrimSpace(out))
			}
			for _, proto := range []string{"237", "238"} {
				if out, _ := k.Netns.IP(ctx, "route", "show", "table", "all", "proto", proto); strings.TrimSpace(out) != "" {
					left = append(left, "routes of protocol "+proto+": "+strings.TrimSpace(out))
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if len(left) > 0 {
			t.Errorf("node %s after the uninstall still has:\n  %s", k.Name, strings.Join(left, "\n  "))
		}
		// Kept on purpose: the reference plugins (the runtime's on a real node).
		for _, p := range []string{"host-local", "portmap", "bandwidth", "loopback"} {
			if _, err := os.Stat(filepath.Join(k.NodeRoot("/opt/cni/bin"), p)); err != nil {
				t.Errorf("node %s: reference plugin %s removed: %v", k.Name, p, err)
			}
		}
		n, err := c.Lab.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var annotations []string
		for key, v := range n.Annotations {
			if strings.HasPrefix(key, "flannel.alpha.coreos.com/") || strings.HasPrefix(key, "edgeplane.io/") {
				annotations = append(annotations, fmt.Sprintf("%s=%s", key, v))
			}
		}
		// docs/install.md: after `kubectl delete -k` the agent's service account is usually gone
		// before the pods stop, so these stay until the next CNI overwrites them.
		t.Logf("node %s: edgeplane's annotations after the uninstall: %v", k.Name, annotations)
	}
	// No agent is left on any node.
	if out, err := c.Kubectl(ctx, "get", "pods", "-A", "-l", "app.kubernetes.io/name=edgeplane-agent", "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("agent pods after the uninstall: %q %v", out, err)
	}
	t.Logf("TestUninstall took %v", time.Since(start).Round(time.Millisecond))
}
