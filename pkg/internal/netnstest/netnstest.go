// Package netnstest runs a unit test's body inside a fresh network namespace of its own, so that
// tests which create links, routes and neighbours never touch the machine's namespace.
package netnstest

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// Run runs body on a locked OS thread inside a new network namespace, and returns the thread to
// its namespace afterwards; the namespace goes once nothing holds it. Without root the test is
// skipped.
func Run(t testing.TB, body func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Skipf("creating a network namespace: %v", err)
	}
	defer ns.Close()
	defer netns.Set(orig)
	body()
}
