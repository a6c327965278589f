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
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// labs are the labs up, for TestMain's emergency teardown.
var labs lab.Labs

func TestMain(m *testing.M) { os.Exit(lab.Main(m, "interop", &labs)) }

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
