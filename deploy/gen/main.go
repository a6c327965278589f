// Command gen writes deploy/edgeplane.yaml from deploy/base; run it with `go generate ./deploy`
// (from the deploy directory: paths are relative to it).
package main

import (
	"fmt"
	"os"

	"github.com/edgeplane/edgeplane/deploy"
	"github.com/edgeplane/edgeplane/pkg/install"
)

func main() {
	out, err := deploy.Render("base")
	if err == nil {
		err = install.WriteAtomic("edgeplane.yaml", out, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy/gen:", err)
		os.Exit(1)
	}
}
