// Command demo brings up an edgeplane lab (kube-apiserver, kube-controller-manager, two cloud
// nodes and one site node behind NAT) and runs lab.RunDemo on it: pings between pods across nodes
// and domains (the cloud <-> site pair is unreachable and its drops are counted), a Service
// answered by pods on two nodes, and the edgeplanectl commands to look inside a node, printed
// ready to paste. The lab stays up until Ctrl-C (or -hold passes), then everything is torn down.
// Run it as root through `make demo`; tests/demo runs the same scenario and checks it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

func main() {
	hold := flag.Duration("hold", 0, "tear down after this long instead of waiting for Ctrl-C (0: wait)")
	verbose := flag.Bool("v", false, "print the lab's progress lines too")
	flag.Parse()
	if err := run(*hold, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(hold time.Duration, verbose bool) error {
	cfg, err := lab.ConfigFromEnv()
	if err != nil {
		return err
	}
	if verbose {
		cfg.Logf = func(format string, args ...any) { fmt.Printf("  "+format+"\n", args...) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("== bringing up the lab (etcd, kube-apiserver)")
	l, err := lab.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("== tearing down")
		l.Close()
	}()
	if _, err := lab.RunDemo(ctx, l, os.Stdout); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while coming up
		}
		l.KeepLogs()
		return fmt.Errorf("%w (logs kept in %s)", err, l.Dir)
	}
	if hold > 0 {
		fmt.Printf("\n== holding for %v\n", hold)
		select {
		case <-ctx.Done():
		case <-time.After(hold):
		}
		return nil
	}
	fmt.Println("\n== lab is up; Ctrl-C tears it down")
	<-ctx.Done()
	return nil
}
