package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// The policies of issue 4 the other subtests do not cover: sessionAffinity, internalTrafficPolicy
// Local, trafficDistribution, and NodePort isolation on every address a node has.

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

// setZone labels a node with topology.kubernetes.io/zone; "" removes the label.
func (c *cluster) setZone(t *testing.T, node, zone string) {
	t.Helper()
	value := "null"
	if zone != "" {
		value = fmt.Sprintf("%q", zone)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, corev1.LabelTopologyZone, value)
	if _, err := c.lab.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) setTrafficDistribution(t *testing.T, svc, value string) {
	t.Helper()
	if _, err := c.lab.UpdateService(t.Context(), svc, func(s *corev1.Service) {
		s.Spec.TrafficDistribution = nil
		if value != "" {
			s.Spec.TrafficDistribution = &value
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// testTrafficDistribution: n1 and n2 in zone-a, n3 in zone-b (topology.kubernetes.io/zone, removed
// again at the end). The real EndpointSlice controller writes each endpoint's zone from its node's
// label (and, for PreferClose, hints, which edgeplane does not need: docs/services.md); each agent
// keeps its own zone's ready endpoints, all of them when its zone has none, and for PreferSameNode
// its own node's first.
func testTrafficDistribution(t *testing.T, c *cluster) {
	zones := map[string]string{"n1": "zone-a", "n2": "zone-a", "n3": "zone-b"}
	for _, n := range c.nodes {
		c.setZone(t, n.Name, zones[n.Name])
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.setZone(t, n.Name, "")
		}
	})
	// The controller reads an endpoint's zone from its node cache when it writes the endpoint, so
	// the labels go on before the Service exists; the slices are checked below.
	svc := c.webService(t, "close", lab.ServiceOptions{TrafficDistribution: corev1.ServiceTrafficDistributionPreferClose})
	slices, err := c.lab.WaitEndpointSlices(t.Context(), "close", waitLimit, func(s []discoveryv1.EndpointSlice) error {
		for _, ep := range lab.SliceEndpoints(s) {
			if ep.NodeName == nil || ep.Zone == nil || *ep.Zone != zones[*ep.NodeName] {
				return fmt.Errorf("endpoint %v on %v has zone %v", ep.Addresses, ptrString(ep.NodeName), ptrString(ep.Zone))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var hints []string
	for _, ep := range lab.SliceEndpoints(slices) {
		h := "none"
		if ep.Hints != nil {
			var z []string
			for _, fz := range ep.Hints.ForZones {
				z = append(z, fz.Name)
			}
			h = strings.Join(z, ",")
		}
		hints = append(hints, fmt.Sprintf("%s zone=%s hints=%s", ep.Addresses[0], *ep.Zone, h))
	}
	t.Logf("EndpointSlice of close (PreferClose): %s", strings.Join(hints, "; "))

	zoneA, zoneB := exactly("web-n1", "web-n2"), exactly("web-n3")
	check := func(what string, want []func(map[string]int) bool) {
		t.Helper()
		var out []string
		for i, cl := range c.clients {
			m := answers(t, cl.Netns, corev1.ProtocolTCP, vip(svc, 80), 20, want[i])
			out = append(out, cl.Name+" "+lab.FormatCounts(m))
		}
		t.Logf("%s: %s", what, strings.Join(out, ", "))
	}
	check("PreferClose", []func(map[string]int) bool{zoneA, zoneA, zoneB})
	udp := answers(t, c.clients[2].Netns, corev1.ProtocolUDP, vip(svc, 53), 10, zoneB)
	host := answers(t, c.nodes[2].Netns, corev1.ProtocolTCP, vip(svc, 80), 10, zoneB)
	t.Logf("PreferClose: client-n3 UDP %s, n3 (host) TCP %s", lab.FormatCounts(udp), lab.FormatCounts(host))

	// zone-b loses its only ready backend: its clients fall back to every ready one.
	start := time.Now()
	if err := c.web[2].SetReady(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.web[2].SetReady(context.Background(), true) })
	check("PreferClose, web-n3 not ready", []func(map[string]int) bool{zoneA, zoneA, zoneA})
	t.Logf("zone-b fell back to zone-a's backends within %v", time.Since(start).Round(time.Millisecond))
	if err := c.web[2].SetReady(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	check("PreferClose, web-n3 ready again", []func(map[string]int) bool{zoneA, zoneA, zoneB})

	// PreferSameNode, live: this node's backend, else its zone's, else all.
	start = time.Now()
	c.setTrafficDistribution(t, "close", corev1.ServiceTrafficDistributionPreferSameNode)
	check("PreferSameNode", []func(map[string]int) bool{exactly("web-n1"), exactly("web-n2"), exactly("web-n3")})
	t.Logf("PreferClose -> PreferSameNode applied within %v", time.Since(start).Round(time.Millisecond))
	if err := c.web[0].SetReady(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.web[0].SetReady(context.Background(), true) })
	check("PreferSameNode, web-n1 not ready", []func(map[string]int) bool{exactly("web-n2"), exactly("web-n2"), exactly("web-n3")})
	if err := c.web[0].SetReady(t.Context(), true); err != nil {
		t.Fatal(err)
	}

	c.setTrafficDistribution(t, "close", corev1.ServiceTrafficDistributionPreferSameZone)
	check("PreferSameZone", []func(map[string]int) bool{zoneA, zoneA, zoneB})

	all := exactly("web-n1", "web-n2", "web-n3")
	c.setTrafficDistribution(t, "close", "")
	check("no trafficDistribution", []func(map[string]int) bool{all, all, all})
}

func ptrString(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// nodeAddresses are the addresses a node is reached at from outside: its underlay IP, a second
// address on its NIC (a node with several, e.g. an InternalIP and an ExternalIP; the programs ask
// the FIB whether a destination is local) and its public address, which the router maps 1:1 to
// the underlay IP.
func nodeAddresses(n *lab.Node) []netip.Addr {
	return []netip.Addr{n.IP, secondaryIP(n), n.PublicIP}
}

func secondaryIP(n *lab.Node) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 30, 0, byte(200 + n.Index)})
}

// dropped sends one TCP SYN (the dial gives up before the kernel's first retransmission, 1 s) or
// one UDP datagram to dst and requires that nothing answers: no connection, no refusal.
func dropped(ns lab.Netns, proto corev1.Protocol, dst netip.AddrPort) error {
	name, _, err := lab.AskHostname(ns, proto, dst, 300*time.Millisecond)
	if err == nil {
		return fmt.Errorf("%s %v: %s answered", proto, dst, name)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return fmt.Errorf("%s %v: %v, want no answer at all", proto, dst, err)
	}
	return nil
}

// testNodePortIsolationEveryAddress: NodePort isolation (listen=pool-a, then live pool-b, then
// *) on every address of every node, TCP and UDP. A closed node port is dropped on each address
// and NODEPORT_CLOSED on the node's XDP counts exactly the probes; an open one answers on each.
func testNodePortIsolationEveryAddress(t *testing.T, c *cluster) {
	ctx := t.Context()
	// The router and the public addresses (it stays: later subtests see default routes through it).
	if err := c.lab.EnableDomains(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		prefix := netip.PrefixFrom(secondaryIP(n), lab.UnderlayNet.Bits()).String()
		if _, err := n.Netns.IP(ctx, "addr", "add", prefix, "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = n.Netns.IP(context.Background(), "addr", "del", prefix, "dev", "eth0") })
	}
	svc := c.webService(t, "isolated-everywhere", lab.ServiceOptions{
		Type:        corev1.ServiceTypeNodePort,
		Annotations: map[string]string{"nodeport.openyurt.io/listen": "pool-a"},
		Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolTCP},
			{Name: "dns", Port: 53, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolUDP},
		},
	})
	ports := map[corev1.Protocol]uint16{corev1.ProtocolTCP: nodePortOf(svc, 0), corev1.ProtocolUDP: nodePortOf(svc, 1)}
	protos := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}
	closedCount := func(n *lab.Node) uint64 { return counter(t, n, metricsmap.DirNodeXDP, dropreason.NodePortClosed) }

	// settled waits until every node's underlay IP shows the expected state, so that the exact
	// round below is not racing the agents. It returns when the probe that first saw the new state
	// on n1 was sent, and the same for the last node (n3, probed after the others): upper bounds
	// of when the agents applied it (a probe that still finds the port open returns at once, one
	// that still finds it closed after 300 ms).
	// UDP first: a TCP probe
	// that caught the switch half way (its SYN let through, the rest dropped) would leave a
	// connection whose retransmissions land in the round's count; a datagram leaves nothing.
	settled := func(open map[string]bool) (first, last time.Duration) {
		t.Helper()
		start := time.Now()
		for _, n := range c.nodes {
			for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
				dst := netip.AddrPortFrom(n.IP, ports[proto])
				for {
					var err error
					sent := time.Since(start)
					if open[n.Name] {
						_, _, err = lab.AskHostname(c.lab.Outside, proto, dst, 300*time.Millisecond)
					} else if before := closedCount(n); dropped(c.lab.Outside, proto, dst) != nil || closedCount(n) == before {
						err = fmt.Errorf("not dropped in XDP")
					}
					if err == nil {
						if first == 0 {
							first = sent
						}
						last = sent
						break
					}
					if time.Since(start) > waitLimit {
						t.Fatalf("%s (%s %v) open=%v: %v", n.Name, proto, dst, open[n.Name], err)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
		return first, last
	}
	// round probes every address of every node over TCP and UDP and checks the counters.
	round := func(what string, open map[string]bool) {
		t.Helper()
		var out []string
		for _, n := range c.nodes {
			before := closedCount(n)
			probes := 0
			for _, addr := range nodeAddresses(n) {
				for _, proto := range protos {
					dst := netip.AddrPortFrom(addr, ports[proto])
					if open[n.Name] {
						counts, err := lab.CountHostnames(c.lab.Outside, proto, dst, 6, 2*time.Second)
						if err != nil {
							t.Errorf("%s: %s listens but %s %v: %v", what, n.Name, proto, dst, err)
						} else {
							out = append(out, fmt.Sprintf("%s %s %s", addr, proto, lab.FormatCounts(counts)))
						}
						continue
					}
					probes++
					if err := dropped(c.lab.Outside, proto, dst); err != nil {
						t.Errorf("%s: %s does not listen but %v", what, n.Name, err)
					}
				}
			}
			if got := closedCount(n) - before; got != uint64(probes) {
				t.Errorf("%s: %s counted %d NODEPORT_CLOSED in XDP for %d probes of a closed node port", what, n.Name, got, probes)
			}
			if !open[n.Name] {
				out = append(out, fmt.Sprintf("%s closed on %v: %d probes, %d XDP drops", n.Name, nodeAddresses(n), probes, closedCount(n)-before))
			}
		}
		t.Logf("%s:\n  %s", what, strings.Join(out, "\n  "))
	}

	matrix := []struct {
		listen string
		open   map[string]bool
	}{
		{"pool-a", map[string]bool{"n1": true, "n2": true}},
		{"pool-b", map[string]bool{"n3": true}},
		{"*", map[string]bool{"n1": true, "n2": true, "n3": true}},
	}
	for i, m := range matrix {
		if i > 0 {
			c.annotate(t, "isolated-everywhere", "nodeport.openyurt.io/listen", m.listen)
		}
		first, last := settled(m.open)
		if i > 0 {
			t.Logf("listen=%s seen on n1 by a probe sent %v after the update, on n3 %v", m.listen, first.Round(100*time.Microsecond), last.Round(100*time.Microsecond))
		}
		round("listen="+m.listen, m.open)
	}
}
