package services

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// The policies of issue 4 the other subtests do not cover: sessionAffinity and
// internalTrafficPolicy Local here, trafficDistribution (traffic_distribution_test.go), and NodePort
// isolation on every address a node has (nodeport_isolation_test.go).

// anyAnswer accepts any answers: for waiting until a frontend is programmed at all.
func anyAnswer(m map[string]int) bool { return len(m) > 0 }

// oneBackend asks n times in a row, each on a new connection (UDP: a new socket), and fails
// unless every answer came from the same pod, which it returns.
func oneBackend(t *testing.T, ns lab.Netns, proto corev1.Protocol, dst netip.AddrPort, n int) string {
	t.Helper()
	counts, err := lab.CountHostnames(ns, proto, dst, n, 2*time.Second)
	if err != nil {
		t.Fatalf("%s %v from %s: %v", proto, dst, ns, err)
	}
	if len(counts) != 1 {
		t.Fatalf("%s %v from %s with sessionAffinity ClientIP: %s, want one backend for all %d", proto, dst, ns, lab.FormatCounts(counts), n)
	}
	for name := range counts {
		return name
	}
	return ""
}

// repicks shows the affinity expiring: after each idle period longer than the timeout the client
// sticks (n requests, one backend) to a backend chosen afresh, so over a bounded number of idle
// periods at least two different backends come up. With 3 backends picked by a hash of the new
// connection's tuple, 12 periods all alike would happen by chance once in (1/3)^11 ~ 6e-6 runs.
func repicks(t *testing.T, ns lab.Netns, proto corev1.Protocol, dst netip.AddrPort, first string, timeout time.Duration) []string {
	t.Helper()
	picks := []string{first}
	for i := 0; i < 12; i++ {
		time.Sleep(timeout + 500*time.Millisecond)
		picks = append(picks, oneBackend(t, ns, proto, dst, 5))
		if slices.ContainsFunc(picks, func(p string) bool { return p != first }) {
			return picks
		}
	}
	t.Fatalf("%s %v from %s: the same backend after %d idle periods longer than the affinity timeout: %v", proto, dst, ns, len(picks)-1, picks)
	return nil
}

