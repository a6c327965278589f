package route

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// Operating a route-mode site (issue 16 items 1, 3 and 5; docs/domains.md "Switching a domain's
// encapsulation" and "The speaker"): switching the domain between vxlan and route under traffic,
// an agent killed under traffic, a node joining, a password rotated, an uninstall.

// vxlanConfig is site-a back in vxlan mode: the short form, no BGP.
var vxlanConfig = "domains:\n  site-a: [site-a]\n"

// streamInterval is the pods' UDP echo stream's packet interval in these tests.
const streamInterval = 2 * time.Millisecond

func TestRouteOperations(t *testing.T) {
	s := build(t)
	if _, _, err := s.gateway.WaitRoutes(t.Context(), 30*time.Second, hasRoutesOf(s.nodes["a1"], s.nodes["a2"], s.nodes["b3"])); err != nil {
		t.Fatalf("%v\n%s", err, birdc(t, s.gateway, "show", "protocols", "all"))
	}
	t.Run("switch-vxlan-route-vxlan-under-traffic", func(t *testing.T) { testSwitch(t, s) })
	t.Run("kill-9-of-a-speaker-under-traffic", func(t *testing.T) { testKill9(t, s) })
	t.Run("node-added-route-at-gateway", func(t *testing.T) { testNodeAdded(t, s) })
	t.Run("password-rotated", func(t *testing.T) { testPasswordRotated(t, s) })
	t.Run("uninstall-withdraws", func(t *testing.T) { testUninstallWithdraws(t, s) })
}

// testSwitch switches site-a vxlan -> route -> vxlan with a 2 ms UDP stream from a1's pod to
// b3's (across the gateway) and one to a2's (same segment), agents running, the ConfigMap the
// only change. Each switch: the gateway learns (route) or loses (vxlan) the pod CIDRs, every
// end's routes change encapsulation, and the packets lost are counted.
func testSwitch(t *testing.T, s *site) {
	a1, a2, b3 := s.nodes["a1"], s.nodes["a2"], s.nodes["b3"]
	nodes := []*lab.Node{a1, a2, b3}
	setConfig(t, s.lab, vxlanConfig)
	if _, took, err := s.gateway.WaitRoutes(t.Context(), 10*time.Second, hasNoRoutesOf(nodes...)); err != nil {
		t.Fatalf("site-a switched to vxlan: the speakers did not withdraw: %v\n%s", err, birdc(t, s.gateway, "show", "route", "all"))
	} else {
		t.Logf("starting from vxlan: pod CIDRs withdrawn at the gateway in %v", took.Round(time.Millisecond))
	}
	waitEncap(t, nodes, "vxlan", 15*time.Second)

	for _, step := range []struct {
		name, config, encap string
		gateway             func(map[netip.Prefix]lab.GatewayRoute) bool
	}{
		{"vxlan-to-route", routeConfig, "direct", hasRoutesOf(nodes...)},
		{"route-to-vxlan", vxlanConfig, "vxlan", hasNoRoutesOf(nodes...)},
	} {
		t.Run(step.name, func(t *testing.T) {
			streams := []*podStream{
				startStream(t, s.pods["a1"], s.pods["b3"], 9091),
				startStream(t, s.pods["a1"], s.pods["a2"], 9092),
			}
			time.Sleep(300 * time.Millisecond)
			setConfig(t, s.lab, step.config)
			switched := time.Now()
			// The gateway and the nodes' routes are watched at once, to see which changed first.
			type converged struct {
				took time.Duration
				err  error
			}
			gateway := make(chan converged, 1)
			go func() {
				_, took, err := s.gateway.WaitRoutes(t.Context(), 15*time.Second, step.gateway)
				gateway <- converged{took, err}
			}()
			waitEncap(t, nodes, step.encap, 15*time.Second)
			everywhere := time.Since(switched)
			atGateway := <-gateway
			if atGateway.err != nil {
				t.Errorf("gateway after the switch: %v\n%s", atGateway.err, birdc(t, s.gateway, "show", "route", "all"))
			}
			time.Sleep(time.Second)
			t.Logf("%s: gateway converged %v after the ConfigMap update, every node's routes %s after %v (edgeplanectl polled on 3 nodes)",
				step.name, atGateway.took.Round(time.Millisecond), step.encap, everywhere.Round(time.Millisecond))
			for _, st := range streams {
				stats := st.stop()
				t.Logf("%s: stream %s: %v", step.name, st.name, stats)
				if stats.Received == 0 || len(stats.Lost) != 0 {
					t.Errorf("%s: stream %s lost %d of %d packets across the switch", step.name, st.name, len(stats.Lost), stats.Sent)
				}
			}
		})
	}
	setConfig(t, s.lab, routeConfig)
	if _, _, err := s.gateway.WaitRoutes(t.Context(), 15*time.Second, hasRoutesOf(nodes...)); err != nil {
		t.Fatalf("back to route mode: %v", err)
	}
}

