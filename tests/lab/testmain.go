package lab

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
)

// Labs are the labs a test package has up, for TestMain's emergency teardown.
type Labs struct {
	mu  sync.Mutex
	set map[*Lab]bool
}

// Add records l as up.
func (s *Labs) Add(l *Lab) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = map[*Lab]bool{}
	}
	s.set[l] = true
}

// Remove records l as closed.
func (s *Labs) Remove(l *Lab) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.set, l)
}

func (s *Labs) all() []*Lab {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Lab, 0, len(s.set))
	for l := range s.set {
		out = append(out, l)
	}
	return out
}

// Main runs a test package whose tests build labs (recorded in labs) and returns its exit code. A
// test binary killed by go test's -timeout panic or by a signal runs no cleanup: Main tears the
// labs down first (agents and the API server die with the binary anyway, namespaces and mounts
// would not), keeping their files.
func Main(m *testing.M, pkg string, labs *Labs) int {
	flag.Parse()
	emergency := func(why string) {
		for _, l := range labs.all() {
			fmt.Fprintf(os.Stderr, "%s: %s: tearing lab %s down; files kept in %s\n", pkg, why, l.ID, l.Dir)
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
	return m.Run()
}

// ConfigForTest is the lab's configuration from the environment. It fails the test (never skips
// silently) when the binaries are missing, and skips only for a non-root developer.
func ConfigForTest(t testing.TB) Config {
	t.Helper()
	cfg, err := ConfigFromEnv()
	if errors.Is(err, ErrNotRoot) {
		t.Skip("needs root: the lab builds network namespaces and loads BPF (make test runs as root)")
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logf = t.Logf
	return cfg
}

// NewForTest builds a lab (API server only) for t, records it in labs and closes it when t ends; a
// failed test keeps its files and logs the tails of every log first.
func NewForTest(t *testing.T, cfg Config, labs *Labs) *Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	l, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("building the lab: %v", err)
	}
	labs.Add(l)
	t.Cleanup(func() {
		if t.Failed() {
			l.KeepLogs()
			t.Logf("logs (all kept in %s):\n%s", l.Dir, LogTails(l))
		}
		l.Close()
		labs.Remove(l)
	})
	return l
}

// LogTails is the tail of every agent, flanneld and CNI log of the lab's nodes.
func LogTails(l *Lab) string {
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
			fmt.Fprintf(&b, "----- %s (last 25 lines)\n%s\n", p, TailFile(p, 25))
		}
		fmt.Fprintf(&b, "----- %s (last 15 lines)\n%s\n", n.CNILogPath(), TailFile(n.CNILogPath(), 15))
	}
	return b.String()
}
