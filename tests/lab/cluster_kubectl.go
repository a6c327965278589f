package lab

// kubectl on the cluster, as a user runs it (the admin kubeconfig, inside the API namespace), and
// what a failed wait shows.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Kubectl runs the lab's kubectl (scripts/build-k8s.sh kubectl, the cluster's version) with the
// admin kubeconfig inside the API namespace, and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.APINetns.Exec(ctx, c.kubectl, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
}

// KubectlPath is the kubectl binary Kubectl runs (e2e.test's --kubectl-path, inside APINetns).
func (c *Cluster) KubectlPath() string { return c.kubectl }

// RolloutStatus waits for `kubectl rollout status` of a workload ("daemonset/edgeplane-agent").
func (c *Cluster) RolloutStatus(ctx context.Context, namespace, workload string, timeout time.Duration) error {
	out, err := c.Kubectl(ctx, "-n", namespace, "rollout", "status", workload, "--timeout="+timeout.String())
	if err != nil {
		return fmt.Errorf("rollout of %s/%s: %w: %s\n%s", namespace, workload, err, out, c.describe(namespace))
	}
	return nil
}

// describe is what a failed wait shows: the namespace's pods and the nodes.
func (c *Cluster) describe(namespace string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := c.Kubectl(ctx, "get", "nodes,pods", "-o", "wide", "-n", namespace)
	ev, _ := c.Kubectl(ctx, "-n", namespace, "get", "events", "--sort-by=.lastTimestamp")
	var logs strings.Builder
	for _, k := range c.Nodes {
		files, _ := filepath.Glob(filepath.Join(k.NodeRoot("/var/log/pods"), namespace+"_*", "*", "*.log"))
		for _, f := range files {
			fmt.Fprintf(&logs, "----- %s: %s\n%s\n", k.Name, strings.TrimPrefix(f, k.NodeRoot("/var/log/pods")+"/"), TailFile(f, 6))
		}
	}
	return out + "\n" + lastLines(ev, 25) + "\n" + logs.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
