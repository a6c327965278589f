package demo

import (
	"os"
	"testing"

	"github.com/edgeplane/edgeplane/tests/lab"
)

var labs lab.Labs

func TestMain(m *testing.M) { os.Exit(lab.Main(m, "demo", &labs)) }
