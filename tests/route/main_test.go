// Package route is the end-to-end suite of route mode (issue 16, docs/domains.md "Route mode"): a
// route-mode site-a on two L2 segments behind a gateway router running bird2 (tests/lab
// routesite.go, gateway.go), real edgeplane agents speaking BGP to it, real CNI and
// kube-apiserver. Run it with `make test` (root; bird2 from scripts/install-deps.sh).
package route

import (
	"os"
	"testing"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// labs are the labs up, for TestMain's emergency teardown.
var labs lab.Labs

// TestMain tears the labs down when go test's timeout or a signal would kill the binary first.
func TestMain(m *testing.M) { os.Exit(lab.Main(m, "route", &labs)) }
