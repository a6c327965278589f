// Package e2e is edgeplane's end-to-end suite: real edgeplane-agent and edgeplane-cni binaries on
// the netns lab (tests/lab) against a real etcd + kube-apiserver. Run it with `make test` (root).
//
// One lab is shared by the tests of the package (three nodes, two pods each, built on first use);
// tests that change the cluster (nodes added or removed, agents killed, pods churned) add and remove
// their own nodes and pods, or restore what they touched, so each test's assertions stand alone.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	sharedNodes = 3
	podsPerNode = 2
	echoPort    = 8080
)

var shared struct {
	once  sync.Once
	mu    sync.Mutex // guards lab for TestMain's emergency teardown
	lab   *lab.Lab
	nodes []*lab.Node // node1..node3
	pods  []*lab.Pod  // pod-1a, pod-1b, pod-2a, ...
	err   error
	skip  string
}

// labs holds the shared lab once built, for the emergency teardown in lab.Main.
var labs lab.Labs

func TestMain(m *testing.M) {
	code := lab.Main(m, "e2e", &labs)
	if l := sharedLabIfBuilt(); l != nil {
		if code != 0 {
			l.KeepLogs()
			fmt.Fprintf(os.Stderr, "e2e: lab files (agent, CNI, apiserver logs) kept in %s\n", l.Dir)
		}
		l.Close()
	}
	os.Exit(code)
}

// sharedLabIfBuilt is the shared lab, or nil while it is being built or was never needed.
func sharedLabIfBuilt() *lab.Lab {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	return shared.lab
}

// sharedLab returns the package's lab, building it on first use: API server, node1..node3 with
// their agents, and pods pod-<n>a, pod-<n>b on each. It fails the test (never skips silently) when
// the binaries are missing, and skips only for a non-root developer.
func sharedLab(t *testing.T) *lab.Lab {
	t.Helper()
	shared.once.Do(func() {
		cfg, err := lab.ConfigFromEnv()
		if errors.Is(err, lab.ErrNotRoot) {
			shared.skip = "needs root: the lab builds network namespaces and loads BPF (make test runs as root)"
			return
		}
		if err != nil {
			shared.err = err
			return
		}
		cfg.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "lab: "+format+"\n", args...) }
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.err = buildShared(ctx, cfg)
	})
	if shared.skip != "" {
		t.Skip(shared.skip)
	}
	if shared.err != nil {
		t.Fatalf("building the shared lab: %v", shared.err)
	}
	dumpOnFailure(t, shared.lab)
	return shared.lab
}

func buildShared(ctx context.Context, cfg lab.Config) error {
	start := time.Now()
	l, err := lab.New(ctx, cfg)
	if err != nil {
		return err
	}
	shared.mu.Lock()
	shared.lab = l
	shared.mu.Unlock()
	labs.Add(l)
	for i := 1; i <= sharedNodes; i++ {
		n, err := l.AddNode(ctx, fmt.Sprintf("node%d", i), i, lab.NodeOptions{})
		if err != nil {
			return err
		}
		shared.nodes = append(shared.nodes, n)
	}
	for _, n := range shared.nodes {
		for k := 0; k < podsPerNode; k++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("pod-%d%c", n.Index, 'a'+k), lab.PodOptions{})
			if err != nil {
				return err
			}
			shared.pods = append(shared.pods, p)
		}
	}
	cfg.Logf("shared lab %s up in %v: %d nodes, %d pods", l.ID, time.Since(start).Round(time.Millisecond), len(shared.nodes), len(shared.pods))
	return nil
}

// dumpOnFailure prints the tails of every node's agent and CNI logs when t fails.
func dumpOnFailure(t *testing.T, l *lab.Lab) {
	t.Cleanup(func() {
		if !t.Failed() || l == nil {
			return
		}
		l.KeepLogs()
		nodes := l.Nodes()
		names := make([]string, 0, len(nodes))
		for name := range nodes {
			names = append(names, name)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, name := range names {
			n := nodes[name]
			b.WriteString(n.AgentLogs(25))
			fmt.Fprintf(&b, "----- %s (last 15 lines)\n%s\n", n.CNILogPath(), lab.TailFile(n.CNILogPath(), 15))
		}
		t.Logf("logs (all kept in %s):\n%s", l.Dir, b.String())
	})
}

// eventually retries fn every 50 ms until it returns nil or timeout passes; it returns how long
// it took, or fn's last error.
func eventually(timeout time.Duration, fn func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := fn()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lossless runs a sequence-numbered UDP stream (one datagram every 2 ms) from src to an echo server
// in each of dsts while disrupt runs, and fails the test for any datagram lost or a stream that got
// nothing back. what names the disruption in the messages.
func lossless(t *testing.T, src *lab.Pod, dsts []*lab.Pod, basePort uint16, what string, disrupt func()) {
	t.Helper()
	type result struct {
		dst *lab.Pod
		st  lab.StreamStats
		err error
	}
	results := make(chan result, len(dsts))
	sctx, stop := context.WithCancel(t.Context())
	defer stop()
	for i, dst := range dsts {
		srv, err := lab.ServeUDPEcho(dst.Netns, netip.AddrPortFrom(dst.IP, basePort+uint16(i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		if _, err := lab.WaitPing(t.Context(), src.Netns, dst.IP, reachTimeout); err != nil {
			t.Fatalf("precondition: %s -> %s: %v", src.Name, dst.Name, err)
		}
		go func() {
			st, err := lab.UDPStream(sctx, src.Netns, srv.Addr, 2*time.Millisecond, 500*time.Millisecond)
			results <- result{dst, st, err}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	disrupt()
	stop()
	for range dsts {
		r := <-results
		if r.err != nil {
			t.Errorf("stream %s -> %s: %v", src.Name, r.dst.Name, r.err)
			continue
		}
		t.Logf("stream %s -> %s: %v", src.Name, r.dst.Name, r.st)
		if len(r.st.Lost) > 0 {
			t.Errorf("stream %s -> %s lost %d of %d datagrams across %s: %v", src.Name, r.dst.Name, len(r.st.Lost), r.st.Sent, what, r.st)
		}
		if r.st.Received == 0 {
			t.Errorf("stream %s -> %s: nothing came back", src.Name, r.dst.Name)
		}
	}
}
