package partition

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// healLimit is how soon after the link returns a change made in the API server during the cut
// must be in the cut-off nodes' maps (issue 18).
const healLimit = 5 * time.Second

// cutSite cuts site-a off from the API server and returns when, with the heal: a function that
// heals once, however often it is called (the test's own call and its deferred one).
func cutSite(ctx context.Context, t *testing.T, l *lab.Lab) (time.Time, func()) {
	t.Helper()
	if err := l.Partition(ctx, lab.DomainSiteA); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	healed := false
	return cutAt, func() {
		if !healed {
			healed = true
			if err := l.Heal(context.WithoutCancel(ctx), lab.DomainSiteA); err != nil {
				t.Error(err)
			}
		}
	}
}

// cutDuration is how long each cut lasts: EDGEPLANE_PARTITION_DURATION (a Go duration, e.g. 10m
// for issue 18's ten minutes), 60 s by default: longer than the HTTP/2 health check of the
// agents' API connections (30 s idle, then a 15 s ping), so their watches die during the cut and
// their lists wait for the link, as in a cut of ten minutes or ten days.
func cutDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("EDGEPLANE_PARTITION_DURATION")
	if v == "" {
		return 60 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 15*time.Second {
		t.Fatalf("EDGEPLANE_PARTITION_DURATION=%q: want a duration of at least 15s (%v)", v, err)
	}
	return d
}

// site is site-a with two nodes: p1 and p2 on s1, p3 on s2, and the Service web (UDP) whose only
// backend is p3; the cloud has the API server and kube-controller-manager.
type site struct {
	lab        *lab.Lab
	s1, s2     *lab.Node
	p1, p2, p3 *lab.Pod
	web        netip.AddrPort // web's ClusterIP and port
	ctl        string
}

const (
	webPort  = 9100
	podPort  = 9000
	lateBase = 9200 // ports of the Services created during cuts
)

func build(t *testing.T) *site { return buildSite(t, nil) }

// addSiteNode adds site-a's node name (number index) with its agent running.
type addSiteNode func(ctx context.Context, l *lab.Lab, name string, index int) (*lab.Node, error)

// buildSite is build with addNode adding s1 and s2 (nil: lab.AddNode in site-a).
func buildSite(t *testing.T, addNode addSiteNode) *site {
	t.Helper()
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if _, err := l.StartControllerManager(ctx, lab.ControllerManagerOptions{}); err != nil {
		t.Fatal(err)
	}
	s := &site{lab: l, ctl: filepath.Join(l.Config().EdgeplaneBin, "edgeplanectl")}
	if addNode == nil {
		addNode = func(ctx context.Context, l *lab.Lab, name string, index int) (*lab.Node, error) {
			return l.AddNode(ctx, name, index, lab.NodeOptions{Domain: lab.DomainSiteA})
		}
	}
	var err error
	if s.s1, err = addNode(ctx, l, "s1", 1); err != nil {
		t.Fatal(err)
	}
	if s.s2, err = addNode(ctx, l, "s2", 2); err != nil {
		t.Fatal(err)
	}
	if s.p1, err = l.AddPod(ctx, s.s1, "p1", lab.PodOptions{}); err != nil {
		t.Fatal(err)
	}
	if s.p2, err = l.AddPod(ctx, s.s1, "p2", lab.PodOptions{}); err != nil {
		t.Fatal(err)
	}
	if s.p3, err = l.AddPod(ctx, s.s2, "p3", lab.PodOptions{Labels: map[string]string{"app": "web"}}); err != nil {
		t.Fatal(err)
	}
	svc, err := l.CreateService(ctx, "web", udpService(webPort))
	if err != nil {
		t.Fatal(err)
	}
	s.web = netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), webPort)
	if _, err := l.WaitReadyEndpoints(ctx, "web", 1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		pod  *lab.Pod
		port uint16
	}{{s.p2, podPort}, {s.p3, podPort}, {s.p3, webPort}} {
		srv, err := lab.ServeUDPEcho(x.pod.Netns, netip.AddrPortFrom(x.pod.IP, x.port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(s.p2.IP, podPort), netip.AddrPortFrom(s.p3.IP, podPort), s.web} {
		if err := waitEcho(s.p1.Netns, dst, 30*time.Second); err != nil {
			t.Fatalf("precondition: p1 -> %s: %v", dst, err)
		}
	}
	// The CLI names frontends from the name index the agent writes after the maps: the dumps
	// compared across a cut start once it names web.
	for _, n := range []*lab.Node{s.s1, s.s2} {
		if _, ok := waitFor(10*time.Second, func() bool {
			return bytes.Contains(s.dump(t, n)["services"], []byte(`"serviceName": "web"`))
		}); !ok {
			t.Fatalf("precondition: %s: edgeplanectl services does not name web:\n%s", n.Name, s.dump(t, n)["services"])
		}
	}
	return s
}

// udpService is a ClusterIP Service of the app=web pods on UDP port (target the same port).
func udpService(port int32) lab.ServiceOptions {
	return lab.ServiceOptions{
		Selector: map[string]string{"app": "web"},
		Ports:    []corev1.ServicePort{{Name: "udp", Protocol: corev1.ProtocolUDP, Port: port, TargetPort: intstr.FromInt32(port)}},
	}
}

// waitEcho sends datagrams from ns to the echo server at dst until one comes back.
func waitEcho(ns lab.Netns, dst netip.AddrPort, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		c, err := lab.DialUDP(ns, dst, false)
		if err != nil {
			return err
		}
		_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 16)
		if _, err = c.Write([]byte("ping")); err == nil {
			_, err = c.Read(buf)
		}
		c.Close()
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no echo within %v: %w", timeout, last)
}

