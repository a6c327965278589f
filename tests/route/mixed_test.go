package route

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// mixedConfig is routeConfig (site-a in route mode) with the cloud and site-b as vxlan domains,
// and a private line between the cloud and site-a; site-b is public to both.
var mixedConfig = strings.Replace(routeConfig, "domains:\n", "domains:\n  cloud: [cloud]\n  site-b: [site-b]\n", 1) +
	"connectivity:\n- domains: [cloud, site-a]\n  mode: private\n"

// mixed is the mixed-mode lab: c5 in the cloud (vxlan), a1 and b3 in route-mode site-a (first and
// second segment), s4 in site-b (vxlan), one pod each; the site gateway, the private line's
// router peering with it, and a Terway-like cloud node with one pod.
type mixed struct {
	lab     *lab.Lab
	gateway *lab.Gateway
	line    *lab.LineRouter
	nodes   map[string]*lab.Node
	pods    map[string]*lab.Pod
	terway  *lab.TerwayPod
}

func buildMixed(t *testing.T) *mixed {
	t.Helper()
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	g := startSite(ctx, t, l, mixedConfig)
	m := &mixed{lab: l, gateway: g, nodes: map[string]*lab.Node{}, pods: map[string]*lab.Pod{}}
	for _, x := range []struct {
		name, domain   string
		index, segment int
	}{{"c5", lab.DomainCloud, 5, 1}, {"a1", lab.DomainSiteA, 1, 1}, {"b3", lab.DomainSiteA, 3, 2}, {"s4", lab.DomainSiteB, 4, 1}} {
		labels := map[string]string{domain.DefaultPoolLabel: x.domain}
		opts := lab.NodeOptions{Domain: x.domain, Segment: x.segment, Labels: labels}
		if x.domain == lab.DomainSiteA {
			labels[segmentLabel] = fmt.Sprint(x.segment)
			// The VPC routes site-a's pod CIDRs (the line router learned them): its pods' flows
			// there keep the pods' addresses, as for a cloud whose VPC routes the site (the
			// operator's --non-masquerade-cidrs, docs/domains.md).
			// BIG TCP for its pods: their packets to the cloud cross the private line in VXLAN,
			// which cannot carry them whole (big-tcp-pods-to-the-cloud-over-vxlan).
			opts.AgentArgs = []string{"--non-masquerade-cidrs=" + lab.TerwayPodNet.String(), "--ipv4-big-tcp"}
		}
		n, err := l.AddNode(ctx, x.name, x.index, opts)
		if err != nil {
			t.Fatal(err)
		}
		m.nodes[x.name] = n
		if m.pods[x.name], err = l.AddPod(ctx, n, "p-"+x.name, lab.PodOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if m.line, err = l.StartLineRouter(ctx); err != nil {
		t.Fatal(err)
	}
	tw, err := l.AddTerwayNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.terway, err = tw.AddPod(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMixedDomains: the cloud in vxlan mode, site-a in route mode and a private line between them
// (issue 16 item 4): the line's router learns site-a's pod CIDRs from the site gateway over BGP;
// edgeplane's cloud and site-a pods reach each other over VXLAN (docs/domains.md: cross-domain
// paths stay encapsulated); a Terway-like cloud pod reaches site-a's pods by routing alone; public
// pairs stay unreachable; a bad gateway route's loop ends by TTL.
func TestMixedDomains(t *testing.T) {
	m := buildMixed(t)
	a1, b3, c5 := m.nodes["a1"], m.nodes["b3"], m.nodes["c5"]
	pa1, pb3, pc5, ps4 := m.pods["a1"], m.pods["b3"], m.pods["c5"], m.pods["s4"]
	site := []*lab.Node{a1, b3}

	t.Run("line-router-learns-site-pod-cidrs", func(t *testing.T) {
		all, took, err := m.line.WaitRoutes(t.Context(), 30*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
			for _, n := range site {
				if r[n.PodCIDR].Protocol != lab.LineRouterGatewaySession {
					return false
				}
			}
			return true
		})
		routes := map[netip.Prefix]lab.GatewayRoute{}
		for p, r := range all {
			if r.Protocol == lab.LineRouterGatewaySession {
				routes[p] = r
			}
		}
		if err != nil {
			t.Fatalf("%v\nline router's birdc show protocols:\n%s\ngateway's:\n%s", err,
				birdc(t, m.line.Bird, "show", "protocols", "all"), birdc(t, m.gateway.Bird, "show", "protocols", "all"))
		}
		t.Logf("line router learned site-a's pod CIDRs in %v: %v", took.Round(time.Millisecond), routes)
		if _, ok := routes[c5.PodCIDR]; ok {
			t.Errorf("line router has the cloud node's pod CIDR %s: only route-mode site-a's are advertised", c5.PodCIDR)
		}
		if len(routes) != len(site) {
			t.Errorf("line router's routes from the gateway %v: want exactly site-a's %d pod CIDRs", routes, len(site))
		}
		sessions, err := m.line.BGPSessions(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if s := sessions[lab.RouterIP(lab.DomainSiteA)]; s.BGPState != "Established" || s.Imported != len(site) {
			t.Errorf("line router's session with the gateway: %+v, want Established, %d routes imported", s, len(site))
		}
		kernel, err := m.line.KernelRoutes(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range site {
			if !strings.Contains(kernel, n.PodCIDR.String()+" via ") {
				t.Errorf("line router's main table lacks %s's pod CIDR %s:\n%s", n.Name, n.PodCIDR, kernel)
			}
		}
		// The other way: the gateway learned the VPC's pod subnet, for site-a's answers.
		if _, _, err := m.gateway.WaitRoutes(t.Context(), 10*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
			return r[lab.TerwayPodNet].NextHop == lab.LineRouterSiteIP
		}); err != nil {
			t.Errorf("gateway: %v", err)
		}
	})

	t.Run("cloud-and-site-pods-over-vxlan", func(t *testing.T) {
		// The design (docs/domains.md, "Which paths are unencapsulated"): a path to another domain
		// stays VXLAN, also from a route-mode domain across the private line.
		leg := watch(t, m.lab.Router(), lab.DomainCloud)
		for _, p := range [][2]*lab.Pod{{pc5, pa1}, {pa1, pc5}, {pc5, pb3}, {pb3, pc5}} {
			exchange(t, p[0], p[1])
		}
		st := leg.stop()
		if st.vxlan == 0 {
			t.Errorf("router's cloud leg: no VXLAN between the cloud and route-mode site-a: %v", st)
		}
		if len(st.plain) != 0 {
			t.Errorf("router's cloud leg: plain pod-to-pod packets %v; cross-domain paths are VXLAN", st)
		}
	})

	// Before the bulk transfers below, whose TCP teaches a1's pod the path MTU to the cloud.
	t.Run("pmtu-route-and-vxlan-paths", func(t *testing.T) { testPMTUAcrossModes(t, m) })

	t.Run("big-tcp-pods-to-the-cloud-over-vxlan", func(t *testing.T) {
		// site-a's pods send TCP in 192 KiB packets (BIG TCP, route mode); to the cloud those
		// leave in VXLAN, whose length fields end at 64 KiB: pod_egress hands them to the
		// collect_md device, which segments them first (bpf/lib/vxlan.h, vxlan_native_fits).
		if gso, _, err := pa1.Netns.LinkGSOIPv4("eth0"); err != nil || gso != bigTCPSize {
			t.Fatalf("%s's eth0: gso_ipv4_max_size %d, %v; want %d", pa1.Name, gso, err, bigTCPSize)
		}
		before, err := a1.Netns.LinkTxPackets("edgeplane.1")
		if err != nil {
			t.Fatal(err)
		}
		bulk(t, pa1, pc5, 32<<20)
		bulk(t, pc5, pa1, 32<<20)
		after, err := a1.Netns.LinkTxPackets("edgeplane.1")
		if err != nil {
			t.Fatal(err)
		}
		if after == before {
			t.Errorf("a1's VXLAN device sent nothing while its pod sent 32 MiB to the cloud: BIG packets were encapsulated in BPF")
		}
	})

	t.Run("terway-pod-reaches-site-pods-by-routing", func(t *testing.T) {
		tw := m.terway
		m.waitLineRoutes(t)
		legLine := watch(t, m.line.Netns, lab.DomainSiteA)
		for _, p := range []*lab.Pod{pa1, pb3} {
			// Terway pod -> site-a pod: the site pod's server sees the Terway pod's own address.
			dst := netip.AddrPortFrom(p.IP, 8080)
			srv, err := lab.ServeTCPEcho(p.Netns, dst)
			if err != nil {
				t.Fatal(err)
			}
			seen, err := lab.TCPEcho(tw.Netns, dst, 3*time.Second)
			srv.Close()
			if err != nil {
				t.Errorf("Terway pod %s -> %s: %v", tw.IP, p.Name, err)
			} else if seen.Addr() != tw.IP {
				t.Errorf("Terway pod %s -> %s: the server saw %s, want the pod's own address (routed, not translated)", tw.IP, p.Name, seen.Addr())
			}
			if _, err := lab.WaitPing(t.Context(), tw.Netns, p.IP, 3*time.Second); err != nil {
				t.Errorf("Terway pod -> %s: ping: %v", p.Name, err)
			}
			// Site-a pod -> Terway pod.
			back := netip.AddrPortFrom(tw.IP, 8080)
			srv, err = lab.ServeTCPEcho(tw.Netns, back)
			if err != nil {
				t.Fatal(err)
			}
			seen, err = lab.TCPEcho(p.Netns, back, 3*time.Second)
			srv.Close()
			if err != nil {
				t.Errorf("%s -> Terway pod %s: %v", p.Name, tw.IP, err)
			} else if seen.Addr() != p.IP {
				t.Errorf("%s -> Terway pod %s: the Terway pod saw %s, want the pod's own address (not masqueraded: --non-masquerade-cidrs)", p.Name, tw.IP, seen.Addr())
			}
		}
		st := legLine.stop()
		if st.plain[[2]netip.Addr{tw.IP, pa1.IP}] == 0 || st.vxlan != 0 {
			t.Errorf("line router's site-a leg: %v; want the Terway pod's plain packets to %s, no VXLAN", st, pa1.IP)
		}
		hops, err := lab.Traceroute(tw.Netns, pa1.IP, 8, 2*time.Second)
		t.Logf("traceroute Terway pod -> %s: %v (%v)", pa1.Name, hops, err)
		if want := []netip.Addr{lab.TerwayPodGateway, lab.LineRouterCloudIP, a1.IP, pa1.IP}; err != nil || !slices.Equal(hops, want) {
			t.Errorf("traceroute Terway pod -> %s: %v (%v), want %v (the Terway node's pod gateway, line router, a1, the pod)", pa1.Name, hops, err, want)
		}
	})

	t.Run("public-pairs-unreachable", func(t *testing.T) {
		for _, p := range [][2]*lab.Pod{{pa1, ps4}, {pb3, ps4}, {ps4, pa1}, {pc5, ps4}, {ps4, pc5}} {
			src, dst := p[0], p[1]
			before := counter(t, src.Node, metricsmap.DirPodEgress, dropreason.DomainUnreachable)
			start := time.Now()
			_, err := lab.TCPEcho(src.Netns, netip.AddrPortFrom(dst.IP, 8080), 2*time.Second)
			took := time.Since(start)
			if !errors.Is(err, syscall.EHOSTUNREACH) || took > 500*time.Millisecond {
				t.Errorf("%s -> %s (public pair): %v after %v, want EHOSTUNREACH at once", src.Name, dst.Name, err, took.Round(time.Millisecond))
			}
			if d := counter(t, src.Node, metricsmap.DirPodEgress, dropreason.DomainUnreachable) - before; d != 1 {
				t.Errorf("%s -> %s: DOMAIN_UNREACHABLE +%d on %s, want +1", src.Name, dst.Name, d, src.Node.Name)
			}
		}
	})

	t.Run("node-to-peer-pod-without-vxlan", func(t *testing.T) {
		// The node's own traffic to a pod of a route-mode peer follows the direct route as its
		// pods' does (the kernel routes the cluster CIDR into edgeplane.1, whose egress program
		// sends direct destinations out of the NIC unencapsulated).
		frames := watch(t, m.lab.Router(), lab.DomainSiteA)
		if _, err := lab.WaitPing(t.Context(), a1.Netns, pb3.IP, 3*time.Second); err != nil {
			t.Errorf("a1 (host) -> %s: ping: %v", pb3.Name, err)
		}
		dst := netip.AddrPortFrom(pb3.IP, 8080)
		srv, err := lab.ServeTCPEcho(pb3.Netns, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		if _, err := lab.TCPEcho(a1.Netns, dst, 3*time.Second); err != nil {
			t.Errorf("a1 (host) -> %s: %v", pb3.Name, err)
		}
		if st := frames.stop(); st.vxlan != 0 || len(st.plain) == 0 {
			t.Errorf("gateway's site-a leg: %v; want a1's packets to %s plain, no VXLAN", st, pb3.IP)
		}
	})

	t.Run("node-to-service-backend-on-a-peer", func(t *testing.T) { testNodeToService(t, m) })
	t.Run("routing-loop-ends-by-ttl", func(t *testing.T) { testRoutingLoop(t, m) })
}

// testRoutingLoop gives the gateway a bad static route: pb3's address via a1, which does not own
// it. a1 routes it back to the gateway (b3 is behind it: a1's direct route), which sends it to a1
// again: a loop between two routers, which each hop's TTL decrement must end with one ICMP time
// exceeded to the sender (from a1's kernel or the gateway's, whichever sees TTL 1; a1's
// TTL_EXCEEDED counts it when its datapath does), and then nothing more on the wire.
func testRoutingLoop(t *testing.T, m *mixed) {
	a1, pa1, pb3 := m.nodes["a1"], m.pods["a1"], m.pods["b3"]
	rt := m.lab.Router()
	bad := netip.PrefixFrom(pb3.IP, 32).String()
	if _, err := rt.IP(t.Context(), "route", "add", bad, "via", a1.IP.String()); err != nil {
		t.Fatal(err)
	}
	defer rt.IP(context.WithoutCancel(t.Context()), "route", "del", bad)
	ttlBefore := ttlExceeded(t, a1)
	leg := watchTo(t, rt, lab.DomainSiteA, pb3.IP)
	frames := watch(t, rt, lab.DomainSiteA)
	start := time.Now()
	hop, err := lab.ProbeTTL(pa1.Netns, pb3.IP, 64, 3*time.Second)
	took := time.Since(start)
	// The loop is over once the capture counts nothing more (the reader may lag the wire on a
	// loaded machine: it drains the socket's buffer first); then the wire must stay quiet.
	during := leg.settle(t)
	time.Sleep(time.Second)
	after := leg.count() - during
	leg.stop()
	st := frames.stop()
	ttl := ttlExceeded(t, a1) - ttlBefore
	t.Logf("probe with TTL 64 into the loop: %+v (%v) after %v; %d crossings of the gateway's site-a leg, %d in the second after; a1 TTL_EXCEEDED +%d",
		hop, err, took.Round(time.Microsecond), during, after, ttl)
	if st.vxlan != 0 {
		t.Errorf("%d VXLAN frames on the gateway's site-a leg: a1 must route pb3's packet by its direct route (to the gateway), not tunnel it to b3", st.vxlan)
	}
	if err != nil || hop.Reached || (hop.From != a1.IP && hop.From != lab.RouterIP(lab.DomainSiteA)) {
		t.Errorf("probe into the loop: %+v (%v), want ICMP time exceeded from a1 or the gateway", hop, err)
	}
	// Each round trip crosses the leg twice (gateway -> a1, a1 -> gateway) and costs two TTL
	// units: about 64 crossings for TTL 64.
	if during < 32 || during > 80 { // one packet
		t.Errorf("%d crossings of the gateway's site-a leg for one packet with TTL 64, want about 64 (each hop decrements once)", during)
	}
	if after != 0 {
		t.Errorf("%d more packets to %s crossed the leg in the second after the loop ended", after, pb3.IP)
	}

	// A stream into the loop: each packet costs at most its TTL in crossings, nothing builds up,
	// and the wire is quiet as soon as the stream stops.
	const packets, gap = 100, 2 * time.Millisecond
	burst := watchTo(t, rt, lab.DomainSiteA, pb3.IP)
	streamStart := time.Now()
	if err := lab.InNetns(pa1.Netns, func() error {
		c, err := net.ListenPacket("udp4", ":0") // unconnected: the time-exceeded answers do not fail the writes
		if err != nil {
			return err
		}
		defer c.Close()
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(pb3.IP, 9999))
		for range packets {
			if _, err := c.WriteTo([]byte("into the loop"), to); err != nil {
				return err
			}
			time.Sleep(gap)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	streamTook := time.Since(streamStart)
	during = burst.settle(t)
	missed, err := burst.capture.Drops() // frames the capture's buffer had no room for, any frame
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	after = burst.count() - during
	burst.stop()
	t.Logf("%d UDP packets (TTL 64) into the loop over %v: %d crossings counted (%.1f per packet), %d frames the capture missed, %d crossings in the second after",
		packets, streamTook.Round(time.Millisecond), during, float64(during)/packets, missed, after)
	if during > packets*64 || during+missed < packets*32 {
		t.Errorf("%d crossings counted (+%d frames missed) for %d packets with TTL 64, want about %d and at most %d", during, missed, packets, packets*63, packets*64)
	}
	if after != 0 {
		t.Errorf("%d packets to %s crossed the leg in the second after the stream into the loop stopped", after, pb3.IP)
	}

	// With the bad route gone the path is back.
	if _, err := rt.IP(t.Context(), "route", "del", bad); err != nil {
		t.Fatal(err)
	}
	exchange(t, pa1, pb3)
}

// ttlExceeded sums a node's TTL_EXCEEDED counters over every direction.
func ttlExceeded(t *testing.T, n *lab.Node) uint64 {
	t.Helper()
	c, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for k, v := range c {
		if k.Reason == uint32(dropreason.TTLExceeded) {
			sum += v.Packets
		}
	}
	return sum
}

// counter reads one counter of one node.
func counter(t *testing.T, n *lab.Node, dir metricsmap.Dir, reason dropreason.Reason) uint64 {
	t.Helper()
	c, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c[metricsmap.Key{Dir: dir, Reason: uint32(reason)}].Packets
}

// toAddr counts the IPv4 packets to one address crossing an interface.
type toAddr struct {
	capture *lab.Capture
	n       atomic.Int64
	quit    chan struct{}
	done    chan struct{}
}

func watchTo(t *testing.T, ns lab.Netns, ifname string, dst netip.Addr) *toAddr {
	t.Helper()
	c, err := lab.StartCapture(ns, ifname)
	if err != nil {
		t.Fatal(err)
	}
	w := &toAddr{capture: c, quit: make(chan struct{}), done: make(chan struct{})}
	want := dst.As4()
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.quit:
				return
			default:
			}
			frame, err := c.Next(100 * time.Millisecond)
			if err != nil || len(frame) < 14+20 || frame[12] != 0x08 || frame[13] != 0x00 {
				continue
			}
			if [4]byte(frame[14+16:14+20]) == want {
				w.n.Add(1)
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *toAddr) count() int { return int(w.n.Load()) }

// settle waits until the count has not moved for 300 ms and returns it; a count that keeps
// growing for 10 s (a loop that does not end) fails the test.
func (w *toAddr) settle(t *testing.T) int {
	t.Helper()
	last, since, start := w.count(), time.Now(), time.Now()
	for time.Since(since) < 300*time.Millisecond {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("packets still crossing after 10 s (%d counted): the loop does not end", w.count())
		}
		time.Sleep(50 * time.Millisecond)
		if n := w.count(); n != last {
			last, since = n, time.Now()
		}
	}
	return last
}

// stop ends the capture; safe to call twice.
func (w *toAddr) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
		<-w.done
		w.capture.Close()
	}
}

// testNodeToService: a ClusterIP Service whose one backend runs on b3. a1's own connection to it
// (the host's, translated by overlay_egress) goes to b3 on the direct path, unencapsulated, and
// the answer (to a1's overlay address, through the gateway) is translated back on a1's NIC; a
// pod of a1 and the cloud node (VXLAN across the private line) reach it too.
func testNodeToService(t *testing.T, m *mixed) {
	a1, b3, c5, pa1 := m.nodes["a1"], m.nodes["b3"], m.nodes["c5"], m.pods["a1"]
	ctx := t.Context()
	labels := map[string]string{"app": "route-backend"}
	backend := addBackend(t, m.lab, b3, "backend-b3", labels)
	svc, err := m.lab.CreateService(ctx, "route-backend", lab.ServiceOptions{
		Selector: labels,
		Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.lab.WaitReadyEndpoints(ctx, "route-backend", 1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80)
	frames := watch(t, m.lab.Router(), lab.DomainSiteA)
	for _, c := range []struct {
		name string
		ns   lab.Netns
	}{{"a1 (host)", a1.Netns}, {"a1's pod", pa1.Netns}, {"c5 (host, cloud)", c5.Netns}} {
		var name string
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if name, _, err = lab.AskHostname(c.ns, corev1.ProtocolTCP, vip, time.Second); err == nil {
				break
			}
		}
		if err != nil || name != backend.Name {
			t.Errorf("%s -> Service %s: answered by %q (%v), want %s", c.name, vip, name, err, backend.Name)
		}
	}
	st := frames.stop()
	// a1's two clients cross the gateway plain; c5's connection arrives there in VXLAN, across
	// the private line (domains stay encapsulated between them).
	if st.plain[[2]netip.Addr{pa1.IP, backend.IP}] == 0 || st.plain[[2]netip.Addr{a1.PodCIDR.Addr(), backend.IP}] == 0 {
		t.Errorf("gateway's site-a leg: %v; want a1's host (from its overlay address %s) and pod connections to %s plain", st, a1.PodCIDR.Addr(), backend.IP)
	}
}

// waitLineRoutes waits until the line router routes site-a's pod CIDRs and the gateway the
// Terway pool's subnet (both BGP sessions up), for subtests run on their own.
func (m *mixed) waitLineRoutes(t *testing.T) {
	t.Helper()
	if _, _, err := m.line.WaitRoutes(t.Context(), 30*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		return r[m.nodes["a1"].PodCIDR].Protocol == lab.LineRouterGatewaySession && r[m.nodes["b3"].PodCIDR].Protocol == lab.LineRouterGatewaySession
	}); err != nil {
		t.Fatalf("line router: %v", err)
	}
	if _, _, err := m.gateway.WaitRoutes(t.Context(), 10*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		return r[lab.TerwayPodNet].NextHop == lab.LineRouterSiteIP
	}); err != nil {
		t.Fatalf("gateway: %v", err)
	}
}
