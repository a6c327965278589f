package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/nameindex"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// ctl runs the real edgeplanectl binary on one lab node: in its network namespace (nsenter
// --net, which unlike `ip netns exec` leaves /sys and the lab's per-node bpffs mounts alone),
// against its --bpffs-root and --run-dir.
type ctl struct {
	bin  string
	node *lab.Node
}

func newCtl(t *testing.T, l *lab.Lab, node *lab.Node) *ctl {
	t.Helper()
	bin := filepath.Join(l.Config().EdgeplaneBin, "edgeplanectl")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("edgeplanectl not built (make build): %v", err)
	}
	return &ctl{bin: bin, node: node}
}

func (c *ctl) command(args ...string) *exec.Cmd {
	args = append([]string{"--net=" + c.node.Netns.Path(), "--", c.bin,
		"--bpffs-root", c.node.BPFFS, "--run-dir", c.node.RunDir}, args...)
	cmd := exec.Command("nsenter", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs a verb to completion and fails the test unless it exits 0 with nothing on stderr (a
// name index warning included).
func (c *ctl) run(t *testing.T, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := c.command(args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("edgeplanectl %s on %s: %v, stderr %q", strings.Join(args, " "), c.node.Name, err, stderr.String())
	}
	if took := time.Since(start); took > time.Second {
		t.Logf("edgeplanectl %s took %v", strings.Join(args, " "), took.Round(time.Millisecond))
	}
	return stdout.Bytes()
}

// json runs a verb with -o json and decodes its output into out.
func (c *ctl) json(t *testing.T, out any, args ...string) []byte {
	t.Helper()
	b := c.run(t, append(args, "-o", "json")...)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("edgeplanectl %s -o json: %v:\n%s", strings.Join(args, " "), err, b)
	}
	return b
}

// The fields of docs/cli.md's JSON this suite reads.
type (
	ctlEndpoint struct {
		IP, Interface, PodNamespace, PodName, ContainerID, PodInterface string
	}
	ctlRoute struct {
		Prefix, NodeIP, NodeName, Pool, DomainName string
		ThisNode                                   bool
	}
	ctlNode struct {
		IP, NodeName, Pool, DomainName string
	}
	ctlStat struct {
		Direction, Reason string
		Packets           uint64
	}
	ctlRouteGet struct {
		Verdict, DropReason string
		Endpoint            *ctlEndpoint
		Route               *ctlRoute
		Node                *ctlNode
	}
)

// ctlView is what the dump verbs show on a node, raw and decoded.
type ctlView struct {
	endpointsJSON, routesJSON, nodesJSON []byte
	endpoints                            []ctlEndpoint
	routes                               []ctlRoute
	nodes                                []ctlNode
}

func (c *ctl) view(t *testing.T) ctlView {
	t.Helper()
	var v ctlView
	v.endpointsJSON = c.json(t, &v.endpoints, "endpoints")
	v.routesJSON = c.json(t, &v.routes, "routes")
	v.nodesJSON = c.json(t, &v.nodes, "nodes")
	return v
}

// checkNames: the node's endpoints are its lab pods, each named as the pod the CNI plugin wired
// (namespace, name, container, interfaces); every route and tunnel endpoint is named after its
// node, the shared ones included, and the local route after this node.
func checkNames(t *testing.T, l *lab.Lab, node *lab.Node, v ctlView) {
	t.Helper()
	pods := l.Pods()
	var mine []*lab.Pod
	for _, p := range pods {
		if p.Node == node {
			mine = append(mine, p)
		}
	}
	if len(v.endpoints) != len(mine) {
		t.Errorf("endpoints on %s: %d, want its %d pods:\n%s", node.Name, len(v.endpoints), len(mine), v.endpointsJSON)
	}
	for _, ep := range v.endpoints {
		p := pods[ep.PodName]
		if p == nil || p.Node != node || p.IP.String() != ep.IP {
			t.Errorf("endpoint %s is named %q, which is no lab pod of %s with that address", ep.IP, ep.PodName, node.Name)
			continue
		}
		want := ctlEndpoint{IP: p.IP.String(), Interface: p.HostVeth(), PodNamespace: lab.PodNamespace, PodName: p.Name,
			ContainerID: p.ContainerID, PodInterface: "eth0"}
		if ep != want {
			t.Errorf("endpoint %+v, want %+v", ep, want)
		}
	}

	byPrefix := map[string]ctlRoute{}
	for _, r := range v.routes {
		byPrefix[r.Prefix] = r
		if r.NodeName == "" {
			t.Errorf("route %s -> %s has no node name", r.Prefix, r.NodeIP)
		}
	}
	byIP := map[string]ctlNode{}
	for _, n := range v.nodes {
		byIP[n.IP] = n
	}
	for _, n := range shared.nodes {
		r, ok := byPrefix[n.PodCIDR.String()]
		if !ok {
			t.Errorf("no route for %s's pod CIDR %s", n.Name, n.PodCIDR)
			continue
		}
		// Shared nodes are in no pool: the default domain.
		if r.NodeName != n.Name || r.Pool != "" || r.DomainName != "default" || r.ThisNode != (n == node) {
			t.Errorf("route %+v, want node %s, no pool, domain default, thisNode %v", r, n.Name, n == node)
		}
		if n == node {
			continue
		}
		if tn, ok := byIP[r.NodeIP]; !ok || tn.NodeName != n.Name || tn.Pool != "" {
			t.Errorf("nodes entry of %s's tunnel endpoint %s: %+v (present %v), want it named %s", n.Name, r.NodeIP, tn, ok, n.Name)
		}
	}
}

// noRouteDrops reads the node's pod-egress NO_ROUTE counter through the CLI.
func (c *ctl) noRouteDrops(t *testing.T) uint64 {
	t.Helper()
	var stats []ctlStat
	c.json(t, &stats, "stats", "--drops-only")
	for _, s := range stats {
		if s.Direction == "pod-egress" && s.Reason == "NO_ROUTE" {
			return s.Packets
		}
	}
	return 0
}

// sendNoRoute makes pod send n datagrams to dst, an address of the cluster CIDR no node owns:
// pod_egress drops each as NO_ROUTE.
func sendNoRoute(t *testing.T, pod *lab.Pod, dst netip.AddrPort, n int) time.Time {
	t.Helper()
	conn, err := lab.DialUDP(pod.Netns, dst, false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sent := time.Now()
	for i := range n {
		if _, err := fmt.Fprintf(conn, "nobody owns this address %d", i); err != nil {
			t.Fatal(err)
		}
	}
	return sent
}

// checkStatsCountDrop provokes n NO_ROUTE drops and expects stats to count exactly them.
func (c *ctl) checkStatsCountDrop(t *testing.T, pod *lab.Pod, dst netip.AddrPort) {
	t.Helper()
	const n = 3
	before := c.noRouteDrops(t)
	sent := sendNoRoute(t, pod, dst, n)
	var after uint64
	took, err := eventually(2*time.Second, func() error {
		if after = c.noRouteDrops(t); after < before+n {
			return fmt.Errorf("pod-egress NO_ROUTE %d -> %d", before, after)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("stats after %d drops: %v", n, err)
	}
	if after != before+n {
		t.Errorf("stats: pod-egress NO_ROUTE %d -> %d after %d drops, want +%d", before, after, n, n)
	}
	t.Logf("stats counted %d NO_ROUTE drops of %s %v after the send (polled %v)", n, pod.Name,
		time.Since(sent).Round(time.Millisecond), took.Round(time.Millisecond))
}

// checkFiltersAndRouteGet: --node narrows the dumps to one node's entries, and route get names
// the pod it delivers to and the node it tunnels to.
func (c *ctl) checkFiltersAndRouteGet(t *testing.T, v ctlView, local, other *lab.Pod) {
	t.Helper()
	node, peer := local.Node, other.Node
	var eps []ctlEndpoint
	if c.json(t, &eps, "endpoints", "--node", node.Name); len(eps) != len(v.endpoints) {
		t.Errorf("endpoints --node %s: %d entries, want all %d", node.Name, len(eps), len(v.endpoints))
	}
	if c.json(t, &eps, "endpoints", "--node", peer.Name); len(eps) != 0 {
		t.Errorf("endpoints --node %s on %s: %+v, want none", peer.Name, node.Name, eps)
	}
	var rs []ctlRoute
	if c.json(t, &rs, "routes", "--node", peer.Name); len(rs) != 1 || rs[0].Prefix != peer.PodCIDR.String() {
		t.Errorf("routes --node %s: %+v, want its pod CIDR %s only", peer.Name, rs, peer.PodCIDR)
	}
	var ns []ctlNode
	if c.json(t, &ns, "nodes", "--node", peer.Name); len(ns) != 1 || ns[0].NodeName != peer.Name {
		t.Errorf("nodes --node %s: %+v, want its tunnel endpoint only", peer.Name, ns)
	}

	var res ctlRouteGet
	c.json(t, &res, "route", "get", other.IP.String(), "--from", local.IP.String())
	if res.Verdict != "vxlan" || res.Route == nil || res.Route.NodeName != peer.Name || res.Node == nil || res.Node.NodeName != peer.Name {
		t.Errorf("route get %s --from %s: %+v, want vxlan to node %s, named", other.IP, local.IP, res, peer.Name)
	}
	neighbour := shared.pods[1] // pod-1b, on the same node
	res = ctlRouteGet{}
	c.json(t, &res, "route", "get", neighbour.IP.String())
	if res.Verdict != "deliver-local" || res.Endpoint == nil || res.Endpoint.PodName != neighbour.Name {
		t.Errorf("route get %s: %+v, want deliver-local to %s, named", neighbour.IP, res, neighbour.Name)
	}
	c.json(t, &rs, "routes", "--ip", other.IP.String())
	if len(rs) != 1 {
		t.Fatalf("routes --ip %s: %+v", other.IP, rs)
	}
	want := "vxlan to node " + rs[0].NodeIP + " (" + peer.Name + ")"
	if table := string(c.run(t, "route", "get", other.IP.String())); !strings.Contains(table, want) {
		t.Errorf("route get %s does not say %q:\n%s", other.IP, want, table)
	}
}

// TestCLINamesWithAndWithoutAgent runs the edgeplanectl binary on node1, first with its agent up,
// then with the agent killed (SIGKILL: only pins and the run dir are left): endpoints, routes and
// nodes name node1's pods and the other nodes and show the same JSON both times, --node filters,
// route get names pod and node, stats counts a provoked NO_ROUTE drop; with the agent down, a pod
// added and deleted comes and goes with its name, and monitor reports a drop with its reason
// within a second (TestMonitorShowsDrop covers a running agent). The agent is restarted at the end.
func TestCLINamesWithAndWithoutAgent(t *testing.T) {
	l := sharedLab(t)
	node, pod, other := shared.nodes[0], shared.pods[0], shared.pods[2] // node1, pod-1a, pod-2a
	c := newCtl(t, l, node)
	dst := netip.AddrPortFrom(netip.MustParseAddr("10.244.201.7"), 5353) // in lab.ClusterCIDR, no node's

	start := time.Now()
	up := c.view(t)
	t.Logf("agent up: endpoints, routes, nodes in %v", time.Since(start).Round(time.Millisecond))
	checkNames(t, l, node, up)
	c.checkFiltersAndRouteGet(t, up, pod, other)
	c.checkStatsCountDrop(t, pod, dst)

	restarted := false
	restart := func(ctx context.Context) error {
		restarted = true
		return node.RestartAgent(ctx, node.ExtraArgs, 30*time.Second)
	}
	t.Cleanup(func() { // later tests need node1's agent, however this one ends
		if !restarted {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := restart(ctx); err != nil {
				t.Errorf("restarting the agent on %s: %v", node.Name, err)
			}
		}
	})
	node.KillAgent()
	if done, _ := node.Agent.Exited(); !done {
		t.Fatalf("agent on %s still running after SIGKILL", node.Name)
	}
	t.Logf("killed the agent on %s", node.Name)

	start = time.Now()
	down := c.view(t)
	t.Logf("agent down: endpoints, routes, nodes in %v", time.Since(start).Round(time.Millisecond))
	for _, d := range []struct {
		verb     string
		up, down []byte
	}{{"endpoints", up.endpointsJSON, down.endpointsJSON}, {"routes", up.routesJSON, down.routesJSON}, {"nodes", up.nodesJSON, down.nodesJSON}} {
		if !bytes.Equal(d.up, d.down) {
			t.Errorf("%s -o json differs with the agent down:\n--- up\n%s--- down\n%s", d.verb, d.up, d.down)
		}
	}
	checkNames(t, l, node, down)
	c.checkFiltersAndRouteGet(t, down, pod, other)
	c.checkStatsCountDrop(t, pod, dst)
	c.checkMonitorWithoutAgent(t, pod, dst)
	c.checkPodComesAndGoes(t, l)

	start = time.Now()
	if err := restart(t.Context()); err != nil {
		t.Fatalf("restarting the agent on %s: %v", node.Name, err)
	}
	t.Logf("agent on %s restarted in %v", node.Name, time.Since(start).Round(time.Millisecond))
	checkNames(t, l, node, c.view(t))
}

// checkMonitorWithoutAgent: monitor, started with its filters while no agent runs, reports a
// provoked drop with the right reason within a second.
func (c *ctl) checkMonitorWithoutAgent(t *testing.T, pod *lab.Pod, dst netip.AddrPort) {
	t.Helper()
	m := startMonitor(t, c, "-o", "json", "--type", "drop", "--reason", "NO_ROUTE", "--ip", dst.Addr().String(), "--port", "5353")
	sent := sendNoRoute(t, pod, dst, 1)
	line, err := m.next(time.Second)
	if err != nil {
		t.Fatalf("monitor without an agent: %v", err)
	}
	took := time.Since(sent)
	var ev struct {
		Type, Reason, Direction, Interface string
		Tuple                              *struct{ Src, Dst string }
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if ev.Type != "drop" || ev.Reason != "NO_ROUTE" || ev.Direction != "pod-egress" || ev.Interface != pod.HostVeth() ||
		ev.Tuple == nil || ev.Tuple.Src != pod.IP.String() || ev.Tuple.Dst != dst.Addr().String() {
		t.Errorf("event %s, want NO_ROUTE pod-egress on %s from %s to %s", line, pod.HostVeth(), pod.IP, dst.Addr())
	}
	t.Logf("monitor (no agent) showed the drop %v after the send: %s", took.Round(time.Millisecond), line)
	m.stop(t)
}

// checkPodComesAndGoes: a pod wired while the agent is down (the CNI plugin needs only node.json
// and the pins) is listed with its name; once deleted, its endpoint and its index entry are gone.
func (c *ctl) checkPodComesAndGoes(t *testing.T, l *lab.Lab) {
	t.Helper()
	ctx := t.Context()
	p, err := l.AddPod(ctx, c.node, "pod-1cli", lab.PodOptions{})
	if err != nil {
		t.Fatalf("adding a pod while the agent is down: %v", err)
	}
	defer p.Delete(context.Background())
	var eps []ctlEndpoint
	c.json(t, &eps, "endpoints", "--ip", p.IP.String())
	if len(eps) != 1 || eps[0].PodName != p.Name || eps[0].ContainerID != p.ContainerID || eps[0].Interface != p.HostVeth() {
		t.Errorf("endpoints --ip %s after ADD: %+v, want %s on %s", p.IP, eps, p.Name, p.HostVeth())
	}
	if err := p.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if c.json(t, &eps, "endpoints", "--ip", p.IP.String()); len(eps) != 0 {
		t.Errorf("endpoints --ip %s after DEL: %+v", p.IP, eps)
	}
	entry := filepath.Join(nameindex.PodsDir(c.node.RunDir), p.IP.String()+".json")
	if _, err := os.Stat(entry); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("name index entry %s after DEL: %v, want it gone", entry, err)
	}
	t.Logf("%s (%s) added and deleted with the agent down; listed with its name in between", p.Name, p.IP)
}

// monitorProc is a running `edgeplanectl monitor`: its stdout lines (events) and stderr lines
// (status), read as they come.
type monitorProc struct {
	cmd    *exec.Cmd
	lines  chan string
	status chan string
	exited bool
}

// startMonitor starts monitor with args on c's node and waits (5 s) for its "monitoring ..."
// status line, which it prints once events are on. The process is killed when the test ends
// unless stop has run.
func startMonitor(t *testing.T, c *ctl, args ...string) *monitorProc {
	t.Helper()
	m := &monitorProc{cmd: c.command(append([]string{"monitor"}, args...)...),
		lines: make(chan string, 16), status: make(chan string, 16)}
	stdout, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !m.exited {
			m.cmd.Process.Kill()
			m.cmd.Wait()
		}
	})
	go scanLines(stdout, m.lines)
	go scanLines(stderr, m.status)
	select {
	case s := <-m.status:
		if !strings.HasPrefix(s, "monitoring ") {
			t.Fatalf("monitor: %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("monitor did not start within 5s")
	}
	return m
}

func scanLines(r io.Reader, out chan<- string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out <- sc.Text()
	}
	close(out)
}

// next is the next event line, or an error after timeout.
func (m *monitorProc) next(timeout time.Duration) (string, error) {
	select {
	case line, ok := <-m.lines:
		if !ok {
			return "", errors.New("monitor exited")
		}
		return line, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no event within %v", timeout)
	}
}

// stop interrupts the monitor as Ctrl-C does and expects a clean exit with its summary line.
func (m *monitorProc) stop(t *testing.T) {
	t.Helper()
	if err := m.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range m.lines { // to EOF: the pipes must be read out before Wait
	}
	var summary []string
	for s := range m.status {
		summary = append(summary, s)
	}
	err := m.cmd.Wait()
	m.exited = true
	if err != nil {
		t.Errorf("monitor after SIGINT: %v", err)
	}
	if len(summary) == 0 || !strings.HasSuffix(summary[len(summary)-1], " lost") {
		t.Errorf("no summary on stderr after SIGINT: %q", summary)
	}
}