// streams are 2 ms UDP echo streams from p1: to p2 (same node), to p3 (across the site) and to
// web (pod -> Service, backend p3).
type streams struct {
	stop    context.CancelFunc
	results chan streamResult
	n       int
}

type streamResult struct {
	name string
	st   lab.StreamStats
	err  error
}

func (s *site) startStreams(t *testing.T) *streams {
	t.Helper()
	ctx, stop := context.WithCancel(t.Context())
	flows := map[string]netip.AddrPort{
		"p1 -> p2 (same node)":            netip.AddrPortFrom(s.p2.IP, podPort),
		"p1 -> p3 (other node)":           netip.AddrPortFrom(s.p3.IP, podPort),
		"p1 -> web (Service, backend p3)": s.web,
	}
	ss := &streams{stop: stop, results: make(chan streamResult, len(flows)), n: len(flows)}
	for name, dst := range flows {
		go func() {
			st, err := lab.UDPStream(ctx, s.p1.Netns, dst, 2*time.Millisecond, 500*time.Millisecond)
			ss.results <- streamResult{name, st, err}
		}()
	}
	return ss
}

// check stops the streams and fails the test for every datagram lost.
func (ss *streams) check(t *testing.T, what string) {
	t.Helper()
	ss.stop()
	for range ss.n {
		r := <-ss.results
		if r.err != nil {
			t.Errorf("stream %s: %v", r.name, r.err)
			continue
		}
		t.Logf("stream %s: %v", r.name, r.st)
		if len(r.st.Lost) > 0 || r.st.Received == 0 {
			t.Errorf("stream %s lost %d of %d datagrams across %s: %v", r.name, len(r.st.Lost), r.st.Sent, what, r.st)
		}
	}
}

// dumpVerbs are the edgeplanectl views compared before and during a cut: every map entry the
// agent writes from the API server's objects.
var dumpVerbs = []string{"routes", "nodes", "endpoints", "services", "domains"}

// dump runs edgeplanectl's views of node n (-o json); it needs only the pins, agent or not.
func (s *site) dump(t *testing.T, n *lab.Node) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, verb := range dumpVerbs {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("nsenter", "--net="+n.Netns.Path(), "--", s.ctl,
			"--bpffs-root", n.BPFFS, "--run-dir", n.RunDir, verb, "-o", "json")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("edgeplanectl %s on %s: %v, stderr %q", verb, n.Name, err, stderr.String())
		}
		out[verb] = stdout.Bytes()
	}
	return out
}

// settledDump is dump once the views stopped changing: the maps follow the API server within
// the checks before it, but the agent writes the name index (the names edgeplanectl shows beside
// the entries) once a second, so a dump taken right after a change may lack a new Service's name
// that the same maps show a second later. Two dumps in a row, 1.5 s apart, agree, or it fails.
func (s *site) settledDump(t *testing.T, n *lab.Node) map[string][]byte {
	t.Helper()
	last := s.dump(t, n)
	for range 8 {
		time.Sleep(1500 * time.Millisecond)
		now := s.dump(t, n)
		if maps.EqualFunc(last, now, bytes.Equal) {
			return now
		}
		last = now
	}
	t.Fatalf("%s: edgeplanectl's views kept changing for 12 s before the cut:\n%s", n.Name, last["services"])
	return nil
}

