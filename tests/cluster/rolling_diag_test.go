package cluster

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// envRollingDiag set to "always" makes TestRollingUpdate report its diagnostics as if every
// stream had been lost, to check them.
const envRollingDiag = "EDGEPLANE_ROLLING_DIAG"

// rollingDiag records, around TestRollingUpdate's rollout, what tells a lost stream's cause after
// the lab is gone (a CI run under load once lost one for 2 s, and the maps were gone when it was
// looked at):
//   - packet captures (tcpdump, headers only) of the Service's traffic, VXLAN and ICMP on every
//     echo pod's eth0 and every node's underlay: on failure, the lost flow's packets around the
//     failure at each hop (client pod, client node, backend node, backend pod, and back);
//   - `edgeplanectl monitor --type drop` on every node (the datapath's drop events);
//   - a timeline of the API objects the agents react to: each Node update that changes what a
//     reconciler reads (labels, annotations, pod CIDRs, taints, addresses), the echo Service's
//     EndpointSlices, and the agent pods' lifecycle (the rollout's order);
//   - on the first failure, at once, and again at the end: on every node `edgeplanectl stats
//     --drops-only`, the Service's frontend and backends, the lost flow's conntrack entries,
//     routes, nodes and domains; the kernel's TCP counters in the client and backend pods;
//   - the agents' logs, the replaced ones' too (their files are held open before the rollout:
//     kubelet deletes a deleted pod's log directory).
//
// Everything goes under <lab dir>/rolling-diag (kept when the test fails) and, what matters for
// the cause, into the test log.
type rollingDiag struct {
	t    *testing.T
	c    *lab.Cluster
	dir  string
	vip  string
	pods []echoPod

	stop    context.CancelFunc
	watches sync.WaitGroup
	procs   []*exec.Cmd
	pcaps   []string // capture files, in capture point order
	logs    []heldLog

	mu       sync.Mutex
	timeline []string
	failOnce sync.Once
	failDone chan struct{}
}

// heldLog is an agent container's log file, open since before the rollout.
type heldLog struct {
	name string
	f    *os.File
}

// lostFlow is a stream that failed: its client's address and port toward the Service.
type lostFlow struct {
	name       string
	clientIP   string
	clientPort int
	at         time.Time
}

// startRollingDiag starts the captures, the monitors, the watches and holds the agents' logs.
// Failing to start one of them is logged, not fatal: the test is about the rollout.
func startRollingDiag(t *testing.T, c *lab.Cluster, vip string, pods []echoPod, agents map[string]corev1.Pod) *rollingDiag {
	ctx, cancel := context.WithCancel(context.Background())
	d := &rollingDiag{t: t, c: c, dir: filepath.Join(c.Lab.Dir, "rolling-diag"), vip: vip, pods: pods,
		stop: cancel, failDone: make(chan struct{})}
	t.Cleanup(d.close)
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		t.Logf("diagnostics: %v", err)
		return d
	}
	filter := fmt.Sprintf("tcp port %d or udp port 8472 or icmp", echoPort)
	for _, p := range pods {
		d.capture(p.Netns, "pod-"+p.Node.Name+"-"+p.Name, filter)
	}
	for _, k := range c.Nodes {
		d.capture(k.Netns, "node-"+k.Name, filter)
		out, err := os.Create(filepath.Join(d.dir, "monitor-"+k.Name+".txt"))
		if err != nil {
			t.Logf("diagnostics: %v", err)
			continue
		}
		d.start(k.CtlCommand("monitor", "--type", "drop"), out)
	}
	for node, p := range agents {
		files, _ := filepath.Glob(filepath.Join(c.Node(node).NodeRoot("/var/log/pods"),
			fmt.Sprintf("edgeplane-system_%s_%s", p.Name, p.UID), "*", "*.log"))
		for _, f := range files {
			if h, err := os.Open(f); err == nil {
				d.logs = append(d.logs, heldLog{name: node + "-old-" + filepath.Base(filepath.Dir(f)) + ".log", f: h})
			}
		}
	}
	d.snapshot("before")
	d.watches.Go(func() { d.sampleStalls(ctx) })
	opts := func(rv string) metav1.ListOptions {
		return metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}
	}
	d.watch(ctx, "node", func(ctx context.Context, rv string) (watch.Interface, error) {
		return c.Lab.Client.CoreV1().Nodes().Watch(ctx, opts(rv))
	}, nodeChange())
	d.watch(ctx, "slice", func(ctx context.Context, rv string) (watch.Interface, error) {
		return c.Lab.Client.DiscoveryV1().EndpointSlices(echoNamespace).Watch(ctx, opts(rv))
	}, sliceChange)
	d.watch(ctx, "agent", func(ctx context.Context, rv string) (watch.Interface, error) {
		return c.Lab.Client.CoreV1().Pods("edgeplane-system").Watch(ctx, opts(rv))
	}, podChange)
	return d
}

