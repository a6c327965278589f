// Package domains is the end-to-end suite of network domains (issue 3, docs/domains.md): a lab of
// three domains (cloud, site-a, site-b; tests/lab), real edgeplane agents and CNI, a real
// kube-apiserver, and the pod-pair reachability matrix under each connectivity configuration.
// Run it with `make test` (root).
package domains

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

var current struct {
	mu  sync.Mutex
	lab *lab.Lab
}

func setLab(l *lab.Lab) {
	current.mu.Lock()
	current.lab = l
	current.mu.Unlock()
}

// TestMain tears a lab down when go test's timeout or a signal would kill the binary before the
// test's own cleanup runs (namespaces and mounts would outlive it).
func TestMain(m *testing.M) {
	flag.Parse()
	emergency := func(why string) {
		current.mu.Lock()
		l := current.lab
		current.mu.Unlock()
		if l != nil {
			fmt.Fprintf(os.Stderr, "domains: %s: tearing the lab down; files kept in %s\n", why, l.Dir)
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