// testSessionAffinity: sessionAffinity ClientIP with a 2 s timeout, from pods, from the node
// itself and through a NodePort from outside (the datapath keeps affinity on every open
// frontend, EXTERNAL scope included: lb_pick in bpf/lib/lb_xlate.h). Each new connection renews
// the client's entry (kube-proxy's `recent` match), so requests in a row stick and an idle period
// shorter than the timeout keeps the backend; a longer one lets the next connection choose again.
// Switching affinity off (and on) applies live.
func testSessionAffinity(t *testing.T, c *cluster) {
	const timeout = 2 * time.Second
	svc := c.webService(t, "sticky", lab.ServiceOptions{
		Type:                   corev1.ServiceTypeNodePort,
		SessionAffinity:        corev1.ServiceAffinityClientIP,
		SessionAffinityTimeout: int32(timeout / time.Second),
	})
	type client struct {
		name  string
		ns    lab.Netns
		proto corev1.Protocol
		dst   netip.AddrPort
	}
	var clients []client
	for _, cl := range c.clients {
		clients = append(clients,
			client{cl.Name, cl.Netns, corev1.ProtocolTCP, vip(svc, 80)},
			client{cl.Name, cl.Netns, corev1.ProtocolUDP, vip(svc, 53)})
	}
	n1 := c.nodes[0]
	clients = append(clients,
		client{n1.Name + " (host)", n1.Netns, corev1.ProtocolTCP, vip(svc, 80)},
		client{"outside -> n1 node port", c.lab.Outside, corev1.ProtocolTCP, netip.AddrPortFrom(n1.IP, nodePortOf(svc, 0))},
		client{"outside -> n1 node port", c.lab.Outside, corev1.ProtocolUDP, netip.AddrPortFrom(n1.IP, nodePortOf(svc, 1))})

	picked := map[string]int{} // backend -> clients that stuck to it
	for _, cl := range clients {
		answers(t, cl.ns, cl.proto, cl.dst, 1, anyAnswer) // programmed on this client's node
		first := oneBackend(t, cl.ns, cl.proto, cl.dst, 20)
		picked[first]++
		// An idle period well inside the timeout keeps the backend.
		time.Sleep(timeout / 4)
		if again := oneBackend(t, cl.ns, cl.proto, cl.dst, 5); again != first {
			t.Errorf("%s %s %v: %s after %v idle, %s before; the affinity timeout is %v", cl.name, cl.proto, cl.dst, again, timeout/4, first, timeout)
		}
		picks := repicks(t, cl.ns, cl.proto, cl.dst, first, timeout)
		t.Logf("%s %s %v: 20 requests in a row on %s, kept after %v idle; picks after idle periods of %v: %v",
			cl.name, cl.proto, cl.dst, first, timeout/4, timeout+500*time.Millisecond, picks)
	}
	t.Logf("first backend per client (%d clients): %s", len(clients), lab.FormatCounts(picked))

	// Off, live: new connections spread again.
	start := time.Now()
	if _, err := c.lab.UpdateService(t.Context(), "sticky", func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityNone
		s.Spec.SessionAffinityConfig = nil
	}); err != nil {
		t.Fatal(err)
	}
	all := exactly("web-n1", "web-n2", "web-n3")
	spread := answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 30, all)
	t.Logf("affinity off: client-n1 spread over every backend %v after the update: %s", time.Since(start).Round(time.Millisecond), lab.FormatCounts(spread))
	spread = answers(t, c.lab.Outside, corev1.ProtocolTCP, netip.AddrPortFrom(n1.IP, nodePortOf(svc, 0)), 30, all)
	t.Logf("affinity off: outside -> n1 node port: %s", lab.FormatCounts(spread))

	// And on again, live.
	start = time.Now()
	if _, err := c.lab.UpdateService(t.Context(), "sticky", func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptrTo(int32(timeout / time.Second))}}
	}); err != nil {
		t.Fatal(err)
	}
	answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 20, func(m map[string]int) bool { return len(m) == 1 })
	t.Logf("affinity on again: client-n1 sticks %v after the update", time.Since(start).Round(time.Millisecond))
	oneBackend(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 20)
}

func ptrTo[T any](v T) *T { return &v }

// refused connects (TCP) or sends and waits for the answer (UDP) and requires that it fails with
// ECONNREFUSED, the "port unreachable" the datapath answers for a frontend without backends,
// well before the 2 s the request would wait. It returns how long the failure took.
func refused(t *testing.T, ns lab.Netns, proto corev1.Protocol, dst netip.AddrPort) time.Duration {
	t.Helper()
	start := time.Now()
	name, _, err := lab.AskHostname(ns, proto, dst, 2*time.Second)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("%s %v from %s: %s answered, want ECONNREFUSED", proto, dst, ns, name)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%s %v from %s: %v after %v, want ECONNREFUSED at once", proto, dst, ns, err, took.Round(time.Millisecond))
	}
	if took > 500*time.Millisecond {
		t.Errorf("%s %v from %s: refused after %v, want at once", proto, dst, ns, took.Round(time.Millisecond))
	}
	return took
}