// capture starts tcpdump on eth0 of ns, writing name.pcap.
func (d *rollingDiag) capture(ns lab.Netns, name, filter string) {
	file := filepath.Join(d.dir, name+".pcap")
	out, err := os.Create(filepath.Join(d.dir, name+".tcpdump.txt"))
	if err != nil {
		d.t.Logf("diagnostics: %v", err)
		return
	}
	// -U: each packet written at once, so that what a stopped capture holds is whole.
	if d.start([]string{"nsenter", "--net=" + ns.Path(), "tcpdump", "-Z", "root", "-i", "eth0", "-nn", "-U", "-s", "160", "-w", file, filter}, out) {
		d.pcaps = append(d.pcaps, file)
	}
}

// start runs argv in the background with its output to out, until close.
func (d *rollingDiag) start(argv []string, out *os.File) bool {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Start()
	out.Close() // the child holds its own copy
	if err != nil {
		d.t.Logf("diagnostics: starting %s: %v", strings.Join(argv, " "), err)
		return false
	}
	d.procs = append(d.procs, cmd)
	return true
}

// event adds a line to the timeline.
func (d *rollingDiag) event(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timeline = append(d.timeline, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

// failed is called by a stream that lost its echo, late by one whose echo missed its deadline
// before it waits longer for it (the end may still fail it, from what its connection resent): the
// first call of either takes a snapshot of every node's maps at once, while the state is there.
func (d *rollingDiag) failed(f lostFlow) { d.mark("FAILED", f) }

func (d *rollingDiag) late(f lostFlow) { d.mark("LATE", f) }

func (d *rollingDiag) mark(what string, f lostFlow) {
	d.event("%s %s (client %s:%d)", what, f.name, f.clientIP, f.clientPort)
	d.failOnce.Do(func() {
		go func() {
			defer close(d.failDone)
			d.snapshot("at-failure", f)
		}()
	})
}

// snapshot writes every node's view (and the lost flows' conntrack entries) to snapshot-<label>.txt.
func (d *rollingDiag) snapshot(label string, flows ...lostFlow) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "== %s %s\n", label, time.Now().Format("15:04:05.000"))
	for _, k := range d.c.Nodes {
		views := [][]string{{"stats", "--drops-only"}, {"services", "--ip", d.vip}, {"routes"}, {"nodes"}, {"domains"}, {"endpoints"}}
		for _, f := range flows {
			views = append(views, []string{"conntrack", "--ip", f.clientIP, "--port", strconv.Itoa(f.clientPort)})
		}
		for _, v := range views {
			out, err := k.Ctl(ctx, v...)
			if err != nil {
				out += "\n" + err.Error()
			}
			fmt.Fprintf(&b, "--- %s: edgeplanectl %s\n%s\n", k.Name, strings.Join(v, " "), strings.TrimSpace(out))
		}
	}
	// Kernel drops on the way: each node's, the router's and the switch's interfaces (a veth
	// whose peer runs XDP counts what its full ring refused as its own tx drops; ethtool -S has
	// the XDP side), and the per-CPU backlogs (softnet_stat's second column).
	hops := map[string]lab.Netns{"router": d.c.Lab.Router(), "switch": d.c.Lab.Switch}
	for _, k := range d.c.Nodes {
		hops[k.Name] = k.Netns
	}
	for _, name := range slices.Sorted(maps.Keys(hops)) {
		for _, argv := range [][]string{{"ip", "-s", "-s", "link"}, {"ethtool", "-S", "eth0"}, {"nstat", "-asz"}} {
			if (name == "router" || name == "switch") && argv[0] != "ip" {
				continue
			}
			out, err := hops[name].Exec(ctx, argv[0], argv[1:]...)
			if argv[0] == "nstat" {
				out = nonZero(out)
			}
			if err != nil {
				out += "\n" + err.Error()
			}
			fmt.Fprintf(&b, "--- %s: %s\n%s\n", name, strings.Join(argv, " "), strings.TrimSpace(out))
		}
	}
	if softnet, err := os.ReadFile("/proc/net/softnet_stat"); err == nil {
		fmt.Fprintf(&b, "--- softnet_stat\n%s\n", strings.TrimSpace(string(softnet)))
	}
	for _, p := range d.pods {
		out, err := p.Netns.Exec(ctx, "nstat", "-asz", "Tcp*", "TcpExt*")
		out = nonZero(out)
		if err != nil {
			out += "\n" + err.Error()
		}
		fmt.Fprintf(&b, "--- pod %s on %s: nstat\n%s\n", p.Name, p.Node.Name, strings.TrimSpace(out))
	}
	if err := os.WriteFile(filepath.Join(d.dir, "snapshot-"+label+".txt"), []byte(b.String()), 0o644); err != nil {
		d.t.Logf("diagnostics: %v", err)
	}
	return b.String()
}

