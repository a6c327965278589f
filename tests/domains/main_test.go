package domains

import (
	"os"
	"testing"

	"github.com/edgeplane/edgeplane/tests/lab"
)

var current lab.Current

func setLab(l *lab.Lab) { current.Set(l) }

// TestMain tears a lab down when go test's timeout or a signal would kill the binary first.
func TestMain(m *testing.M) { os.Exit(lab.Main(m, "domains", &current)) }