// testKill9 kills b3's agent with SIGKILL under a 2 ms stream from a1's pod to b3's (across the
// gateway) and starts a new one: the gateway keeps b3's route (graceful restart: the killed
// speaker's TCP session is reset by the kernel without a NOTIFICATION), the pinned datapath
// keeps forwarding, nothing is lost.
func testKill9(t *testing.T, s *site) {
	a1, b3 := s.nodes["a1"], s.nodes["b3"]
	setConfig(t, s.lab, gracefulConfig)
	waitGracefulSessions(t, s, a1, b3)
	st := startStream(t, s.pods["a1"], s.pods["b3"], 9093)
	missing, kept, stopWatch := watchRoute(t, s, b3)
	time.Sleep(300 * time.Millisecond)
	b3.KillAgent()
	killed := time.Now()
	if err := b3.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if ok, err := b3.WaitRewritten(t.Context(), killed, 60*time.Second); err != nil || !ok {
		t.Fatalf("b3's new agent not ready: %v %v\n%s", ok, err, b3.AgentLogs(40))
	}
	ready := time.Since(killed)
	_, took, err := s.gateway.WaitRoutes(t.Context(), 30*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		sessions, err := s.gateway.Sessions(t.Context())
		ss := sessions[b3.IP]
		return err == nil && ss.BGPState == "Established" && !ss.GracefulRestartActive && ss.Imported == 1 && r[b3.PodCIDR].NextHop == b3.IP
	})
	if err != nil {
		t.Errorf("b3's session after the new agent: %v\n%s", err, birdc(t, s.gateway, "show", "protocols", "all"))
	}
	time.Sleep(300 * time.Millisecond)
	polls := stopWatch()
	stats := st.stop()
	t.Logf("b3's agent killed; new agent ready after %v, its session re-established %v later; gateway polled %d times: route missing %d, kept by graceful restart %d; stream a1 -> b3: %v",
		ready.Round(time.Millisecond), took.Round(time.Millisecond), polls, *missing, *kept, stats)
	if *missing != 0 {
		t.Errorf("the gateway dropped b3's route in %d of %d polls after its agent was killed", *missing, polls)
	}
	if *kept == 0 {
		t.Errorf("the gateway never kept b3's route by graceful restart: was the session's loss seen at all?")
	}
	if stats.Received == 0 || len(stats.Lost) != 0 {
		t.Errorf("stream across the gateway through b3's agent's kill -9: %v; want nothing lost", stats)
	}
}

// agentDaemonSet is the DaemonSet object a4's agent follows (--daemonset): deleting it is an
// uninstall (kubectl delete -k). The lab runs no DaemonSet controller; a4's agent is the harness's.
const agentDaemonSet = "edgeplane-agent-route"

// nodeAddedBound is how soon after a new node's agent is ready its pod CIDR must be at the
// gateway. Issue 16 asks for 2 s; the speaker starts within ~0.1 s of readiness, but GoBGP dials a
// new peer only after a fixed 1.5 to 2 s delay (minConnectRetryInterval, 2 s, times 0.75 to 1;
// no setting changes it), then OPEN, KEEPALIVE and UPDATE cross: 1.7 to 1.8 s on a quiet
// machine, 2.25 s once at load 16. The bound is that delay's 2 s plus 1 s for the exchange under
// load (docs/domains.md).
const nodeAddedBound = 3 * time.Second

