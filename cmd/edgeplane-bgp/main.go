// Command edgeplane-bgp is the BGP speaker of route mode in a process of its own: edgeplane-agent
// starts it (next to its own executable) when this node speaks BGP, and drives it over its stdin
// and stdout (pkg/bgp's Process and Serve). It runs GoBGP (pkg/bgp/gobgp), which the agent does
// not link. It is not meant to be run by hand.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeplane/edgeplane/pkg/bgp"
	"github.com/edgeplane/edgeplane/pkg/bgp/gobgp"
)

func main() {
	// SIGTERM and SIGINT reach the whole process group: the agent decides how the speaker
	// stops (with or without a NOTIFICATION), so the speaker waits for its request, or for the
	// end of its input when the agent is gone.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("component", "edgeplane-bgp")
	start := func(ctx context.Context, cfg bgp.Config) (bgp.Speaker, error) {
		cfg.Logger = logger
		sp, err := gobgp.Start(ctx, cfg)
		if err != nil {
			return nil, err // not a nil *gobgp.Speaker in a Speaker
		}
		return sp, nil
	}
	if err := bgp.Serve(context.Background(), os.Stdin, os.Stdout, start); err != nil {
		fmt.Fprintf(os.Stderr, "edgeplane-bgp: %v\n", err)
		os.Exit(1)
	}
}
