// Package partition is the end-to-end suite of edge autonomy (issue 18 items 1-2,
// docs/autonomy.md): a site cut off from the API server (tests/lab partition.go) keeps forwarding
// pod-to-pod and pod-to-Service traffic, its agents stay healthy and remove nothing, an agent
// killed and started again during the cut waits for the API server without touching the pinned
// datapath, and after the link returns the agents say what happened and pick up what changed
// within seconds. Run it with `make test` (root).
package partition

import (
	"os"
	"testing"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// labs are the labs up, for TestMain's emergency teardown.
var labs lab.Labs

// TestMain tears the labs down when go test's timeout or a signal would kill the binary first.
func TestMain(m *testing.M) { os.Exit(lab.Main(m, "partition", &labs)) }