// testNodeAdded adds a4, a speaker on segment 1, and measures how long its pod CIDR takes to be
// at the gateway: from the Node object's creation and from its agent's readiness (node.json).
func testNodeAdded(t *testing.T, s *site) {
	labels := map[string]string{"app": agentDaemonSet}
	_, err := s.lab.Client.AppsV1().DaemonSets(lab.AgentNamespace).Create(t.Context(), &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: agentDaemonSet},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "edgeplane"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	confDir, binDir := t.TempDir(), t.TempDir() // the uninstall's CNI files, never the host's
	created := time.Now()
	a4, err := s.lab.AddNode(t.Context(), "a4", 4, lab.NodeOptions{
		Domain: lab.DomainSiteA,
		Labels: map[string]string{domain.DefaultPoolLabel: lab.DomainSiteA, segmentLabel: "1", speakerLabel: "true"},
		AgentArgs: []string{"--daemonset=" + lab.AgentNamespace + "/" + agentDaemonSet,
			"--cni-conf-dir=" + confDir, "--cni-bin-dir=" + binDir},
	})
	if err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	s.nodes["a4"] = a4
	_, _, err = s.gateway.WaitRoutes(t.Context(), 10*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		return r[a4.PodCIDR].NextHop == a4.IP
	})
	routed := time.Now()
	if err != nil {
		t.Fatalf("10 s after a4's agent was ready: %v\n%s\n%s", err, birdc(t, s.gateway, "show", "protocols", "all"), a4.AgentLogs(30))
	}
	t.Logf("a4's pod CIDR at the gateway %v after its agent was ready (node.json), %v after its Node object was created (agent start included)",
		routed.Sub(ready).Round(time.Millisecond), routed.Sub(created).Round(time.Millisecond))
	if took := routed.Sub(ready); took > nodeAddedBound {
		t.Errorf("a4's pod CIDR reached the gateway %v after its agent was ready, want within %v", took.Round(time.Millisecond), nodeAddedBound)
	}
	if s.pods["a4"], err = s.lab.AddPod(t.Context(), a4, "p-a4", lab.PodOptions{}); err != nil {
		t.Fatal(err)
	}
	exchange(t, s.pods["b3"], s.pods["a4"])
}

