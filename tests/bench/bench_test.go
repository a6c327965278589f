package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/bench/results"
	"github.com/edgeplane/edgeplane/tests/lab"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// metric is one benchmark dimension measured on every path of a group.
type metric struct {
	name    string
	unit    string
	better  string // "higher" or "lower"
	measure func(p Path, port int) (Sample, error)
	value   func(Sample) float64
	// also are metrics computed from the same samples (the CPU cost of a stream).
	also []metric
	// tcpStream marks bulk TCP, whose results record the congestion control used.
	tcpStream bool
	// noRatios marks a figure recorded beside the others but not compared between paths (the
	// machine's floor around a sample).
	noRatios bool
}

// group is a set of paths compared with each other; the first is the baseline of the ratios.
type group struct {
	name    string
	paths   []Path
	metrics []metric
}

// Result is what results.json holds for one (group, metric, path) of a run.
type Result = results.Result

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// newLab builds a lab from the environment (lab.ConfigFromEnv) that the benchmark's end tears down.
func newLab(b *testing.B) *lab.Lab {
	b.Helper()
	cfg, err := lab.ConfigFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	cfg.Logf = b.Logf
	l, err := lab.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	return l
}

// BenchmarkDatapath compares edgeplane (native BPF encapsulation and the collect_md device variant)
// with a Flannel-like node and the raw underlay, in one lab, in alternating rounds: request/response
// on one CPU and across CPUs, 64-byte UDP (a flood, and the CPU per packet at a fixed rate), one
// and 8 TCP streams with the CPU they cost, connect rate pod to pod and through a ClusterIP; and edgeplane's route mode (route.go) against its VXLAN,
// Flannel's host-gw backend and the underlay, on one L2 segment and across the BGP gateway. Run it
// with `make bench` (root). BENCH_ROUNDS (default 5) and BENCH_SECONDS (default 4) tune it,
// BENCH_GROUPS (comma list of group names) keeps only some groups, BENCH_METRICS (comma list of
// metric names) only some metrics, BENCH_TCP_CC the streams' congestion control (default cubic),
// BENCH_UDP_RATE the fixed rate of udp_64b_cpu_fixed (default 30,000 packets/s) and
// BENCH_UDP_SECONDS its samples' length (default 8, as long again measuring the idle floor),
// BENCH_RESULTS names the results file and BENCH_MACHINE the machine; BENCH_HOLD=FILE keeps the
// lab up afterwards for profiling (see hold).
func BenchmarkDatapath(b *testing.B) {
	ctx := context.Background()
	built := time.Now()
	l := newLab(b)

	n1, err := l.AddNode(ctx, "node-1", 1, lab.NodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n2, err := l.AddNode(ctx, "node-2", 2, lab.NodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	d3, err := l.AddNode(ctx, "node-3", 3, lab.NodeOptions{AgentArgs: []string{"--encap-mode=device"}})
	if err != nil {
		b.Fatal(err)
	}
	d4, err := l.AddNode(ctx, "node-4", 4, lab.NodeOptions{AgentArgs: []string{"--encap-mode=device"}})
	if err != nil {
		b.Fatal(err)
	}
	// Route mode (route.go): site-a's nodes route-1 and route-2 on one L2 segment, route-3 behind
	// the gateway.
	rs, err := setupRouteSite(ctx, l, 5)
	if err != nil {
		b.Fatal(err)
	}
	pod := func(n *lab.Node, name string) *lab.Pod {
		p, err := l.AddPod(ctx, n, name, lab.PodOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	a1, a2, bp1 := pod(n1, "bench-a1"), pod(n1, "bench-a2"), pod(n2, "bench-b1")
	d1, d2 := pod(d3, "bench-d1"), pod(d4, "bench-d2")

	fl, err := SetupFlannel(l.ID, l.Switch.Name(), "br0",
		[]string{"172.30.0.61", "172.30.0.62"}, lab.UnderlayNet.Bits(), 2, envInt("BENCH_IPTABLES_SERVICES", 1000))
	if err != nil {
		b.Fatal(err)
	}
	defer fl.Teardown()
	f1, f2 := fl.Nodes[0], fl.Nodes[1]
	// Flannel's host-gw backend beside them: plain kernel routes to the peer node, no encapsulation,
	// no BPF; against edgeplane-route it isolates the cost of the pods' veth hop from BPF's.
	hg, err := SetupFlannelBackend(FlannelHostGW, 11, l.ID, l.Switch.Name(), "br0",
		[]string{"172.30.0.63", "172.30.0.64"}, lab.UnderlayNet.Bits(), 1, envInt("BENCH_IPTABLES_SERVICES", 1000))
	if err != nil {
		b.Fatal(err)
	}
	defer hg.Teardown()
	h1, h2 := hg.Nodes[0], hg.Nodes[1]
	// The veth floor (vethfloor.go): pods on plain veth pairs, kernel routing only, no bridge, no
	// BPF, no encapsulation, no netfilter rule; the cheapest a veth-based pod path can be on this
	// kernel. Against it, the underlay's lead is the veth hop's cost and a pod path's ratio its own.
	vf, err := SetupVethFloor(l.ID, l.Switch.Name(), "br0", 21,
		[]string{"172.30.0.65", "172.30.0.66"}, lab.UnderlayNet.Bits(), 1)
	if err != nil {
		b.Fatal(err)
	}
	defer vf.Teardown()
	v1, v2 := vf.Nodes[0], vf.Nodes[1]

	ep := func(p *lab.Pod) Endpoint { return Endpoint{NetNS: p.Netns.Name(), IP: p.IP.String()} }
	flp := func(n *FlannelNode, i int) Endpoint { return Endpoint{NetNS: n.Pods[i], IP: n.PodIP(i)} }
	vethFloor := Path{Name: "veth-floor", Client: Endpoint{NetNS: v1.Pods[0], IP: v1.PodIP(0)}, Server: Endpoint{NetNS: v2.Pods[0], IP: v2.PodIP(0)}}
	// The underlay between the veth floor's two nodes: the same switch and node configuration
	// as the cross-node "underlay", but no agent and no program on the nodes' NICs. Its "vs
	// underlay" ratio is what edgeplane's NIC programs cost the node's own traffic, paired per
	// round (in the route-mode group: against route-1 and route-2, whose segment is another
	// bridge of the same kind).
	underlayBare := Path{Name: "underlay-bare", Client: Endpoint{NetNS: v1.NetNS}, Server: Endpoint{NetNS: v2.NetNS, IP: v2.NodeIP}}
	cross := []Path{
		{Name: "flannel", Client: flp(f1, 0), Server: flp(f2, 0)},
		{Name: "edgeplane", Client: ep(a1), Server: ep(bp1)},
		{Name: "edgeplane-device", Client: ep(d1), Server: ep(d2)},
		vethFloor,
		{Name: "underlay", Client: Endpoint{NetNS: n1.Netns.Name()}, Server: Endpoint{NetNS: n2.Netns.Name(), IP: n2.IP.String()}},
		underlayBare,
	}
	// Route mode against edgeplane's own VXLAN (the group's first path), Flannel host-gw and the
	// underlay between the two route-mode nodes; then across the gateway, against the underlay
	// between the same two nodes (also through the gateway; the group's baseline).
	r1, r2, r3 := rs.nodes[0], rs.nodes[1], rs.nodes[2]
	route := []Path{
		{Name: "edgeplane", Client: ep(a1), Server: ep(bp1)},
		{Name: "edgeplane-route", Client: ep(rs.pods[0]), Server: ep(rs.pods[1])},
		{Name: "flannel-hostgw", Client: flp(h1, 0), Server: flp(h2, 0)},
		vethFloor,
		{Name: "underlay", Client: Endpoint{NetNS: r1.Netns.Name()}, Server: Endpoint{NetNS: r2.Netns.Name(), IP: r2.IP.String()}},
		underlayBare,
	}
	// BIG TCP (--ipv4-big-tcp) on two more route-mode nodes of the same segment, against the same
	// paths without it: pods and the nodes' own traffic.
	r4, r5 := rs.nodes[3], rs.nodes[4]
	routeBigTCP := []Path{
		{Name: "edgeplane-route", Client: ep(rs.pods[0]), Server: ep(rs.pods[1])},
		{Name: "edgeplane-route-bigtcp", Client: ep(rs.pods[3]), Server: ep(rs.pods[4])},
		{Name: "underlay", Client: Endpoint{NetNS: r1.Netns.Name()}, Server: Endpoint{NetNS: r2.Netns.Name(), IP: r2.IP.String()}},
		{Name: "underlay-bigtcp", Client: Endpoint{NetNS: r4.Netns.Name()}, Server: Endpoint{NetNS: r5.Netns.Name(), IP: r5.IP.String()}},
	}
	routeGateway := []Path{
		{Name: "underlay", Client: Endpoint{NetNS: r1.Netns.Name()}, Server: Endpoint{NetNS: r3.Netns.Name(), IP: r3.IP.String()}},
		{Name: "edgeplane-route", Client: ep(rs.pods[0]), Server: ep(rs.pods[2])},
	}
	same := []Path{
		{Name: "flannel", Client: flp(f1, 0), Server: flp(f1, 1)},
		{Name: "edgeplane", Client: ep(a1), Server: ep(a2)},
	}
	// The ClusterIP variant: a Service whose only endpoint is the remote server pod, reached from
	// the client pod through edgeplane's Services and through kube-proxy's iptables rules on the
	// Flannel node (inserted in the middle of its 1,000 other Services).
	crr := buildCRR(b, l)
	udprate := buildTool(b, l, "udprate")
	const svcPort = 7101
	svc, err := l.CreateService(ctx, "bench-crr", lab.ServiceOptions{Ports: []corev1.ServicePort{
		{Name: "crr", Port: svcPort, TargetPort: intstr.FromInt(svcPort), Protocol: corev1.ProtocolTCP}}})
	if err != nil {
		b.Fatal(err)
	}
	if err := l.SetEndpoints(ctx, svc, bp1); err != nil {
		b.Fatal(err)
	}
	const flannelVIP = "10.96.255.1"
	if err := f1.AddService(flannelVIP, svcPort, f2.PodIP(0), envInt("BENCH_IPTABLES_SERVICES", 1000)/2+1); err != nil {
		b.Fatal(err)
	}
	clusterIP := []Path{
		{Name: "flannel", Client: flp(f1, 0), Server: flp(f2, 0), Dial: flannelVIP},
		{Name: "edgeplane", Client: ep(a1), Server: ep(bp1), Dial: svc.Spec.ClusterIP},
	}

	secs := envInt("BENCH_SECONDS", 4)
	rr := func(tcp bool, clientCPU, serverCPU string) func(Path, int) (Sample, error) {
		return func(p Path, port int) (Sample, error) {
			return RequestResponseCPUs(p, tcp, secs, clientCPU, serverCPU, port)
		}
	}
	tps := func(s Sample) float64 { return s.TPS }
	rrMetrics := []metric{
		{name: "udp_rr", unit: "transactions/s", better: "higher", measure: rr(false, "1", "1"), value: tps},
		{name: "tcp_rr", unit: "transactions/s", better: "higher", measure: rr(true, "1", "1"), value: tps},
	}
	// Client on CPU 0, server on CPU 1: each transaction wakes the other CPU, as between nodes.
	xcpu := []metric{
		{name: "udp_rr_xcpu", unit: "transactions/s", better: "higher", measure: rr(false, "0", "1"), value: tps},
		{name: "tcp_rr_xcpu", unit: "transactions/s", better: "higher", measure: rr(true, "0", "1"), value: tps},
	}
	cpuCost := func(name, unit string, cpus ...int) metric {
		return metric{name: name, unit: unit, better: "lower", value: func(s Sample) float64 { return s.CPUPerGbit(cpus...) }}
	}
	mbps := func(s Sample) float64 { return s.Mbps }
	// The senders' congestion control is the benchmark's, not the machine's: with a pacing one
	// (BBR, some distributions' default) a stream's rate follows its bandwidth estimate and the
	// CPUs idle, so the figure says little about the datapath's cost (docs/benchmarks.md).
	cc := os.Getenv("BENCH_TCP_CC")
	if cc == "" {
		cc = "cubic"
	}
	bulk := []metric{
		{name: "udp_64b_pps", unit: "packets/s", better: "higher",
			measure: func(p Path, port int) (Sample, error) { return SmallUDP(p, secs, "0", "1", port) },
			value:   func(s Sample) float64 { return s.PPS }},
		// One stream, sender on CPU 0 and receiver on CPU 1: the CPU cost in total and per CPU
		// (softirq work runs on the CPU that raised it, so each CPU's share is "the CPU of the
		// sending process" and "of the receiving process", not one node's).
		{name: "tcp_stream", unit: "Mbit/s", better: "higher", tcpStream: true,
			measure: func(p Path, port int) (Sample, error) { return TCPStream(p, secs, cc, "0", "1", port) },
			value:   mbps,
			also: []metric{
				cpuCost("tcp_stream_cpu", "busy CPU-s per Gbit (whole machine)"),
				cpuCost("tcp_stream_cpu_sender", "busy CPU-s per Gbit (the sender's CPU 0)", 0),
				cpuCost("tcp_stream_cpu_receiver", "busy CPU-s per Gbit (the receiver's CPU 1)", 1),
			}},
		// 8 streams, not pinned: the scheduler spreads them over the CPUs.
		{name: "tcp_stream_8", unit: "Mbit/s", better: "higher", tcpStream: true,
			measure: func(p Path, port int) (Sample, error) { return TCPStreams(p, 8, secs, cc, "", "", port) },
			value:   mbps,
			also:    []metric{cpuCost("tcp_stream_8_cpu", "busy CPU-s per Gbit (whole machine)")}},
	}
	// 64-byte UDP at a fixed rate every path sustains (BENCH_UDP_RATE), from a sender that sleeps
	// between its 1 ms ticks on CPU 0 to a receiver on CPU 1: the CPU the machine spends per
	// datagram received, in total and on each CPU. Unlike the flood (udp_64b_pps), every path's
	// receiver is woken alike, so the difference is the datapath's cost.
	// 30,000: about half the slowest path's flood (Flannel's VXLAN, ~60,000 on a 2-vCPU VM), so
	// that its sending CPU keeps headroom for the machine's hiccups (docs/benchmarks.md).
	// BENCH_UDP_SECONDS (default 8) is the sample's length, and as long again is spent around it
	// without traffic (half before, half after) to measure the machine's floor, subtracted from
	// the sample (Sample.CPUPerPacket).
	udpRate := envInt("BENCH_UDP_RATE", 30000)
	udpSecs := envInt("BENCH_UDP_SECONDS", 8)
	perPacket := func(name, unit string, cpus ...int) metric {
		return metric{name: name, unit: fmt.Sprintf("busy CPU-us per packet at %d pkt/s (%s)", udpRate, unit), better: "lower",
			value: func(s Sample) float64 { return s.CPUPerPacket(cpus...) }}
	}
	fixedRate := perPacket("udp_64b_cpu_fixed", "whole machine, less the floor")
	fixedRate.measure = func(p Path, port int) (Sample, error) {
		return FixedRateUDP(udprate, p, udpSecs, udpSecs, udpRate, "0", "1", port)
	}
	fixedRate.also = []metric{
		perPacket("udp_64b_cpu_fixed_sender", "the sender's CPU 0, less its floor", 0),
		perPacket("udp_64b_cpu_fixed_receiver", "the receiver's CPU 1, less its floor", 1),
		{name: "udp_64b_cpu_fixed_sender_thread", unit: fmt.Sprintf("CPU-us per packet at %d pkt/s (the sending thread's own, getrusage)", udpRate),
			better: "lower", value: func(s Sample) float64 { return s.SenderThreadPerPacket() }},
		{name: "udp_64b_cpu_fixed_floor", unit: "busy CPUs without traffic around the sample (whole machine)", better: "lower",
			value: func(s Sample) float64 { return s.FloorCPUs() }, noRatios: true},
	}
	// Connect, 1 byte each way, close, sequentially, client and server on one CPU (as RR).
	connect := func(fixedPort int) metric {
		return metric{name: "tcp_crr", unit: "connections/s", better: "higher", value: tps,
			measure: func(p Path, port int) (Sample, error) {
				if fixedPort != 0 {
					port = fixedPort
				}
				return ConnectRate(crr, p, secs, "1", port)
			}}
	}
	crossMetrics := append(append(append(append([]metric{}, rrMetrics...), xcpu...), bulk...), connect(0), fixedRate)
	// Issue 16's metrics: request/response, 64-byte UDP (flood and fixed rate) and one TCP stream
	// (with its CPU cost).
	routeMetrics := append(append([]metric{}, rrMetrics...), bulk[0], fixedRate, bulk[1])
	groups := []group{
		{name: "cross-node", paths: cross, metrics: crossMetrics},
		{name: "cross-node-clusterip", paths: clusterIP, metrics: []metric{connect(svcPort)}},
		{name: "same-node", paths: same, metrics: rrMetrics},
		{name: "route-mode", paths: route, metrics: routeMetrics},
		{name: "route-mode-gateway", paths: routeGateway, metrics: routeMetrics},
		{name: "route-mode-bigtcp", paths: routeBigTCP, metrics: []metric{bulk[1], bulk[2]}},
	}
	if only := os.Getenv("BENCH_GROUPS"); only != "" {
		groups = onlyGroups(groups, strings.Split(only, ","))
	}
	if only := os.Getenv("BENCH_METRICS"); only != "" {
		groups = onlyMetrics(groups, strings.Split(only, ","))
	}
	if len(groups) == 0 {
		b.Fatal("BENCH_GROUPS and BENCH_METRICS leave nothing to measure")
	}

	// A route-mode path must be what it says: pods' packets on the wire unencapsulated, where the
	// VXLAN path's are encapsulated.
	for _, w := range []struct {
		from, to *lab.Pod
		toNode   *lab.Node
		vxlan    bool
	}{{rs.pods[0], rs.pods[1], r2, false}, {rs.pods[0], rs.pods[2], r3, false}, {rs.pods[3], rs.pods[4], r5, false}, {a1, bp1, n2, true}} {
		// The peers switch to direct routes once they see the announcement setupRouteSite waited
		// for: a moment later, so a few tries.
		var err error
		for try := 0; try < 5; try++ {
			if err = checkWire(w.from, w.to, w.toNode, w.vxlan); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil {
			b.Fatalf("route-mode groups: %v", err)
		}
	}

	// The veth floor must be the path it claims (links, no BPF, no netfilter, counters on the way).
	if err := vf.CheckPath(v1, v2); err != nil {
		b.Fatal(err)
	}

	// Every path must work before it is measured (the Services once both proxies programmed them).
	for _, g := range groups {
		for _, p := range g.paths {
			if p.Dial != "" {
				deadline := time.Now().Add(30 * time.Second)
				for {
					_, err := ConnectRate(crr, p, 1, "", svcPort)
					if err == nil {
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("%s/%s does not carry connections: %v", g.name, p.Name, err)
					}
					time.Sleep(500 * time.Millisecond)
				}
				continue
			}
			if _, err := RequestResponse(p, false, 1, "1", 14000); err != nil {
				b.Fatalf("%s/%s does not carry traffic: %v", g.name, p.Name, err)
			}
		}
	}

	rounds := envInt("BENCH_ROUNDS", 5)
	b.Logf("lab built and paths checked in %v", time.Since(built).Round(time.Second))
	var results []Result
	var idle []float64
	idle = append(idle, background(b))
	port := 15000
	for _, g := range groups {
		started := time.Now()
		for _, m := range g.metrics {
			samples := make([][]Sample, len(g.paths))
			for r := 0; r < rounds; r++ {
				for _, i := range ABBAOrder(len(g.paths), r) {
					port++
					s, err := m.measure(g.paths[i], port)
					if err != nil {
						b.Fatalf("%s %s %s round %d: %v", g.name, m.name, g.paths[i].Name, r, err)
					}
					samples[i] = append(samples[i], s)
				}
			}
			fresh := summarize(g, m, samples)
			for _, d := range m.also {
				fresh = append(fresh, summarize(g, d, samples)...)
			}
			if m.tcpStream {
				for i := range fresh {
					fresh[i].TCPCongestion = cc
				}
			}
			results = append(results, fresh...)
		}
		b.Logf("group %s: %d metrics x %d paths x %d rounds took %v", g.name, len(g.metrics), len(g.paths), rounds,
			time.Since(started).Round(time.Second))
		if g.name == "cross-node" {
			idle = append(idle, background(b))
		}
	}
	b.StopTimer()
	if busy := Median(idle); busy > 0.2*float64(runtime.NumCPU()) {
		b.Logf("WARNING: the machine was %.2f CPUs busy without benchmark traffic: the CPU-cost figures "+
			"(busy CPU-s per Gbit) include that other work; measure on a quiet machine", busy)
	}
	// The machine's floor is recorded with the cross-node rounds (one sample before, one after): a
	// run without them (BENCH_GROUPS) keeps the last one's.
	if len(idle) > 1 {
		results = append(results, Result{Group: "cross-node-background", Metric: "busy_cpus",
			Unit:   "busy CPUs, whole machine, no benchmark traffic (before and after the cross-node rounds)",
			Better: "lower", Path: "idle", Samples: idle, Median: Median(idle)})
	}
	report(b, results, time.Now())
	hold(b, groups)
}

// hold keeps the lab up after the rounds when BENCH_HOLD names a file, for profiling by hand: it
// writes the paths (namespaces and addresses) there as JSON and waits until the file is removed.
func hold(b *testing.B, groups []group) {
	file := os.Getenv("BENCH_HOLD")
	if file == "" {
		return
	}
	type heldPath struct {
		Group string
		Path
	}
	var held []heldPath
	for _, g := range groups {
		for _, p := range g.paths {
			held = append(held, heldPath{Group: g.name, Path: p})
		}
	}
	data, err := json.MarshalIndent(held, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("BENCH_HOLD: the lab stays up until %s is removed", file)
	for {
		if _, err := os.Stat(file); os.IsNotExist(err) {
			return
		}
		time.Sleep(time.Second)
	}
}

// background measures the machine idle for 2 s: the CPU floor under the CPU-cost figures.
func background(b *testing.B) float64 {
	s, err := idleCPU(2)
	if err != nil {
		b.Fatal(err)
	}
	return s.CPU.Busy / s.CPU.WindowS
}

// onlyGroups keeps the groups named (BENCH_GROUPS, a comma list), in the benchmark's order.
func onlyGroups(groups []group, names []string) []group {
	keep := map[string]bool{}
	for _, n := range names {
		keep[strings.TrimSpace(n)] = true
	}
	var out []group
	for _, g := range groups {
		if keep[g.name] {
			out = append(out, g)
		}
	}
	return out
}

// onlyMetrics keeps the metrics named (BENCH_METRICS, a comma list; "tcp_crr" keeps it in every
// group) and the groups that still have one.
func onlyMetrics(groups []group, names []string) []group {
	keep := map[string]bool{}
	for _, n := range names {
		keep[strings.TrimSpace(n)] = true
	}
	var out []group
	for _, g := range groups {
		var ms []metric
		for _, m := range g.metrics {
			if keep[m.name] {
				ms = append(ms, m)
			}
		}
		if len(ms) > 0 {
			g.metrics = ms
			out = append(out, g)
		}
	}
	return out
}

// buildCRR builds the connect-rate tool (tests/bench/crr) into the lab's directory.
func buildCRR(b *testing.B, l *lab.Lab) string { return buildTool(b, l, "crr") }

// buildTool builds the command in tests/bench/<name> into the lab's directory.
func buildTool(b *testing.B, l *lab.Lab, name string) string {
	bin := filepath.Join(l.Dir, name)
	if out, err := exec.Command("go", "build", "-o", bin, "./"+name).CombinedOutput(); err != nil {
		b.Fatalf("building %s: %v: %s", name, err, out)
	}
	return bin
}

// pairedRatios divides round k of a by round k of b: both were measured back to back, so drift
// of the shared VM cancels out. A round where either value is negative (a figure less its floor,
// on a machine with no idle CPU to measure) or the baseline's is zero has no ratio.
func pairedRatios(m metric, a, b []Sample) (median, lo, hi float64) {
	var ratios []float64
	for k := range a {
		if k < len(b) && m.value(b[k]) > 0 && m.value(a[k]) >= 0 {
			ratios = append(ratios, m.value(a[k])/m.value(b[k]))
		}
	}
	if len(ratios) == 0 {
		return 0, 0, 0
	}
	sort.Float64s(ratios)
	return Median(ratios), ratios[0], ratios[len(ratios)-1]
}

func summarize(g group, m metric, samples [][]Sample) []Result {
	underlay, floor := -1, -1
	for i, p := range g.paths {
		switch p.Name {
		case "underlay":
			underlay = i
		case "veth-floor":
			floor = i
		}
	}
	var out []Result
	for i, p := range g.paths {
		r := Result{Group: g.name, Metric: m.name, Unit: m.unit, Better: m.better, Path: p.Name, Baseline: g.paths[0].Name}
		for _, s := range samples[i] {
			r.Samples = append(r.Samples, m.value(s))
			if s.P50us > 0 {
				r.P50us = append(r.P50us, s.P50us)
				r.P99us = append(r.P99us, s.P99us)
			}
		}
		r.Median = Median(r.Samples)
		if m.noRatios {
			out = append(out, r)
			continue
		}
		r.Ratio, r.RatioMin, r.RatioMax = pairedRatios(m, samples[i], samples[0])
		if underlay >= 0 {
			r.UnderlayRatio, r.UnderlayRatioMin, r.UnderlayRatioMax = pairedRatios(m, samples[i], samples[underlay])
		}
		if floor >= 0 && i != floor && i != underlay {
			r.VethFloorRatio, r.VethFloorRatioMin, r.VethFloorRatioMax = pairedRatios(m, samples[i], samples[floor])
		}
		out = append(out, r)
	}
	return out
}

func report(b *testing.B, results []Result, when time.Time) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-12s %-12s %-17s %14s %8s %15s %10s %15s %10s %15s %9s %9s\n", "group", "metric", "path", "median",
		"vs base", "min-max", "vs underlay", "min-max", "vs floor", "min-max", "p50 us", "p99 us")
	for _, r := range results {
		p50, p99 := "", ""
		if len(r.P50us) > 0 {
			p50, p99 = fmt.Sprintf("%.1f", Median(r.P50us)), fmt.Sprintf("%.1f", Median(r.P99us))
		}
		vsU, vsURange := "", ""
		if r.UnderlayRatio > 0 {
			vsU, vsURange = fmt.Sprintf("%.2fx", r.UnderlayRatio), fmt.Sprintf("%.2f-%.2f", r.UnderlayRatioMin, r.UnderlayRatioMax)
		}
		vsF, vsFRange := "", ""
		if r.VethFloorRatio > 0 {
			vsF, vsFRange = fmt.Sprintf("%.2fx", r.VethFloorRatio), fmt.Sprintf("%.2f-%.2f", r.VethFloorRatioMin, r.VethFloorRatioMax)
		}
		median := fmt.Sprintf("%.0f", r.Median)
		if r.Median < 100 {
			median = fmt.Sprintf("%.3g", r.Median)
		}
		fmt.Fprintf(&sb, "%-12s %-12s %-17s %14s %7.2fx %7.2f-%-7.2f %10s %15s %10s %15s %9s %9s\n", r.Group, r.Metric, r.Path, median,
			r.Ratio, r.RatioMin, r.RatioMax, vsU, vsURange, vsF, vsFRange, p50, p99)
		b.ReportMetric(round3(r.Ratio), fmt.Sprintf("%s/%s/%s-ratio", r.Group, r.Metric, r.Path))
	}
	fmt.Print(sb.String())
	saveResults(b, results, when)
}

// saveResults merges results into bench/results.json (BENCH_RESULTS), stamped with the run: its
// date, this machine (BENCH_MACHINE names it, see results.ThisMachine) and the git revision.
func saveResults(b *testing.B, fresh []Result, when time.Time) {
	out := os.Getenv("BENCH_RESULTS")
	if out == "" {
		out = filepath.Join("..", "..", "bench", "results.json")
	}
	m := results.ThisMachine(os.Getenv("BENCH_MACHINE"))
	date := when.UTC().Format(time.RFC3339)
	rev := results.GitRevision(".")
	for i := range fresh {
		fresh[i].Date, fresh[i].Machine, fresh[i].GitRevision = date, m.ID, rev
	}
	f := results.Read(out)
	f.Merge(m, fresh)
	f.Date = date
	if err := results.Write(out, f); err != nil {
		b.Logf("%s: %v", out, err)
	}
	b.Logf("results of machine %s (%s, %d CPUs, kernel %s) at %s written to %s", m.ID, m.CPU, m.Cores, m.Kernel, rev, out)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
