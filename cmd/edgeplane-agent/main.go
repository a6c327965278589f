// Command edgeplane-agent runs on every node (hostNetwork): it programs the edgeplane datapath and
// keeps its maps equal to the cluster. See pkg/agent; `edgeplane-agent --help` lists its flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeplane/edgeplane/pkg/agent"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := agent.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, version)
	stop()
	os.Exit(code)
}
