package bench

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/maps/events"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// listenMode is one arm of the event-stream comparison: which events `edgeplanectl monitor`
// subscribes to on both nodes while the workload runs ("" = no listener).
type listenMode struct {
	name  string
	typ   string
	flags events.Flags
}

// BenchmarkEventStream measures what the event stream costs cross-node pod-to-pod traffic:
// the same pods with no listener, with `edgeplanectl monitor` (drops only, the default: forwarded
// packets emit nothing) on both nodes, and with `monitor --type trace` (an event for every
// forwarded packet, the worst case), in ABBA rounds with ratios paired against no listener.
// BENCH_ROUNDS (default 4) and BENCH_SECONDS (default 3) tune it; about 2 minutes by default.
func BenchmarkEventStream(b *testing.B) {
	ctx := context.Background()
	l := newLab(b)
	ctlBin := filepath.Join(l.Config().EdgeplaneBin, "edgeplanectl")
	n1, err := l.AddNode(ctx, "node-1", 1, lab.NodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n2, err := l.AddNode(ctx, "node-2", 2, lab.NodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	client, err := l.AddPod(ctx, n1, "events-a1", lab.PodOptions{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := l.AddPod(ctx, n2, "events-b1", lab.PodOptions{})
	if err != nil {
		b.Fatal(err)
	}
	path := Path{Client: Endpoint{NetNS: client.Netns.Name(), IP: client.IP.String()},
		Server: Endpoint{NetNS: srv.Netns.Name(), IP: srv.IP.String()}}
	if _, err := RequestResponse(path, false, 1, "1", 14000); err != nil {
		b.Fatalf("pod to pod does not carry traffic: %v", err)
	}

	modes := []listenMode{
		{name: "no-listener"},
		{name: "monitor-drop", typ: "drop", flags: events.FlagDrops},
		{name: "monitor-trace", typ: "trace", flags: events.FlagTrace},
	}
	g := group{name: "event-stream"}
	for _, m := range modes {
		p := path
		p.Name = m.name
		g.paths = append(g.paths, p)
	}
	secs := envInt("BENCH_SECONDS", 3)
	g.metrics = []metric{
		{name: "udp_64b_pps", unit: "packets/s", better: "higher",
			measure: func(p Path, port int) (Sample, error) { return SmallUDP(p, secs, "0", "1", port) },
			value:   func(s Sample) float64 { return s.PPS }},
		{name: "tcp_rr", unit: "transactions/s", better: "higher",
			measure: func(p Path, port int) (Sample, error) { return RequestResponse(p, true, secs, "1", port) },
			value:   func(s Sample) float64 { return s.TPS }},
	}
	// A packet to an address of the cluster CIDR that no node owns: node-1 drops it (NO_ROUTE), so
	// every drop listener must have received at least this one event.
	probe := netip.AddrPortFrom(netip.MustParseAddr("10.244.200.9"), 5353)

	rounds := envInt("BENCH_ROUNDS", 4)
	var results []Result
	port := 15000
	for _, m := range g.metrics {
		samples := make([][]Sample, len(modes))
		for r := 0; r < rounds; r++ {
			for _, i := range ABBAOrder(len(modes), r) {
				port++
				s, err := measureListened(ctlBin, []*lab.Node{n1, n2}, modes[i], func() (Sample, error) {
					s, err := m.measure(g.paths[i], port)
					if err == nil && modes[i].typ != "" {
						err = sendProbe(client.Netns, probe)
					}
					return s, err
				})
				if err != nil {
					b.Fatalf("%s %s %s round %d: %v", g.name, m.name, modes[i].name, r, err)
				}
				if modes[i].flags&events.FlagDrops != 0 && s.Events == 0 {
					b.Fatalf("%s %s %s round %d: the drop listeners received no event, not even the probe's",
						g.name, m.name, modes[i].name, r)
				}
				samples[i] = append(samples[i], s)
			}
		}
		rs := summarize(g, m, samples)
		for i := range rs {
			if modes[i].typ == "" {
				continue
			}
			for _, s := range samples[i] {
				rs[i].Events = append(rs[i].Events, s.Events)
				rs[i].EventsLost = append(rs[i].EventsLost, s.EventsLost)
			}
		}
		results = append(results, rs...)
	}
	b.StopTimer()
	report(b, results, time.Now())
	b.Log(eventCounts(results))
}

// measureListened runs measure with listeners of mode on every node (none for the baseline) and
// adds up what they received.
func measureListened(ctlBin string, nodes []*lab.Node, mode listenMode, measure func() (Sample, error)) (Sample, error) {
	if mode.typ == "" {
		return measure()
	}
	var ls []*listener
	defer func() {
		for _, l := range ls {
			l.kill()
		}
	}()
	for _, n := range nodes {
		l, err := startListener(ctlBin, n, mode.typ, mode.flags)
		if err != nil {
			return Sample{}, err
		}
		ls = append(ls, l)
	}
	s, err := measure()
	if err != nil {
		return s, err
	}
	// The reader wakes at least every 100 ms (pkg/cli monitorPoll): let it drain the last events.
	time.Sleep(300 * time.Millisecond)
	for _, l := range ls {
		c, err := l.stop()
		if err != nil {
			return s, err
		}
		s.Events += c.Shown
		s.EventsLost += c.Lost
	}
	return s, nil
}

func sendProbe(ns lab.Netns, dst netip.AddrPort) error {
	conn, err := lab.DialUDP(ns, dst, false)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte("event stream probe"))
	return err
}

// eventCounts shows that the listeners ran: events received and lost per round, both nodes.
func eventCounts(results []Result) string {
	var sb strings.Builder
	sb.WriteString("events received (lost) per round, both nodes:\n")
	for _, r := range results {
		if len(r.Events) == 0 {
			continue
		}
		fmt.Fprintf(&sb, "  %-12s %-14s", r.Metric, r.Path)
		for k := range r.Events {
			fmt.Fprintf(&sb, " %d (%d)", r.Events[k], r.EventsLost[k])
		}
		sb.WriteString("\n")
	}
	return sb.String()
}