// sameDump reports every view that differs between two dumps.
func sameDump(t *testing.T, n *lab.Node, before, now map[string][]byte, when string) {
	t.Helper()
	for _, verb := range dumpVerbs {
		if !bytes.Equal(before[verb], now[verb]) {
			t.Errorf("%s: edgeplanectl %s changed %s:\n--- before the cut\n%s\n--- %s\n%s", n.Name, verb, when, before[verb], when, now[verb])
		}
	}
}

// metric reads an agent metric, failing the test when the agent does not export it.
func metric(t *testing.T, n *lab.Node, name string) float64 {
	t.Helper()
	v, ok, err := n.AgentMetric(name)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("%s: the agent exports no %s", n.Name, name)
	}
	return v
}

// waitFor polls cond every 20 ms until it holds or timeout passes, and returns how long it took.
func waitFor(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// healthWatch GETs /healthz of each node's agent every second until stopped, as kubelet's
// liveness probe does, and reports what would have failed it: any answer but 200, or
// livenessFailures probes in a row without an answer (a lone timeout on this shared, loaded
// machine is scheduling, which kubelet's failureThreshold of 3 tolerates too; each is logged).
func healthWatch(t *testing.T, nodes ...*lab.Node) (stop func() []string) {
	done := make(chan struct{})
	var (
		mu       sync.Mutex
		failures []string
		wg       sync.WaitGroup
	)
	for _, n := range nodes {
		wg.Go(func() {
			unanswered := 0
			for {
				code, body, err := n.AgentGet("/healthz")
				at := time.Now().UTC().Format("15:04:05.000")
				switch {
				case err != nil:
					unanswered++
					t.Logf("%s %s: /healthz unanswered (%d in a row): %v", at, n.Name, unanswered, err)
				default:
					unanswered = 0
				}
				if (err == nil && code != http.StatusOK) || unanswered >= livenessFailures {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s %s: /healthz %d %q %v", at, n.Name, code, strings.TrimSpace(body), err))
					mu.Unlock()
				}
				select {
				case <-done:
					return
				case <-time.After(time.Second):
				}
			}
		})
	}
	return func() []string {
		close(done)
		wg.Wait()
		return failures
	}
}

// livenessFailures is kubelet's default failureThreshold of a liveness probe.
const livenessFailures = 3

// reconnectedEvent finds the APIServerReconnected events on node's Node.
func reconnectedEvents(t *testing.T, l *lab.Lab, node string) []corev1.Event {
	t.Helper()
	evs, err := l.Client.CoreV1().Events(metav1.NamespaceDefault).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node && e.Reason == "APIServerReconnected" {
			out = append(out, e)
		}
	}
	return out
}