// testInternalTrafficPolicyLocal: the ClusterIP of an internalTrafficPolicy Local Service reaches
// only the client's node's backend. Where that backend is not ready the node has none: a pod's
// connection is refused at once (pod_egress answers "port unreachable" from the ClusterIP and
// counts NO_SERVICE_BACKEND), and so is the node's own (overlay_egress answers it the same way);
// nothing goes to another node, and other nodes are unaffected.
func testInternalTrafficPolicyLocal(t *testing.T, c *cluster) {
	svc := c.webService(t, "itp-local", lab.ServiceOptions{InternalTrafficPolicy: corev1.ServiceInternalTrafficPolicyLocal})
	for i, cl := range c.clients {
		own := exactly(c.web[i].Name)
		tcp := answers(t, cl.Netns, corev1.ProtocolTCP, vip(svc, 80), 20, own)
		udp := answers(t, cl.Netns, corev1.ProtocolUDP, vip(svc, 53), 20, own)
		t.Logf("%s: TCP %s, UDP %s", cl.Name, lab.FormatCounts(tcp), lab.FormatCounts(udp))
	}
	for i, n := range c.nodes {
		tcp := answers(t, n.Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly(c.web[i].Name))
		t.Logf("%s (host): TCP %s", n.Name, lab.FormatCounts(tcp))
	}

	n2, client := c.nodes[1], c.clients[1]
	start := time.Now()
	if err := c.web[1].SetReady(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.web[1].SetReady(context.Background(), true) })
	deadline := time.Now().Add(waitLimit)
	for {
		_, _, err := lab.AskHostname(client.Netns, corev1.ProtocolTCP, vip(svc, 80), 2*time.Second)
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client-n2 -> %v with web-n2 not ready: %v, want ECONNREFUSED", vip(svc, 80), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("web-n2 not ready: client-n2 refused %v after the pod status update", time.Since(start).Round(time.Millisecond))

	// Exactly one drop per probe: a refused SYN is not retransmitted, a UDP socket sends once.
	const probes = 5
	drops := counter(t, n2, metricsmap.DirPodEgress, dropreason.NoServiceBackend)
	sent := counter(t, n2, metricsmap.DirPodEgress, dropreason.ICMPSent)
	var slowest time.Duration
	for range probes {
		slowest = max(slowest, refused(t, client.Netns, corev1.ProtocolTCP, vip(svc, 80)))
		slowest = max(slowest, refused(t, client.Netns, corev1.ProtocolUDP, vip(svc, 53)))
	}
	if d := counter(t, n2, metricsmap.DirPodEgress, dropreason.NoServiceBackend) - drops; d != 2*probes {
		t.Errorf("n2 counted %d NO_SERVICE_BACKEND drops on pod egress for %d refused requests", d, 2*probes)
	}
	if d := counter(t, n2, metricsmap.DirPodEgress, dropreason.ICMPSent) - sent; d != 2*probes {
		t.Errorf("n2 counted %d ICMP errors sent on pod egress for %d refused requests", d, 2*probes)
	}
	t.Logf("client-n2: %d TCP connects and %d UDP requests refused, slowest in %v; NO_SERVICE_BACKEND and ICMP_SENT +%d each", probes, probes, slowest.Round(time.Microsecond), 2*probes)

	// The other nodes keep their own backend.
	answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly("web-n1"))
	answers(t, c.clients[2].Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly("web-n3"))

	// n2's host has no backend either. The overlay device's program answers its packets with
	// "port unreachable" back into the host stack, as pod_egress answers pods (kube-proxy would
	// DROP both here): refused at once, one drop and one ICMP error per request on overlay-out.
	drops = counter(t, n2, metricsmap.DirOverlayOut, dropreason.NoServiceBackend)
	sent = counter(t, n2, metricsmap.DirOverlayOut, dropreason.ICMPSent)
	slowest = 0
	for range probes {
		slowest = max(slowest, refused(t, n2.Netns, corev1.ProtocolTCP, vip(svc, 80)))
		slowest = max(slowest, refused(t, n2.Netns, corev1.ProtocolUDP, vip(svc, 53)))
	}
	if d := counter(t, n2, metricsmap.DirOverlayOut, dropreason.NoServiceBackend) - drops; d != 2*probes {
		t.Errorf("n2 (host): %d NO_SERVICE_BACKEND drops on overlay-out for %d refused requests", d, 2*probes)
	}
	if d := counter(t, n2, metricsmap.DirOverlayOut, dropreason.ICMPSent) - sent; d != 2*probes {
		t.Errorf("n2 (host): %d ICMP errors sent on overlay-out for %d refused requests", d, 2*probes)
	}
	t.Logf("n2 (host): %d TCP connects and %d UDP requests refused, slowest in %v; overlay-out NO_SERVICE_BACKEND and ICMP_SENT +%d each", probes, probes, slowest.Round(time.Microsecond), 2*probes)

	start = time.Now()
	if err := c.web[1].SetReady(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	answers(t, client.Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly("web-n2"))
	t.Logf("web-n2 ready again: client-n2 answered by it %v after the update", time.Since(start).Round(time.Millisecond))
}
