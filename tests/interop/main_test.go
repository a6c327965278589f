// Package interop checks that edgeplane lives next to what an edge cluster already runs, on the
// netns lab (tests/lab) with a real etcd + kube-apiserver: real flanneld v0.28 and Flannel's CNI
// plugin on one node beside edgeplane nodes (a cluster moving over node by node), and a Raven-like
// VXLAN tunnel (raven0, VNI 200, UDP 4472) on edgeplane nodes. Run it with `make test` (root); it
// needs FLANNEL_BIN (scripts/build-flanneld.sh) besides the lab's binaries.
//
// Each test builds its own lab and closes it when it ends, failed or not; TestMain tears down
// whatever is still up if the binary is about to be killed (go test -timeout, Ctrl-C).
package interop

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// live holds the labs being used, for TestMain's emergency teardown.
var live struct {
	mu   sync.Mutex
	labs map[*lab.Lab]bool
}

func TestMain(m *testing.M) {
	flag.Parse()
	// A test binary killed by go test's -timeout panic or by Ctrl-C runs no cleanup: tear the labs
	// down first (processes die with the binary anyway, namespaces and mounts would not).
	emergency := func(why string) {
		live.mu.Lock()
		labs := make([]*lab.Lab, 0, len(live.labs))
		for l := range live.labs {
			labs = append(labs, l)
		}
		live.mu.Unlock()
		for _, l := range labs {
			fmt.Fprintf(os.Stderr, "interop: %s: tearing lab %s down; files kept in %s\n", why, l.ID, l.Dir)
			l.KeepLogs()
			l.Close()
		}
	}
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, ok := f.Value.(flag.Getter).Get().(time.Duration); ok && d > 30*time.Second {
			time.AfterFunc(d-20*time.Second, func() { emergency("go test -timeout is about to fire") })
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		emergency("got " + sig.String())
		os.Exit(1)
	}()
	os.Exit(m.Run())
}

// labConfig is the lab's configuration from the environment. It fails the test (never skips
// silently) when the binaries are missing, and skips only for a non-root developer.
func labConfig(t *testing.T) lab.Config {
	t.Helper()
	cfg, err := lab.ConfigFromEnv()
	if errors.Is(err, lab.ErrNotRoot) {
		t.Skip("needs root: the lab builds network namespaces and loads BPF (make test runs as root)")
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "lab: "+format+"\n", args...) }
	return cfg
}

// newLab builds a lab (API server only) for t and closes it when t ends; a failed test keeps its
// files and prints the tails of every log first.
func newLab(t *testing.T, cfg lab.Config) *lab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, cfg)
	if err != nil {
		t.Fatalf("building the lab: %v", err)
	}
	live.mu.Lock()
	if live.labs == nil {
		live.labs = map[*lab.Lab]bool{}
	}
	live.labs[l] = true
	live.mu.Unlock()
	t.Cleanup(func() {
		if t.Failed() {
			l.KeepLogs()
			t.Logf("logs (all kept in %s):\n%s", l.Dir, logTails(l))
		}
		l.Close()
		live.mu.Lock()
		delete(live.labs, l)
		live.mu.Unlock()
	})
	return l
}

// logTails is the tail of every agent, flanneld and CNI log of the lab's nodes.
func logTails(l *lab.Lab) string {
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
		for i := 1; ; i++ {
			p := fmt.Sprintf("%s/flanneld.%d.log", n.Dir, i)
			if _, err := os.Stat(p); err != nil {
				break
			}
			fmt.Fprintf(&b, "----- %s (last 25 lines)\n%s\n", p, lab.TailFile(p, 25))
		}
		fmt.Fprintf(&b, "----- %s (last 15 lines)\n%s\n", n.CNILogPath(), lab.TailFile(n.CNILogPath(), 15))
	}
	return b.String()
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
