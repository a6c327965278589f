// Command edgeplane-agent runs on every node (hostNetwork): it programs the edgeplane datapath and
// keeps its maps equal to the cluster. See pkg/agent.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	var cfg agent.Config
	cfg.RegisterFlags(flag.CommandLine)
	klog.InitFlags(flag.CommandLine)
	validateOnly := flag.Bool("validate-flags", false, "parse and validate the flags, then exit (0: valid); touches neither the host nor the API server")
	printVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *printVersion {
		fmt.Println("edgeplane-agent", version)
		os.Exit(0)
	}
	if *validateOnly {
		if err := checkFlags(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "edgeplane-agent: invalid flags:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())
	klog.InfoS("Starting edgeplane-agent", "version", version, "uninstall", cfg.Uninstall)
	cfg.Version = version
	run := agent.Run
	if cfg.Uninstall {
		run = agent.Uninstall
	}
	if err := run(ctx, cfg); err != nil {
		klog.ErrorS(err, "edgeplane-agent failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// checkFlags refuses stray positional arguments (a flag with a typo'd dash would otherwise be ignored)
// and what Config.Validate refuses.
func checkFlags(cfg agent.Config) error {
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	return cfg.Validate()
}
