// Package cluster installs edgeplane on the lab's kubelet cluster (tests/lab, StartCluster) the
// way docs/install.md tells a user, and checks what a user relies on: the install (every node
// Ready through edgeplane's CNI, pods reaching each other and Services by name across nodes and
// over the private line), a rolling update of the DaemonSet under traffic that loses nothing, and
// the uninstall. The tests share one cluster, brought up by the first test that needs it, in
// source order: TestUninstall, last, takes edgeplane off it.
//
// Needs root, the lab binaries (EDGEPLANE_BIN, K8S_BIN with kubelet, kube-controller-manager,
// kube-scheduler and kubectl, CNI_PLUGINS_BIN) and the image tarballs EDGEPLANE_PAUSE_IMAGE,
// EDGEPLANE_IMAGE (edgeplane's, `make image`) and EDGEPLANE_COREDNS_IMAGE (docs/kubelet-lab.md).
package cluster

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// labs are the labs up, for TestMain's emergency teardown.
var labs lab.Labs

var shared struct {
	once    sync.Once
	cluster *lab.Cluster
	err     error
	failed  bool
	took    time.Duration
}

func TestMain(m *testing.M) {
	code := lab.Main(m, "cluster", &labs)
	if c := shared.cluster; c != nil {
		if code != 0 || shared.failed {
			c.Lab.KeepLogs()
		}
		c.Close()
		labs.Remove(c.Lab)
	}
	os.Exit(code)
}

// cluster returns the shared cluster, bringing it up on first use. A test that fails keeps the
// lab's files.
func cluster(t *testing.T) *lab.Cluster {
	t.Helper()
	cfg := lab.ConfigForTest(t)
	shared.once.Do(func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cfg.ServiceAccountAdmission = true
		// The cluster outlives the test that brings it up: its progress goes to stderr.
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
		}
		l, err := lab.New(ctx, cfg)
		if err != nil {
			shared.err = err
			return
		}
		labs.Add(l)
		c, err := l.StartCluster(ctx, lab.ClusterOptions{})
		if err != nil {
			shared.err = err
			l.KeepLogs()
			l.Close()
			labs.Remove(l)
			return
		}
		shared.cluster, shared.took = c, time.Since(start)
		for _, tm := range c.Timings {
			t.Logf("bring-up: %s: %v", tm.Phase, tm.Duration.Round(time.Millisecond))
		}
		t.Logf("bring-up: cluster of %d nodes up after %v (lab %s)", len(c.Nodes), shared.took.Round(time.Millisecond), l.Dir)
	})
	if shared.err != nil {
		t.Fatalf("bringing the cluster up: %v", shared.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			shared.failed = true
			shared.cluster.Lab.KeepLogs()
			t.Logf("lab files kept in %s", shared.cluster.Lab.Dir)
		}
	})
	return shared.cluster
}