// changeCloud makes what the cloud changes during the first cut: Service late-1 of the site's
// pods, with its endpoint ready, and a node c3.
func (s *site) changeCloud(ctx context.Context, t *testing.T) (late1 *corev1.Service, c3 *lab.Node) {
	t.Helper()
	late1, err := s.lab.CreateService(ctx, "late-1", udpService(lateBase+1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.lab.WaitReadyEndpoints(ctx, "late-1", 1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if c3, err = s.lab.AddNode(ctx, "c3", 3, lab.NodeOptions{}); err != nil {
		t.Fatal(err)
	}
	return late1, c3
}

// sleepOutCut sleeps until the cut that began at cutAt has lasted cut.
func sleepOutCut(cutAt time.Time, cut time.Duration) {
	if rest := cut - time.Since(cutAt); rest > 0 {
		time.Sleep(rest)
	}
}

// checkCloudChanges waits up to timeout until n's maps hold the Service late, and node c3's route
// unless c3 is nil, and checks they did within healLimit of back: when the agents could reach the
// API server again (the heal, or YurtHub's return to it after the heal at healAt).
func (s *site) checkCloudChanges(t *testing.T, n *lab.Node, late *corev1.Service, c3 *lab.Node, timeout time.Duration, healAt, back time.Time) {
	t.Helper()
	lateIP := late.Spec.ClusterIP
	what := fmt.Sprintf("Service %s (%s)", late.Name, lateIP)
	if c3 != nil {
		what += fmt.Sprintf(" and node %s's route (%s)", c3.Name, c3.PodCIDR)
	}
	_, ok := waitFor(timeout, func() bool {
		d := s.dump(t, n)
		return bytes.Contains(d["services"], []byte(lateIP)) && (c3 == nil || bytes.Contains(d["routes"], []byte(c3.PodCIDR.String())))
	})
	took := time.Since(back)
	after := fmt.Sprintf("%v after the heal", took.Round(time.Millisecond))
	if !back.Equal(healAt) {
		after = fmt.Sprintf("%v after YurtHub's return (%v after the heal)", took.Round(time.Millisecond), time.Since(healAt).Round(time.Millisecond))
	}
	if !ok || took > healLimit {
		t.Errorf("%s: %s in the maps %s (found: %v), want within %v", n.Name, what, after, ok, healLimit)
	} else {
		t.Logf("%s: %s, added during the cut, in the maps %s", n.Name, what, after)
	}
}

// restartAgent kills n's agent (SIGKILL) during the cut that began at cutAt and starts a new
// one, and returns when it started it.
func restartAgent(t *testing.T, n *lab.Node, cutAt time.Time) (startedAt time.Time) {
	t.Helper()
	n.KillAgent()
	if done, _ := n.Agent.Exited(); !done {
		t.Fatalf("agent on %s still running after SIGKILL", n.Name)
	}
	startedAt = time.Now()
	if err := n.StartAgent(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the agent on %s %v into the cut and started a new one", n.Name, startedAt.Sub(cutAt).Round(time.Millisecond))
	return startedAt
}

// TestPartition (issue 18 items 1-2): site-a is cut off from the API server twice, for
// cutDuration each, under 2 ms UDP streams inside the site (pod to pod on one node and across,
// pod to Service). First cut: the agents notice (edgeplane_apiserver_reachable 0), stay healthy,
// change no map entry while a Service and a node are added in the API server; after the heal both
// changes are in their maps within 5 s, and /readyz, the metrics and an event say what happened.
// Second cut: s2's agent is killed (SIGKILL) and a new one started that cannot reach the API
// server: it serves /healthz (and an unready /readyz saying why), the CLI reads the maps, nothing
// is wiped; after the heal it converges, and a Service added during the cut is in its maps within
// 5 s. No stream loses a datagram.
func TestPartition(t *testing.T) {
	s := build(t)
	l, s1, s2 := s.lab, s.s1, s.s2
	cut := cutDuration(t)
	ctx := t.Context()

	t.Run("cut-and-heal", func(t *testing.T) {
		before := map[*lab.Node]map[string][]byte{s1: s.settledDump(t, s1), s2: s.settledDump(t, s2)}
		streams := s.startStreams(t)
		health := healthWatch(t, s1, s2)
		time.Sleep(500 * time.Millisecond)
		cutAt, heal := cutSite(ctx, t, l)
		defer heal()
		for _, n := range []*lab.Node{s1, s2} {
			if _, ok := waitFor(30*time.Second, func() bool {
				v, present, err := n.AgentMetric("edgeplane_apiserver_reachable")
				return err == nil && present && v == 0
			}); !ok {
				t.Errorf("%s: edgeplane_apiserver_reachable not 0 within 30 s of the cut", n.Name)
				continue
			}
			t.Logf("%s: edgeplane_apiserver_reachable 0 %v after the cut", n.Name, time.Since(cutAt).Round(100*time.Millisecond))
		}
		late1, c3 := s.changeCloud(ctx, t)
		sleepOutCut(cutAt, cut)
		for _, n := range []*lab.Node{s1, s2} {
			sameDump(t, n, before[n], s.dump(t, n), fmt.Sprintf("after %v cut off", time.Since(cutAt).Round(time.Second)))
			if code, body, err := n.AgentGet("/readyz"); err != nil || !strings.Contains(body, "apiserver: unreachable since") {
				t.Errorf("%s: /readyz during the cut: %d %q %v, want the outage named", n.Name, code, body, err)
			}
		}
		if drops, _ := l.PartitionDrops(ctx, lab.DomainSiteA); drops == 0 {
			t.Errorf("the router dropped nothing for the cut: the agents did not try the API server?")
		}
		heal()
		healAt := time.Now()
		for _, n := range []*lab.Node{s1, s2} {
			s.checkCloudChanges(t, n, late1, c3, 15*time.Second, healAt, healAt)
		}
		streams.check(t, "the cut and the heal")
		if failures := health(); len(failures) > 0 {
			t.Errorf("/healthz failed during the cut:\n%s", strings.Join(failures, "\n"))
		}
		for _, n := range []*lab.Node{s1, s2} {
			code, body, err := n.AgentGet("/readyz")
			if err != nil || code != http.StatusOK || !strings.Contains(body, "apiserver: reachable; 1 outage(s)") {
				t.Errorf("%s: /readyz after the heal: %d %q %v, want 200 naming the outage", n.Name, code, body, err)
			} else {
				t.Logf("%s: /readyz: %q", n.Name, body)
			}
			if v := metric(t, n, "edgeplane_apiserver_reachable"); v != 1 {
				t.Errorf("%s: edgeplane_apiserver_reachable %v after the heal", n.Name, v)
			}
			if v := metric(t, n, "edgeplane_apiserver_outages_total"); v != 1 {
				t.Errorf("%s: edgeplane_apiserver_outages_total %v, want 1", n.Name, v)
			}
			// The outage starts at the first failed probe (up to one probe interval, 10 s, and its
			// 2 s timeout after the cut) and ends at the first answer (within 1 s of the heal).
			if v := metric(t, n, "edgeplane_apiserver_last_outage_seconds"); v < cut.Seconds()-13 || v > cut.Seconds()+2 {
				t.Errorf("%s: edgeplane_apiserver_last_outage_seconds %v, want the cut's %v (-13 s, +2 s)", n.Name, v, cut)
			}
			var evs []corev1.Event
			if _, ok := waitFor(10*time.Second, func() bool { evs = reconnectedEvents(t, l, n.Name); return len(evs) > 0 }); !ok {
				t.Errorf("%s: no APIServerReconnected event on the Node", n.Name)
			} else {
				t.Logf("%s: event %s: %s", n.Name, evs[0].Reason, evs[0].Message)
			}
		}
	})

	t.Run("agent-killed-and-started-during-cut", func(t *testing.T) {
		before := s.settledDump(t, s2)
		eventsBefore := len(reconnectedEvents(t, l, s2.Name)) // the first cut's, when it ran
		streams := s.startStreams(t)
		time.Sleep(500 * time.Millisecond)
		cutAt, heal := cutSite(ctx, t, l)
		defer heal()
		time.Sleep(2 * time.Second)
		startedAt := restartAgent(t, s2, cutAt)
		late, err := l.CreateService(ctx, "late-2", udpService(lateBase+2))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitReadyEndpoints(ctx, "late-2", 1, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		// The new agent without the API server: it answers /healthz, says why it is not ready,
		// and the CLI shows the same maps.
		var code int
		var body string
		if _, ok := waitFor(20*time.Second, func() bool {
			code, body, err = s2.AgentGet("/readyz")
			return err == nil && strings.Contains(body, "apiserver: unreachable since")
		}); !ok {
			t.Errorf("%s: /readyz of the new agent: %d %q %v, want the outage named", s2.Name, code, body, err)
		} else if code != http.StatusServiceUnavailable {
			t.Errorf("%s: /readyz of the new agent before it synced: %d %q, want 503", s2.Name, code, body)
		}
		health := healthWatch(t, s2)
		sleepOutCut(cutAt, cut)
		if done, err := s2.Agent.Exited(); done {
			t.Fatalf("the new agent on %s exited during the cut (%v):\n%s", s2.Name, err, s2.Agent.LogTail(40))
		}
		sameDump(t, s2, before, s.dump(t, s2), fmt.Sprintf("with a new agent %v into the cut", time.Since(cutAt).Round(time.Second)))
		heal()
		healAt := time.Now()
		s.checkCloudChanges(t, s2, late, nil, 15*time.Second, healAt, healAt)
		if _, ok := waitFor(10*time.Second, func() bool {
			code, body, err = s2.AgentGet("/readyz")
			return err == nil && code == http.StatusOK
		}); !ok {
			t.Errorf("%s: /readyz of the new agent after the heal: %d %q %v, want 200", s2.Name, code, body, err)
		} else {
			t.Logf("%s: new agent ready %v after the heal: %q", s2.Name, time.Since(healAt).Round(time.Millisecond), body)
		}
		if rewritten, err := s2.WaitRewritten(ctx, startedAt, 5*time.Second); err != nil || !rewritten {
			t.Errorf("%s: the new agent did not rewrite node.json after the heal (%v)", s2.Name, err)
		}
		streams.check(t, "the agent's SIGKILL and restart during the cut")
		if failures := health(); len(failures) > 0 {
			t.Errorf("/healthz of the new agent failed during the cut:\n%s", strings.Join(failures, "\n"))
		}
		var evs []corev1.Event
		if _, ok := waitFor(10*time.Second, func() bool { evs = reconnectedEvents(t, l, s2.Name); return len(evs) > eventsBefore }); !ok {
			t.Errorf("%s: %d APIServerReconnected events, as many as before the cut; want the new agent's too", s2.Name, len(evs))
		}
	})
}
