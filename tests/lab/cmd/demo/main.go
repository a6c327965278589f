// Command demo brings up an edgeplane lab (kube-apiserver, three nodes, two pods each), shows the
// cluster, pings across nodes, and keeps the lab up until Ctrl-C (or -hold passes), then tears
// everything down. Run it as root through `make demo`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

func main() {
	nodes := flag.Int("nodes", 3, "number of nodes")
	pods := flag.Int("pods", 2, "pods per node")
	hold := flag.Duration("hold", 0, "tear down after this long instead of waiting for Ctrl-C (0: wait)")
	flag.Parse()
	if err := run(*nodes, *pods, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(nodeCount, podsPerNode int, hold time.Duration) error {
	cfg, err := lab.ConfigFromEnv()
	if err != nil {
		return err
	}
	cfg.Logf = func(format string, args ...any) { fmt.Printf("  "+format+"\n", args...) }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("== bringing up the lab")
	l, err := lab.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("== tearing down")
		l.Close()
	}()
	var all []*lab.Pod
	var nodes []*lab.Node
	for i := 1; i <= nodeCount; i++ {
		start := time.Now()
		n, err := l.AddNode(ctx, fmt.Sprintf("node%d", i), i, lab.NodeOptions{})
		if err != nil {
			l.KeepLogs()
			return fmt.Errorf("%w (logs kept in %s)", err, l.Dir)
		}
		fmt.Printf("  node %s up, agent ready in %v\n", n.Name, time.Since(start).Round(time.Millisecond))
		nodes = append(nodes, n)
		for k := 0; k < podsPerNode; k++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("pod-%d%c", i, 'a'+k), lab.PodOptions{})
			if err != nil {
				l.KeepLogs()
				return fmt.Errorf("%w (logs kept in %s)", err, l.Dir)
			}
			all = append(all, p)
		}
	}

	fmt.Printf("\n== cluster (lab %s, API server %s, files in %s)\n", l.ID, l.API.URL, l.Dir)
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNODE IP\tPOD CIDR\tNETNS\tAGENT PID")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", n.Name, n.IP, n.PodCIDR, n.Netns, n.Agent.Pid())
	}
	fmt.Fprintln(tw, "\t\t\t\t")
	fmt.Fprintln(tw, "POD\tPOD IP\tNODE\tNETNS\t")
	for _, p := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", p.Name, p.IP, p.Node.Name, p.Netns)
	}
	tw.Flush()

	fmt.Println("\n== ping between pods on different nodes")
	ok, failed := 0, 0
	for _, src := range all {
		for _, dst := range all {
			if src.Node == dst.Node {
				continue
			}
			_, err := lab.WaitPing(ctx, src.Netns, dst.IP, 3*time.Second)
			var rtt time.Duration
			if err == nil {
				rtt, err = lab.Ping(src.Netns, dst.IP, time.Second)
			}
			if err != nil {
				failed++
				fmt.Printf("  %-7s -> %-7s %-12s FAIL %v\n", src.Name, dst.Name, dst.IP, err)
				continue
			}
			ok++
			fmt.Printf("  %-7s -> %-7s %-12s ok   %v\n", src.Name, dst.Name, dst.IP, rtt.Round(time.Microsecond))
		}
	}
	fmt.Printf("  %d ok, %d failed\n", ok, failed)
	fmt.Printf("\nTry: ip netns exec %s ip route; nsenter --net=%s ip -br addr\n", nodes[0].Netns, all[0].Netns.Path())

	if hold > 0 {
		fmt.Printf("\n== holding for %v\n", hold)
		select {
		case <-ctx.Done():
		case <-time.After(hold):
		}
	} else {
		fmt.Println("\n== lab is up; Ctrl-C tears it down")
		<-ctx.Done()
	}
	if failed > 0 {
		return fmt.Errorf("%d pings failed", failed)
	}
	return nil
}
