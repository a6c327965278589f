package lab

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Current is the lab a test package has built, for TestMain's emergency teardown.
type Current struct {
	mu  sync.Mutex
	lab *Lab
}

// Set records l (nil when it is closed).
func (c *Current) Set(l *Lab) {
	c.mu.Lock()
	c.lab = l
	c.mu.Unlock()
}

// Get is the recorded lab or nil.
func (c *Current) Get() *Lab {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lab
}

// Main runs a test package whose tests build labs (recorded in cur) and returns its exit code. A
// test binary killed by go test's -timeout panic or by a signal runs no cleanup: Main tears the
// current lab down first (agents and the API server die with the binary anyway, namespaces and
// mounts would not), keeping its files.
func Main(m *testing.M, pkg string, cur *Current) int {
	flag.Parse()
	emergency := func(why string) {
		if l := cur.Get(); l != nil {
			fmt.Fprintf(os.Stderr, "%s: %s: tearing the lab down; files kept in %s\n", pkg, why, l.Dir)
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