// nonZero keeps the counters of nstat's output that are not zero (nstat -as without -z printed
// none in a pod's namespace).
func nonZero(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "0" {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// report, after the traffic stopped, logs what explains the lost flows (none: nothing).
func (d *rollingDiag) report(lost []lostFlow) {
	d.stopRecording()
	t := d.t
	d.mu.Lock()
	// Always (it is short): a passing run's stalls say how close it came.
	t.Logf("diagnostics in %s; timeline (Node changes an agent reads, echo EndpointSlices, agent pods, test process stalls):\n%s",
		d.dir, strings.Join(d.timeline, "\n"))
	d.mu.Unlock()
	if len(lost) == 0 {
		return
	}
	select {
	case <-d.failDone:
	case <-time.After(30 * time.Second):
		t.Logf("diagnostics: the snapshot at the failure did not finish in 30 s")
	}
	end := d.snapshot("end", lost...)
	if at, err := os.ReadFile(filepath.Join(d.dir, "snapshot-at-failure.txt")); err == nil {
		t.Logf("at the failure:\n%s", interesting(string(at)))
	}
	t.Logf("at the end:\n%s", interesting(end))
	for _, k := range d.c.Nodes {
		if b, err := os.ReadFile(filepath.Join(d.dir, "monitor-"+k.Name+".txt")); err == nil {
			t.Logf("%s: edgeplanectl monitor --type drop during the test:\n%s", k.Name, lastLinesOf(string(b), 40))
		}
	}
	for _, f := range lost {
		for _, pcap := range d.pcaps {
			t.Logf("%s at %s (flow %s:%d, failure at %s):\n%s", f.name, strings.TrimSuffix(filepath.Base(pcap), ".pcap"),
				f.clientIP, f.clientPort, f.at.Format("15:04:05.000"), flowPackets(pcap, f))
		}
	}
	d.saveLogs()
	for _, l := range d.logs {
		l.f.Close()
	}
	d.logs = nil
}

// interesting keeps of a snapshot the drop counters and conntrack sections, whole, and the
// frontend; routes, nodes and endpoints stay in the file.
func interesting(s string) string {
	var b strings.Builder
	keep := false
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "== ") {
			keep = strings.Contains(line, "stats") || strings.Contains(line, "conntrack") || strings.Contains(line, "services") ||
				strings.Contains(line, "softnet") || strings.HasPrefix(line, "== ") ||
				(strings.Contains(line, "nstat") && strings.HasPrefix(line, "--- pod"))
		}
		if keep {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("(%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// flowPackets is the lost flow's packets in a capture, 5 s before its failure to 3 s after,
// decoded by tcpdump (VXLAN's inner packet on the same line).
func flowPackets(pcap string, f lostFlow) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "tcpdump", "-r", pcap, "-nn", "-tt", "-T", "vxlan").Output()
	if err != nil && len(out) == 0 {
		return "reading " + pcap + ": " + err.Error()
	}
	lines := flowLines(string(out), f.clientPort, f.at.Add(-5*time.Second), f.at.Add(3*time.Second))
	if len(lines) == 0 {
		return "(no packet of the flow in the window)"
	}
	return lastLinesOf(strings.Join(lines, "\n"), 150)
}

// flowLines picks from `tcpdump -nn -tt` output the packets with port as a source or destination
// port (outer or inner) stamped within [from, to], with a continuation line (VXLAN's inner packet)
// joined to its packet's, and the stamp as wall-clock time.
func flowLines(dump string, port int, from, to time.Time) []string {
	suffix := "." + strconv.Itoa(port)
	var lines []string
	var cur string
	flush := func() {
		if cur == "" || !(strings.Contains(cur, suffix+" ") || strings.Contains(cur, suffix+":")) {
			return
		}
		sec, rest, _ := strings.Cut(cur, " ")
		ts, err := strconv.ParseFloat(sec, 64)
		if err != nil {
			return
		}
		at := time.Unix(0, int64(ts*1e9))
		if at.Before(from) || at.After(to) {
			return
		}
		lines = append(lines, at.Format("15:04:05.000000 ")+rest)
	}
	for _, line := range strings.Split(dump, "\n") {
		switch {
		case line == "":
		case line[0] >= '0' && line[0] <= '9':
			flush()
			cur = line
		default:
			cur += " | " + strings.TrimSpace(line)
		}
	}
	flush()
	return lines
}

// saveLogs copies the agents' logs, the replaced ones' from their held files and the current
// ones', into the diagnostics directory.
func (d *rollingDiag) saveLogs() {
	for _, l := range d.logs {
		if _, err := l.f.Seek(0, io.SeekStart); err == nil {
			if b, err := io.ReadAll(l.f); err == nil {
				_ = os.WriteFile(filepath.Join(d.dir, "agent-"+l.name), b, 0o644)
			}
		}
	}
	for _, k := range d.c.Nodes {
		files, _ := filepath.Glob(filepath.Join(k.NodeRoot("/var/log/pods"), "edgeplane-system_*", "*", "*.log"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				pod := filepath.Base(filepath.Dir(filepath.Dir(f)))
				_ = os.WriteFile(filepath.Join(d.dir, "agent-"+k.Name+"-now-"+pod+"-"+filepath.Base(filepath.Dir(f))+".log"), b, 0o644)
			}
		}
	}
}

// stopRecording stops the captures, the monitors and the watches; it may be called more than once.
func (d *rollingDiag) stopRecording() {
	d.stop()
	d.watches.Wait()
	for _, cmd := range d.procs {
		// SIGINT: tcpdump flushes its file, monitor turns event emission off.
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	d.procs = nil
}

// close stops the recording and releases the held logs, saving them first when the test failed.
func (d *rollingDiag) close() {
	d.stopRecording()
	if d.t.Failed() && d.logs != nil {
		d.saveLogs()
	}
	for _, l := range d.logs {
		l.f.Close()
	}
	d.logs = nil
}
