// Command edgeplane-agent runs on every node (hostNetwork): it programs the edgeplane datapath and
// keeps its maps equal to the cluster. See pkg/agent.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent"
)

func main() {
	var cfg agent.Config
	cfg.RegisterFlags(flag.CommandLine)
	klog.InitFlags(flag.CommandLine)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())
	if err := agent.Run(ctx, cfg); err != nil {
		klog.ErrorS(err, "edgeplane-agent failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