// testPasswordRotated changes the TCP-MD5 password at the gateway, then in the Secret, as an
// operator rotating it does: the sessions break with the router's change (the old key's segments
// are dropped) and come back with the new key once the agents read the Secret, within the time
// docs/domains.md gives (passwordRotationBound).
func testPasswordRotated(t *testing.T, s *site) {
	speakers := []*lab.Node{s.nodes["a1"], s.nodes["a2"], s.nodes["b3"], s.nodes["a4"]}
	const rotated = "lab-site-a-md5-rotated"
	if err := s.gateway.SetPassword(t.Context(), rotated); err != nil {
		t.Fatal(err)
	}
	// The router's side changed: the sessions go down (bird restarts them with the new key,
	// which the nodes' old key does not match).
	if _, took, err := s.gateway.WaitRoutes(t.Context(), 30*time.Second, func(map[netip.Prefix]lab.GatewayRoute) bool {
		sessions, err := s.gateway.Sessions(t.Context())
		if err != nil {
			return false
		}
		for _, n := range speakers {
			if sessions[n.IP].BGPState == "Established" {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("the gateway's new password did not end the sessions: %v\n%s", err, birdc(t, s.gateway, "show", "protocols", "all"))
	} else {
		t.Logf("gateway's password changed: sessions down after %v", took.Round(time.Millisecond))
	}
	// Each agent says so against the real router as against GoBGP: its session metric drops to 0,
	// edgeplanectl bgp shows the session not established, and a BGPSessionLost Warning is on the
	// Node.
	for _, n := range speakers {
		waitSessionReported(t, s, n, false)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: passwordSecret, Namespace: lab.AgentNamespace},
		Data:       map[string][]byte{"password": []byte(rotated)},
	}
	if _, err := s.lab.Client.CoreV1().Secrets(lab.AgentNamespace).Update(t.Context(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	updated := time.Now()
	_, _, err := s.gateway.WaitRoutes(t.Context(), passwordRotationBound, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		sessions, err := s.gateway.Sessions(t.Context())
		if err != nil {
			return false
		}
		for _, n := range speakers {
			if sessions[n.IP].BGPState != "Established" || r[n.PodCIDR].NextHop != n.IP {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("%v after the Secret's update: %v\n%s", passwordRotationBound, err, birdc(t, s.gateway, "show", "protocols", "all"))
	}
	t.Logf("every session re-established with the new password %v after the Secret's update", time.Since(updated).Round(time.Millisecond))
	for _, n := range speakers {
		waitSessionReported(t, s, n, true)
	}
	for _, leg := range []string{lab.DomainSiteA, "site-a2"} {
		if signed, unsigned := bgpSegments(t, s.lab.Router(), leg, 4*time.Second); signed == 0 || unsigned != 0 {
			t.Errorf("router leg %s after the rotation: %d BGP segments signed, %d unsigned", leg, signed, unsigned)
		}
	}
	exchange(t, s.pods["a1"], s.pods["b3"])
}

// waitSessionReported waits up to 15 s until n's agent reports its one BGP session up (or down)
// in its metric (edgeplane_bgp_session_up), in edgeplanectl bgp and, when down, with a
// BGPSessionLost event on its Node.
func waitSessionReported(t *testing.T, s *site, n *lab.Node, up bool) {
	t.Helper()
	want := 0.0
	if up {
		want = 1
	}
	var metric float64
	var state bgpstatus.SessionState
	var lost int
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		metric = sessionUpMetric(t, n)
		if r := ctlBGP(t, n, func(*bgpstatus.Report) bool { return true }); len(r.Peers) == 1 {
			state = r.Peers[0].State
		}
		events, err := s.lab.Client.CoreV1().Events("").List(t.Context(), metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + n.Name + ",reason=BGPSessionLost"})
		if err == nil {
			lost = len(events.Items)
		}
		if metric == want && (state == bgpstatus.StateEstablished) == up && (up || lost > 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: session_up %v, edgeplanectl bgp %q, %d BGPSessionLost events; want the session reported up=%v", n.Name, metric, state, lost, up)
			return
		}
	}
}

// sessionUpMetric is n's edgeplane_bgp_session_up for its one peer (-1 when absent).
func sessionUpMetric(t *testing.T, n *lab.Node) float64 {
	t.Helper()
	status, body, err := n.AgentGet("/metrics")
	if err != nil || status != http.StatusOK {
		t.Fatalf("%s /metrics: %d %v", n.Name, status, err)
	}
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[0], "edgeplane_bgp_session_up{") {
			var v float64
			if _, err := fmt.Sscan(f[1], &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// passwordRotationBound is docs/domains.md's bound on a rotated password reaching the sessions
// once the router and the Secret both have it: the speaker's retry tick (10 s, when it reads the
// Secret again while a session is down) plus its first connection's delay (1.5 to 2 s), with
// slack for a loaded machine.
const passwordRotationBound = 15 * time.Second

// testUninstallWithdraws deletes a4's DaemonSet and stops its agent (the pod's SIGTERM): the
// agent withdraws a4's pod CIDR (a NOTIFICATION, graceful restart notwithstanding) before it
// uninstalls, and the gateway drops the route at once.
func testUninstallWithdraws(t *testing.T, s *site) {
	a4 := s.nodes["a4"]
	if a4 == nil {
		t.Skip("a4 was not added (node-added failed)")
	}
	if _, _, err := s.gateway.WaitRoutes(t.Context(), 10*time.Second, hasRoutesOf(a4)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a4.WaitAgentLog(t.Context(), "Following the DaemonSet running this agent", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.lab.Client.AppsV1().DaemonSets(lab.AgentNamespace).Delete(t.Context(), agentDaemonSet, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, kept, stopWatch := watchRoute(t, s, a4)
	start := time.Now()
	a4.StopAgent()
	stopped := time.Since(start)
	_, took, err := s.gateway.WaitRoutes(t.Context(), 2*time.Second, hasNoRoutesOf(a4))
	polls := stopWatch()
	if err != nil {
		t.Fatalf("a4 uninstalled, its route still at the gateway: %v\n%s\n%s", err, birdc(t, s.gateway, "show", "route", "all"), a4.Agent.LogTail(30))
	}
	t.Logf("a4's agent uninstalled in %v; its pod CIDR gone from the gateway %v after the agent exited (kept by graceful restart in %d of %d polls)",
		stopped.Round(time.Millisecond), took.Round(time.Millisecond), *kept, polls)
	if *kept != 0 {
		t.Errorf("the gateway kept a4's route by graceful restart in %d polls: an uninstall must withdraw, not restart", *kept)
	}
	if tail := a4.Agent.LogTail(40); !strings.Contains(tail, "Uninstalled edgeplane from this node") {
		t.Errorf("a4's agent did not uninstall:\n%s", tail)
	}
	if r, err := s.gateway.Routes(t.Context()); err != nil || r[s.nodes["a1"].PodCIDR].NextHop != s.nodes["a1"].IP {
		t.Errorf("the other nodes' routes after a4's uninstall: %v %v", r, err)
	}
}

func hasRoutesOf(nodes ...*lab.Node) func(map[netip.Prefix]lab.GatewayRoute) bool {
	return func(r map[netip.Prefix]lab.GatewayRoute) bool {
		for _, n := range nodes {
			if r[n.PodCIDR].NextHop != n.IP {
				return false
			}
		}
		return true
	}
}

func hasNoRoutesOf(nodes ...*lab.Node) func(map[netip.Prefix]lab.GatewayRoute) bool {
	return func(r map[netip.Prefix]lab.GatewayRoute) bool {
		for _, n := range nodes {
			if _, ok := r[n.PodCIDR]; ok {
				return false
			}
		}
		return true
	}
}

// waitGracefulSessions waits for the nodes' sessions to have graceful restart (60 s) and their
// routes at the gateway.
func waitGracefulSessions(t *testing.T, s *site, nodes ...*lab.Node) {
	t.Helper()
	_, took, err := s.gateway.WaitRoutes(t.Context(), 30*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		sessions, err := s.gateway.Sessions(t.Context())
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if ss := sessions[n.IP]; ss.BGPState != "Established" || ss.NeighborRestartTime != "60" || r[n.PodCIDR].NextHop != n.IP {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("sessions with graceful restart: %v\n%s", err, birdc(t, s.gateway, "show", "protocols", "all"))
	}
	t.Logf("sessions with graceful restart in %v", took.Round(time.Millisecond))
}

// watchRoute polls the gateway every 20 ms for n's route: how often it was missing, and how often
// kept by graceful restart (n's session down, the route stale). stop returns the number of polls.
func watchRoute(t *testing.T, s *site, n *lab.Node) (missing, kept *int, stop func() int) {
	ctx, cancel := context.WithCancel(t.Context())
	missing, kept = new(int), new(int)
	polls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if r, err := s.gateway.Routes(ctx); err == nil {
				polls++
				if _, ok := r[n.PodCIDR]; !ok {
					*missing++
				}
				if sessions, err := s.gateway.Sessions(ctx); err == nil && sessions[n.IP].GracefulRestartActive {
					*kept++
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return missing, kept, func() int { cancel(); <-done; return polls }
}

// podStream is a UDP echo stream between two pods, every streamInterval.
type podStream struct {
	name   string
	server *lab.Server
	cancel context.CancelFunc
	result chan lab.StreamStats
}

func startStream(t *testing.T, from, to *lab.Pod, port uint16) *podStream {
	t.Helper()
	srv, err := lab.ServeUDPEcho(to.Netns, netip.AddrPortFrom(to.IP, port))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	st := &podStream{name: from.Name + " -> " + to.Name, server: srv, cancel: cancel, result: make(chan lab.StreamStats, 1)}
	go func() {
		stats, err := lab.UDPStream(ctx, from.Netns, netip.AddrPortFrom(to.IP, port), streamInterval, 300*time.Millisecond)
		if err != nil {
			t.Error(err)
		}
		st.result <- stats
	}()
	t.Cleanup(func() { st.stop() })
	return st
}

// stop ends the stream and returns its outcome; safe to call twice.
func (st *podStream) stop() lab.StreamStats {
	st.cancel()
	stats, ok := <-st.result
	if ok {
		close(st.result)
		st.server.Close()
	}
	return stats
}

// waitEncap waits until every node's route to every other node's pod CIDR has encap
// (edgeplanectl routes: "vxlan" or "direct").
func waitEncap(t *testing.T, nodes []*lab.Node, encap string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var wrong []string
		for _, n := range nodes {
			got := routeEncaps(t, n)
			for _, peer := range nodes {
				if peer != n && got[peer.PodCIDR] != encap {
					wrong = append(wrong, fmt.Sprintf("%s: %s is %q", n.Name, peer.PodCIDR, got[peer.PodCIDR]))
				}
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("routes not %s after %v: %v", encap, timeout, wrong)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// routeEncaps is `edgeplanectl routes -o json` on n: encapsulation by pod CIDR.
func routeEncaps(t *testing.T, n *lab.Node) map[netip.Prefix]string {
	t.Helper()
	argv := n.CtlCommand("routes", "-o", "json")
	out, err := exec.CommandContext(t.Context(), argv[0], argv[1:]...).Output()
	if err != nil {
		t.Fatalf("%s: %v: %v", n.Name, argv, err)
	}
	var rows []struct {
		Prefix string `json:"prefix"`
		Encap  string `json:"encap"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("%s: edgeplanectl routes -o json: %v\n%s", n.Name, err, out)
	}
	encaps := map[netip.Prefix]string{}
	for _, r := range rows {
		if p, err := netip.ParsePrefix(r.Prefix); err == nil {
			encaps[p] = r.Encap
		}
	}
	return encaps
}
