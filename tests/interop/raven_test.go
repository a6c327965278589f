package interop

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// Raven (OpenYurt's O&M tunnel) keeps its own VXLAN device on the nodes. The lab's stand-in, made
// as Raven's vxlan mode makes it: raven0, VNI 200, UDP 4472, no learning, a permanent FDB entry and
// neighbour entry per peer, addresses from a range only the lab uses (outside the lab plan:
// 172.30.0.0/24 underlay, 10.244.0.0/16 pods, 10.96.0.0/12 services).
const (
	ravenDevice = "raven0"
	ravenVNI    = 200
	ravenPort   = 4472
	ravenEcho   = 9100
	podEcho     = 9200
)

var ravenNet = netip.MustParsePrefix("100.64.200.0/24")

// ravenIP is node n's raven0 address: 100.64.200.(10+index).
func ravenIP(n *lab.Node) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64, 200, byte(10 + n.Index)})
}

// ravenMAC is node n's raven0 MAC (locally administered, made up).
func ravenMAC(n *lab.Node) string { return fmt.Sprintf("0e:72:61:76:00:%02x", n.Index) }

// TestRavenUntouched: on two edgeplane nodes a Raven-like raven0 (VNI 200, UDP 4472) carries
// node-to-node traffic while edgeplane's programs sit on the same underlay NIC, which counts none
// of Raven's packets as drops; edgeplane attaches nothing to raven0; restarting the agents
// (SIGTERM, and SIGKILL then start) leaves raven0, its FDB, neighbours and addresses as they were
// and loses none of a Raven stream nor of a pod stream between the same nodes running meanwhile;
// even `edgeplane-agent --uninstall` leaves raven0 alone.
func TestRavenUntouched(t *testing.T) {
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx := t.Context()
	var nodes []*lab.Node
	var pods []*lab.Pod
	for i := 1; i <= 2; i++ {
		n, err := l.AddNode(ctx, fmt.Sprintf("edge%d", i), i, lab.NodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		p, err := l.AddPod(ctx, n, fmt.Sprintf("pod-%da", i), lab.PodOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	for i, n := range nodes {
		if err := addRaven(ctx, n, nodes[1-i]); err != nil {
			t.Fatal(err)
		}
	}
	before := map[*lab.Node]string{}
	for _, n := range nodes {
		st, err := ravenState(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		before[n] = st
	}
	t.Logf("raven0 on %s:\n%s", nodes[0].Name, before[nodes[0]])
	a, b := nodes[0], nodes[1]

	t.Run("flows", func(t *testing.T) {
		for _, n := range nodes {
			links, err := n.PinnedLinks()
			if err != nil || len(links) == 0 {
				t.Fatalf("precondition: edgeplane's links on %s: %v %v", n.Name, links, err)
			}
			if progs, err := n.Netns.TCXPrograms("eth0"); err != nil || len(progs) == 0 {
				t.Fatalf("precondition: edgeplane's tcx programs on %s's eth0: %v %v", n.Name, progs, err)
			}
			if progs, err := n.Netns.TCXPrograms(ravenDevice); err != nil || len(progs) > 0 {
				t.Errorf("%s on %s runs tcx programs %v (%v); edgeplane should leave it alone", ravenDevice, n.Name, progs, err)
			}
		}
		capture, err := lab.StartCapture(l.Switch, b.SwitchPort)
		if err != nil {
			t.Fatal(err)
		}
		defer capture.Close()
		for _, pair := range [][2]*lab.Node{{a, b}, {b, a}} {
			took, err := lab.WaitPing(ctx, pair[0].Netns, ravenIP(pair[1]), 5*time.Second)
			if err != nil {
				t.Fatalf("ping over %s %s -> %s: %v", ravenDevice, pair[0].Name, pair[1].Name, err)
			}
			t.Logf("ping over %s %s (%s) -> %s (%s): first reply after %v", ravenDevice, pair[0].Name, ravenIP(pair[0]), pair[1].Name, ravenIP(pair[1]), took.Round(time.Microsecond))
		}
		srv, err := lab.ServeTCPEcho(b.Netns, netip.AddrPortFrom(ravenIP(b), ravenEcho))
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		seen, err := lab.TCPEcho(a.Netns, srv.Addr, 2*time.Second)
		if err != nil {
			t.Fatalf("tcp over %s: %v", ravenDevice, err)
		}
		if seen.Addr() != ravenIP(a) {
			t.Errorf("tcp over %s: server saw %s, want %s", ravenDevice, seen.Addr(), ravenIP(a))
		}
		var request, reply bool
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && !(request && reply) {
			if !request || !reply {
				_, _ = lab.Ping(a.Netns, ravenIP(b), 200*time.Millisecond)
			}
			frame, err := capture.Next(200 * time.Millisecond)
			if err != nil {
				continue
			}
			f, ok := lab.ParseVXLAN(frame, ravenPort)
			if !ok || !ravenNet.Contains(f.InnerSrc) {
				continue
			}
			if f.VNI != ravenVNI {
				t.Errorf("raven frame %s -> %s with VNI %d, want %d", f.InnerSrc, f.InnerDst, f.VNI, ravenVNI)
			}
			switch {
			case f.OuterSrc == a.IP && f.OuterDst == b.IP && f.InnerSrc == ravenIP(a):
				request = true
			case f.OuterSrc == b.IP && f.OuterDst == a.IP && f.InnerSrc == ravenIP(b):
				reply = true
			default:
				t.Errorf("raven frame outer %s -> %s inner %s -> %s", f.OuterSrc, f.OuterDst, f.InnerSrc, f.InnerDst)
			}
		}
		if !request || !reply {
			t.Errorf("no VXLAN UDP %d VNI %d frames on %s's switch port: request %v, reply %v", ravenPort, ravenVNI, b.Name, request, reply)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	streams := []stream{
		{what: "raven " + a.Name + " -> " + b.Name, from: a.Netns, to: b.Netns, dst: netip.AddrPortFrom(ravenIP(b), ravenEcho)},
		{what: "pod " + pods[0].Name + " -> " + pods[1].Name, from: pods[0].Netns, to: pods[1].Netns, dst: netip.AddrPortFrom(pods[1].IP, podEcho)},
	}

	t.Run("no drops", func(t *testing.T) {
		var monitors []*dropMonitor
		for _, n := range nodes {
			m, err := startDropMonitor(l, n)
			if err != nil {
				t.Fatal(err)
			}
			defer m.stop()
			monitors = append(monitors, m)
		}
		counters0 := readCounters(t, nodes)
		stats := runStreams(t, streams, "steady traffic", func() { time.Sleep(3 * time.Second) })
		counters1 := readCounters(t, nodes)
		checkNoDrops(t, nodes, counters0, counters1)
		// Not vacuous: Raven's datagrams crossed edgeplane's underlay programs, which passed them
		// (requests into b, replies into a).
		nodeInForwarded := metricsmap.Key{Dir: metricsmap.DirNodeIn, Reason: uint32(dropreason.Forwarded)}
		raven := stats[streams[0].what]
		for _, n := range nodes {
			if got := counters1[n][nodeInForwarded].Packets - counters0[n][nodeInForwarded].Packets; got < uint64(raven.Received) {
				t.Errorf("%s's node-in program passed %d packets while %d Raven datagrams came in", n.Name, got, raven.Received)
			}
		}
		for _, m := range monitors {
			var other []string
			for _, ev := range m.stop() {
				if ev.isRaven() {
					t.Errorf("%s dropped a Raven packet: %s", m.node.Name, ev)
				} else {
					other = append(other, ev.String())
				}
			}
			if len(other) > 0 {
				t.Logf("%s: drops of other traffic meanwhile (edgeplane is IPv4-only): %s", m.node.Name, summarize(other))
			}
		}
	})

	t.Run("agent restarts", func(t *testing.T) {
		counters0 := readCounters(t, nodes)
		runStreams(t, streams, "the agent restarts", func() {
			start := time.Now()
			if err := a.RestartAgent(ctx, a.ExtraArgs, 30*time.Second); err != nil {
				t.Error(err)
				return
			}
			t.Logf("agent on %s restarted (SIGTERM, start) and reprogrammed in %v", a.Name, time.Since(start).Round(time.Millisecond))
			b.KillAgent()
			start = time.Now()
			if err := b.StartAgent(); err != nil {
				t.Error(err)
				return
			}
			if rewritten, err := b.WaitRewritten(ctx, start, 30*time.Second); err != nil || !rewritten {
				t.Errorf("agent on %s after SIGKILL and start: rewritten %v, %v", b.Name, rewritten, err)
				return
			}
			t.Logf("agent on %s restarted (SIGKILL, start) and reprogrammed in %v", b.Name, time.Since(start).Round(time.Millisecond))
			time.Sleep(2 * time.Second) // the restarted agents resync and garbage-collect
		})
		checkRavenIntact(t, ctx, nodes, before, "the agent restarts")
		counters1 := readCounters(t, nodes)
		checkNoDrops(t, nodes, counters0, counters1)
		if _, err := lab.WaitPing(ctx, a.Netns, ravenIP(b), reachTimeout); err != nil {
			t.Errorf("over %s after the restarts: %v", ravenDevice, err)
		}
	})

	t.Run("uninstall", func(t *testing.T) {
		b.Agent.Stop(5 * time.Second)
		confDir, binDir := t.TempDir(), t.TempDir()
		if out, err := b.RunAgentOnce(ctx, "--uninstall", "--cni-conf-dir="+confDir, "--cni-bin-dir="+binDir); err != nil {
			t.Fatalf("uninstall on %s: %v\n%s", b.Name, err, out)
		}
		if out, err := b.Netns.IP(ctx, "link", "show", "edgeplane.1"); err == nil {
			t.Errorf("precondition: edgeplane.1 still on %s after the uninstall:\n%s", b.Name, out)
		}
		checkRavenIntact(t, ctx, nodes, before, b.Name+"'s uninstall")
		for _, pair := range [][2]*lab.Node{{a, b}, {b, a}} {
			if _, err := lab.WaitPing(ctx, pair[0].Netns, ravenIP(pair[1]), reachTimeout); err != nil {
				t.Errorf("over %s %s -> %s after %s was uninstalled: %v", ravenDevice, pair[0].Name, pair[1].Name, b.Name, err)
			}
		}
	})
}

// addRaven makes n's raven0 toward peer, as Raven's vxlan mode does, and registers nothing for
// teardown: the device goes with the node's namespace.
func addRaven(ctx context.Context, n, peer *lab.Node) error {
	steps := [][]string{
		{"link", "add", ravenDevice, "address", ravenMAC(n), "type", "vxlan", "id", fmt.Sprint(ravenVNI),
			"dstport", fmt.Sprint(ravenPort), "local", n.IP.String(), "dev", "eth0", "nolearning"},
		{"addr", "add", netip.PrefixFrom(ravenIP(n), ravenNet.Bits()).String(), "dev", ravenDevice},
		{"link", "set", ravenDevice, "up"},
		{"neigh", "replace", ravenIP(peer).String(), "lladdr", ravenMAC(peer), "dev", ravenDevice, "nud", "permanent"},
	}
	for _, s := range steps {
		if _, err := n.Netns.IP(ctx, s...); err != nil {
			return err
		}
	}
	_, err := n.Netns.Exec(ctx, "bridge", "fdb", "append", ravenMAC(peer), "dev", ravenDevice, "dst", peer.IP.String(), "self", "permanent")
	return err
}

// ravenState is what must not change under edgeplane: raven0's index, attributes and addresses,
// its FDB and its permanent neighbours.
func ravenState(ctx context.Context, n *lab.Node) (string, error) {
	var b strings.Builder
	for _, args := range [][]string{{"-d", "link", "show", ravenDevice}, {"addr", "show", "dev", ravenDevice}, {"neigh", "show", "dev", ravenDevice, "nud", "permanent"}} {
		out, err := n.Netns.IP(ctx, args...)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 0 && f[0] == "valid_lft":
				continue // lifetimes count down
			case len(f) > 1 && (f[0] == "inet" || f[0] == "inet6"):
				line = f[0] + " " + f[1] // flags such as tentative (DAD) settle on their own
			}
			b.WriteString(strings.TrimSpace(line) + "\n")
		}
	}
	fdb, err := n.Netns.Exec(ctx, "bridge", "fdb", "show", "dev", ravenDevice)
	if err != nil {
		return "", err
	}
	b.WriteString(strings.TrimSpace(fdb) + "\n")
	return b.String(), nil
}

func checkRavenIntact(t *testing.T, ctx context.Context, nodes []*lab.Node, before map[*lab.Node]string, after string) {
	t.Helper()
	for _, n := range nodes {
		now, err := ravenState(ctx, n)
		if err != nil {
			t.Errorf("%s on %s: %v", ravenDevice, n.Name, err)
			continue
		}
		if now != before[n] {
			t.Errorf("%s on %s changed after %s:\nbefore:\n%s\nnow:\n%s", ravenDevice, n.Name, after, before[n], now)
			continue
		}
		t.Logf("%s on %s after %s: same device (index, VNI, port, MAC), addresses, FDB and neighbour entries", ravenDevice, n.Name, after)
	}
}
