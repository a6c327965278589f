package domains

import (
	"os"
	"testing"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// labs are the labs up, for TestMain's emergency teardown.
var labs lab.Labs

// TestMain tears the labs down when go test's timeout or a signal would kill the binary first.
func TestMain(m *testing.M) { os.Exit(lab.Main(m, "domains", &labs)) }
