package route

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// segmentLabel says which segment a node is on, and so which of the gateway's addresses it peers
// with (the peers' nodeSelector, as in docs/domains.md's example).
const segmentLabel = "topology.edgeplane.io/segment"

// routeConfig is the domain ConfigMap: site-a in route mode, each node speaking to the gateway's
// address on its own segment, with a TCP-MD5 password. Graceful restart is off so that a stopped
// node's routes go at once.
var routeConfig = fmt.Sprintf(`domains:
  site-a:
    pools: [site-a]
    encapsulation: route
    bgp:
      localASN: %[1]d
      peers:
      - address: %[2]s
        peerASN: %[3]d
        passwordSecretRef: {name: %[6]s, key: password}
        holdTime: 9
        gracefulRestartTime: 0
        nodeSelector:
          matchLabels: {%[5]s: "1"}
      - address: %[4]s
        peerASN: %[3]d
        passwordSecretRef: {name: %[6]s, key: password}
        holdTime: 9
        gracefulRestartTime: 0
        nodeSelector:
          matchLabels: {%[5]s: "2"}
`, lab.NodeASN, lab.SegmentRouterIP(1), lab.GatewayASN, lab.SegmentRouterIP(2), segmentLabel, passwordSecret)

// Every session is signed with TCP-MD5 (RFC 2385): the gateway is configured with the password,
// the agents read it from this Secret in the agent's namespace.
const (
	passwordSecret = "site-a-bgp"
	password       = "lab-site-a-md5"
)

// gracefulConfig is routeConfig with graceful restart on: the gateway keeps a node's routes for
// up to 60 s while its agent restarts.
var gracefulConfig = strings.ReplaceAll(routeConfig, "gracefulRestartTime: 0", "gracefulRestartTime: 60")

// speakerLabel marks the nodes that speak BGP once nonSpeakerConfig selects speakers.
const speakerLabel = "edgeplane.io/bgp-speaker"

// nonSpeakerConfig is gracefulConfig with only the labelled nodes speaking, and the speakers
// advertising the other nodes' pod CIDRs with those nodes as next hops.
var nonSpeakerConfig = strings.Replace(gracefulConfig, "    bgp:\n",
	"    bgp:\n      speakerSelector:\n        matchLabels: {"+speakerLabel+": \"true\"}\n      advertiseNonSpeakers: true\n", 1)

// site is the route-mode lab: a1 and a2 on site-a's first segment, b3 on its second, one pod
// on each, the gateway up.
type site struct {
	lab     *lab.Lab
	gateway *lab.Gateway
	nodes   map[string]*lab.Node
	pods    map[string]*lab.Pod // by node name
}

// startSite starts l's site gateway with the test's TCP-MD5 password, stores the password in the
// Secret the domain configuration names and applies config before any agent starts, so that the
// agents come up in route mode.
func startSite(ctx context.Context, t *testing.T, l *lab.Lab, config string) *lab.Gateway {
	t.Helper()
	g, err := l.StartGateway(ctx, lab.GatewayOptions{Password: password})
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: passwordSecret, Namespace: lab.AgentNamespace},
		Data:       map[string][]byte{"password": []byte(password)},
	}
	if _, err := l.Client.CoreV1().Secrets(lab.AgentNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setConfig(t, l, config)
	return g
}

func build(t *testing.T) *site {
	t.Helper()
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	g := startSite(ctx, t, l, routeConfig)
	s := &site{lab: l, gateway: g, nodes: map[string]*lab.Node{}, pods: map[string]*lab.Pod{}}
	for _, x := range []struct {
		name           string
		index, segment int
	}{{"a1", 1, 1}, {"a2", 2, 1}, {"b3", 3, 2}} {
		n, err := l.AddNode(ctx, x.name, x.index, lab.NodeOptions{
			Domain:    lab.DomainSiteA,
			Segment:   x.segment,
			Labels:    map[string]string{domain.DefaultPoolLabel: lab.DomainSiteA, segmentLabel: fmt.Sprint(x.segment), speakerLabel: "true"},
			AgentArgs: []string{"--ipv4-big-tcp"},
		})
		if err != nil {
			t.Fatal(err)
		}
		s.nodes[x.name] = n
		if s.pods[x.name], err = l.AddPod(ctx, n, "p-"+x.name, lab.PodOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestRouteMode(t *testing.T) {
	s := build(t)
	a1, a2, b3 := s.nodes["a1"], s.nodes["a2"], s.nodes["b3"]
	pa1, pa2, pb3 := s.pods["a1"], s.pods["a2"], s.pods["b3"]

	t.Run("gateway-learns-every-pod-cidr", func(t *testing.T) {
		routes, took, err := s.gateway.WaitRoutes(t.Context(), 30*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
			for _, n := range s.nodes {
				if r[n.PodCIDR].NextHop != n.IP {
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("%v\nbirdc show protocols:\n%s", err, birdc(t, s.gateway, "show", "protocols", "all"))
		}
		t.Logf("gateway learned the 3 pod CIDRs in %v: %v", took.Round(time.Millisecond), routes)
		if len(routes) != len(s.nodes) {
			t.Errorf("gateway has %d routes, want one per node (%d): %v", len(routes), len(s.nodes), routes)
		}
		sessions, err := s.gateway.Sessions(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range s.nodes {
			if ss := sessions[n.IP]; ss.BGPState != "Established" || ss.Imported != 1 {
				t.Errorf("gateway's session with %s (%s): %+v, want Established, 1 route imported", n.Name, n.IP, ss)
			}
		}
		// The nodes' side, as an operator reads it: edgeplanectl bgp on each node.
		for _, n := range s.nodes {
			peer := lab.SegmentRouterIP(1)
			if lab.SiteASegment2Net.Contains(n.IP) {
				peer = lab.SegmentRouterIP(2)
			}
			r := ctlBGP(t, n, func(r *bgpstatus.Report) bool {
				return len(r.Peers) == 1 && r.Peers[0].State == bgpstatus.StateEstablished
			})
			wantAdv := []bgpstatus.Advertisement{{Prefix: n.PodCIDR, NextHop: n.IP}}
			if !r.Speaking || r.RouterID != n.IP || r.LocalASN != lab.NodeASN || !slices.Equal(r.Advertised, wantAdv) {
				t.Errorf("%s: edgeplanectl bgp: speaking %v, router ID %s, AS %d, advertised %v; want router ID %s, AS %d, advertising %v",
					n.Name, r.Speaking, r.RouterID, r.LocalASN, r.Advertised, n.IP, lab.NodeASN, wantAdv)
			}
			if len(r.Peers) != 1 || r.Peers[0].Address != peer || r.Peers[0].ASN != lab.GatewayASN || r.Peers[0].Advertised != 1 {
				t.Errorf("%s: edgeplanectl bgp peers %+v, want the gateway %s AS%d established, 1 prefix advertised", n.Name, r.Peers, peer, lab.GatewayASN)
			}
		}
	})

	t.Run("sessions-signed-with-tcp-md5", func(t *testing.T) {
		// The keepalives (hold time 9 s: one every 3 s) on both legs carry the MD5 option.
		var wg sync.WaitGroup
		for _, leg := range []string{lab.DomainSiteA, "site-a2"} {
			wg.Go(func() {
				signed, unsigned := bgpSegments(t, s.lab.Router(), leg, 5*time.Second)
				if signed == 0 || unsigned != 0 {
					t.Errorf("router leg %s: %d BGP segments with the TCP-MD5 option, %d without; want all signed", leg, signed, unsigned)
				}
			})
		}
		wg.Wait()
	})

	t.Run("cross-segment-through-the-gateway-without-vxlan", func(t *testing.T) {
		// Both of the router's site-a legs see the pods' own packets, plain IPv4.
		legs := map[string]*wire{}
		for _, leg := range []string{lab.DomainSiteA, "site-a2"} {
			legs[leg] = watch(t, s.lab.Router(), leg)
		}
		exchange(t, pa1, pb3)
		exchange(t, pb3, pa1)
		for leg, w := range legs {
			st := w.stop()
			if st.plain[[2]netip.Addr{pa1.IP, pb3.IP}] == 0 || st.plain[[2]netip.Addr{pb3.IP, pa1.IP}] == 0 {
				t.Errorf("router leg %s: no plain pod-to-pod packets both ways between %s and %s: %v", leg, pa1.IP, pb3.IP, st)
			}
			if st.vxlan != 0 {
				t.Errorf("router leg %s: %d VXLAN (UDP 8472) frames; route mode encapsulates nothing", leg, st.vxlan)
			}
		}
	})

	t.Run("same-segment-directly-without-vxlan", func(t *testing.T) {
		port := watch(t, s.lab.Switch, a2.SwitchPort)
		leg := watch(t, s.lab.Router(), lab.DomainSiteA)
		exchange(t, pa1, pa2)
		exchange(t, pa2, pa1)
		st, rt := port.stop(), leg.stop()
		if st.plain[[2]netip.Addr{pa1.IP, pa2.IP}] == 0 || st.plain[[2]netip.Addr{pa2.IP, pa1.IP}] == 0 || st.vxlan != 0 {
			t.Errorf("a2's switch port: %v; want plain pod-to-pod packets both ways, no VXLAN", st)
		}
		if n := rt.plain[[2]netip.Addr{pa1.IP, pa2.IP}] + rt.plain[[2]netip.Addr{pa2.IP, pa1.IP}]; n != 0 {
			t.Errorf("the gateway saw %d of a1 <-> a2's pod packets; on one segment they go node to node", n)
		}
	})

	t.Run("pod-pair-matrix", func(t *testing.T) {
		// Every ordered pair of pods in the route-mode domain: two on a1 (the same node), a2 (the
		// same segment), b3 (behind the gateway).
		second, err := s.lab.AddPod(t.Context(), a1, "p2-a1", lab.PodOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer second.Delete(t.Context())
		pods := []*lab.Pod{pa1, second, pa2, pb3}
		for _, from := range pods {
			for _, to := range pods {
				if from != to {
					exchange(t, from, to)
				}
			}
		}
	})

	t.Run("big-tcp-pod-to-pod", func(t *testing.T) { testBigTCP(t, s) })
	t.Run("services-over-route-paths", func(t *testing.T) { testServicesOverRoutePaths(t, s) })

	t.Run("ttl-hops", func(t *testing.T) {
		// Each node and the gateway decrement the TTL once and answer "time exceeded" from their
		// own address: TTL 1 dies at the sending pod's node, TTL 2 at the gateway across segments
		// (its leg on the sender's segment) or at the remote node on one segment.
		for _, c := range []struct {
			name     string
			from, to *lab.Pod
			want     []netip.Addr
		}{
			{"cross-segment", pa1, pb3, []netip.Addr{a1.IP, lab.SegmentRouterIP(1), b3.IP, pb3.IP}},
			{"cross-segment-back", pb3, pa1, []netip.Addr{b3.IP, lab.SegmentRouterIP(2), a1.IP, pa1.IP}},
			{"same-segment", pa1, pa2, []netip.Addr{a1.IP, a2.IP, pa2.IP}},
		} {
			t.Run(c.name, func(t *testing.T) {
				hops, err := lab.Traceroute(c.from.Netns, c.to.IP, 6, 2*time.Second)
				if err != nil || !slices.Equal(hops, c.want) {
					t.Errorf("traceroute %s -> %s: %v (%v), want %v", c.from.Name, c.to.Name, hops, err, c.want)
				}
			})
		}
	})

	t.Run("node-removed-route-withdrawn", func(t *testing.T) {
		if err := a2.Remove(t.Context()); err != nil {
			t.Fatal(err)
		}
		removed := time.Now()
		_, _, err := s.gateway.WaitRoutes(t.Context(), 2*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
			_, ok := r[a2.PodCIDR]
			return !ok && r[a1.PodCIDR].NextHop == a1.IP && r[b3.PodCIDR].NextHop == b3.IP
		})
		if err != nil {
			t.Fatalf("2 s after a2 was removed: %v", err)
		}
		t.Logf("a2's pod CIDR withdrawn at the gateway %v after its removal returned", time.Since(removed).Round(time.Millisecond))
		exchange(t, pa1, pb3) // the others go on
	})

	t.Run("graceful-restart-keeps-routes", func(t *testing.T) { testGracefulRestart(t, s) })
	t.Run("non-speaker-advertised-by-speakers", func(t *testing.T) { testNonSpeaker(t, s) })
}

// testGracefulRestart restarts b3's agent (SIGTERM, the pinned datapath keeps forwarding) under
// a UDP stream from a1's pod to b3's: the gateway keeps b3's route the whole time (stale while
// the speaker is away), the new agent's speaker takes it over, and no packet is lost.
func testGracefulRestart(t *testing.T, s *site) {
	pa1, pb3, a1, b3 := s.pods["a1"], s.pods["b3"], s.nodes["a1"], s.nodes["b3"]
	setConfig(t, s.lab, gracefulConfig)
	// The peers changed: the speakers peer again, now with graceful restart (the old sessions,
	// without it, took their routes along). Both ends of the stream must be back: the echo
	// comes back to a1's pod through the gateway too.
	if _, took, err := s.gateway.WaitRoutes(t.Context(), 30*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		sessions, err := s.gateway.Sessions(t.Context())
		if err != nil {
			return false
		}
		for _, n := range []*lab.Node{a1, b3} {
			if ss := sessions[n.IP]; ss.BGPState != "Established" || ss.NeighborRestartTime != "60" || r[n.PodCIDR].NextHop != n.IP {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("sessions with graceful restart: %v\n%s", err, birdc(t, s.gateway, "show", "protocols", "all"))
	} else {
		t.Logf("sessions renegotiated with graceful restart in %v", took.Round(time.Millisecond))
	}

	const port = 9090
	srv, err := lab.ServeUDPEcho(pb3.Netns, netip.AddrPortFrom(pb3.IP, port))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, stopStream := context.WithCancel(t.Context())
	defer stopStream()
	stream := make(chan lab.StreamStats, 1)
	go func() {
		st, err := lab.UDPStream(ctx, pa1.Netns, netip.AddrPortFrom(pb3.IP, port), 5*time.Millisecond, 300*time.Millisecond)
		if err != nil {
			t.Error(err)
		}
		stream <- st
	}()
	// Watch the gateway's table while the agent restarts.
	watchCtx, stopWatch := context.WithCancel(t.Context())
	type seen struct {
		missing, helping, polls int
		whileAway               string // the gateway's route to b3 while b3's session was down
	}
	watched := make(chan seen, 1)
	go func() {
		var w seen
		for watchCtx.Err() == nil {
			if r, err := s.gateway.Routes(watchCtx); err == nil {
				w.polls++
				if _, ok := r[b3.PodCIDR]; !ok {
					w.missing++
				}
				if sessions, err := s.gateway.Sessions(watchCtx); err == nil && sessions[b3.IP].GracefulRestartActive {
					w.helping++
					if w.whileAway == "" {
						w.whileAway, _ = s.gateway.Birdc(watchCtx, "show", "route", "for", b3.PodCIDR.Addr().String(), "all")
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		watched <- w
	}()
	time.Sleep(300 * time.Millisecond)
	if err := b3.RestartAgent(t.Context(), b3.ExtraArgs, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// The new speaker's session is up and its End-of-RIB ended the gateway's graceful restart.
	routes, took, err := s.gateway.WaitRoutes(t.Context(), 30*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		sessions, err := s.gateway.Sessions(t.Context())
		ss := sessions[b3.IP]
		return err == nil && ss.BGPState == "Established" && !ss.GracefulRestartActive && ss.Imported == 1 && r[b3.PodCIDR].NextHop == b3.IP
	})
	if err != nil {
		t.Errorf("%v\n%s", err, birdc(t, s.gateway, "show", "protocols", "all"))
	}
	time.Sleep(300 * time.Millisecond)
	stopWatch()
	w := <-watched
	stopStream()
	st := <-stream
	t.Logf("b3's session re-established and graceful restart over %v after the agent was ready again: %v", took.Round(time.Millisecond), routes[b3.PodCIDR])
	t.Logf("gateway polled %d times during the restart: route missing %d, kept by graceful restart %d; stream a1 -> b3: %v", w.polls, w.missing, w.helping, st)
	t.Logf("b3's route at the gateway while its speaker was away:\n%s", w.whileAway)
	if w.missing != 0 {
		t.Errorf("the gateway dropped b3's route in %d of %d polls while its agent restarted", w.missing, w.polls)
	}
	if w.helping == 0 {
		t.Errorf("the gateway never kept b3's route by graceful restart while its agent restarted (session down without it?)")
	}
	if len(st.Lost) != 0 || st.Received == 0 {
		t.Errorf("pod traffic across the gateway during b3's agent restart: %v; want nothing lost", st)
	}
}

// testNonSpeaker adds a4, a node of segment 1 that does not speak: with advertiseNonSpeakers the
// speakers advertise its pod CIDR with a4 as next hop, the gateway routes to it, and when a4 is
// removed the speakers withdraw it.
func testNonSpeaker(t *testing.T, s *site) {
	pb3, a1, b3 := s.pods["b3"], s.nodes["a1"], s.nodes["b3"]
	setConfig(t, s.lab, nonSpeakerConfig)
	a4, err := s.lab.AddNode(t.Context(), "a4", 4, lab.NodeOptions{
		Domain: lab.DomainSiteA,
		Labels: map[string]string{domain.DefaultPoolLabel: lab.DomainSiteA, segmentLabel: "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	pa4, err := s.lab.AddPod(t.Context(), a4, "p-a4", lab.PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	routes, took, err := s.gateway.WaitRoutes(t.Context(), 20*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		return r[a4.PodCIDR].NextHop == a4.IP && r[a1.PodCIDR].NextHop == a1.IP && r[b3.PodCIDR].NextHop == b3.IP
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, birdc(t, s.gateway, "show", "route", "all"))
	}
	t.Logf("gateway learned non-speaker a4's pod CIDR in %v: %v; every route to it:\n%s", took.Round(time.Millisecond), routes[a4.PodCIDR],
		birdc(t, s.gateway, "show", "route", "for", a4.PodCIDR.Addr().String(), "all"))
	if r := ctlBGP(t, a4, func(r *bgpstatus.Report) bool { return !r.Speaking }); r.Speaking {
		t.Errorf("a4 (no speaker label) runs a speaker: %+v", r)
	}
	exchange(t, pb3, pa4)
	exchange(t, pa4, pb3)

	if err := a4.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	if _, _, err := s.gateway.WaitRoutes(t.Context(), 2*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		_, ok := r[a4.PodCIDR]
		return !ok && r[a1.PodCIDR].NextHop == a1.IP && r[b3.PodCIDR].NextHop == b3.IP
	}); err != nil {
		t.Fatalf("2 s after non-speaker a4 was removed: %v", err)
	}
	t.Logf("a4's pod CIDR withdrawn by the speakers %v after its removal returned", time.Since(removed).Round(time.Millisecond))
}

// setConfig creates or replaces the domain ConfigMap.
func setConfig(t *testing.T, l *lab.Lab, yaml string) {
	t.Helper()
	cms := l.Client.CoreV1().ConfigMaps(lab.AgentNamespace)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-domains", Namespace: lab.AgentNamespace},
		Data:       map[string]string{domain.ConfigKey: yaml},
	}
	_, err := cms.Update(t.Context(), cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(t.Context(), cm, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// ctlBGP runs `edgeplanectl bgp -o json` on the node until the report satisfies cond (the agent
// rewrites it on changes and every 10 s), and returns the last one read.
func ctlBGP(t *testing.T, n *lab.Node, cond func(*bgpstatus.Report) bool) *bgpstatus.Report {
	t.Helper()
	var r bgpstatus.Report
	deadline := time.Now().Add(15 * time.Second)
	for {
		argv := n.CtlCommand("bgp", "-o", "json")
		out, err := exec.CommandContext(t.Context(), argv[0], argv[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v: %v", n.Name, argv, err)
		}
		r = bgpstatus.Report{}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("%s: edgeplanectl bgp -o json: %v\n%s", n.Name, err, out)
		}
		if cond(&r) || time.Now().After(deadline) {
			return &r
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func birdc(t *testing.T, g interface {
	Birdc(context.Context, ...string) (string, error)
}, args ...string) string {
	out, err := g.Birdc(context.WithoutCancel(t.Context()), args...)
	if err != nil {
		return err.Error()
	}
	return out
}

// testBigTCP: the agents run with --ipv4-big-tcp in route-mode site-a, so each node's NIC takes
// BIG TCP's 192 KiB IPv4 GSO/GRO size and so do its pods' veth pairs (node.json), whose MTU is
// the underlay's (no VXLAN in the domain); 32 MiB cross pod to pod on one segment and through the
// gateway, every byte counted at the other end.
func testBigTCP(t *testing.T, s *site) {
	for _, name := range []string{"a1", "a2", "b3"} {
		n, p := s.nodes[name], s.pods[name]
		if gso, gro, err := n.Netns.LinkGSOIPv4("eth0"); err != nil || gso != bigTCPSize || gro != bigTCPSize {
			t.Errorf("%s's NIC: gso/gro_ipv4_max_size %d/%d, %v; want %d", name, gso, gro, err, bigTCPSize)
		}
		if gso, gro, err := p.Netns.LinkGSOIPv4("eth0"); err != nil || gso != bigTCPSize || gro != bigTCPSize {
			t.Errorf("%s's eth0: gso/gro_ipv4_max_size %d/%d, %v; want %d", p.Name, gso, gro, err, bigTCPSize)
		}
		if mtu, err := p.Netns.LinkMTU("eth0"); err != nil || mtu != lab.UnderlayMTU {
			t.Errorf("%s's eth0: MTU %d, %v; want the underlay's %d (route mode)", p.Name, mtu, err, lab.UnderlayMTU)
		}
	}
	for _, pair := range [][2]*lab.Pod{{s.pods["a1"], s.pods["a2"]}, {s.pods["a1"], s.pods["b3"]}, {s.pods["b3"], s.pods["a2"]}} {
		bulk(t, pair[0], pair[1], 32<<20)
	}
}

// bigTCPSize is the IPv4 GSO/GRO size of BIG TCP (netdev.BigTCPv4Size).
const bigTCPSize = 196608

// bulk sends size bytes over TCP from one pod to a sink in the other and checks they all arrived.
func bulk(t *testing.T, from, to *lab.Pod, size int) {
	t.Helper()
	dst := netip.AddrPortFrom(to.IP, 8081)
	srv, err := lab.ServeTCPSink(to.Netns, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	took, err := lab.TCPSend(from.Netns, dst, size, 30*time.Second)
	if err != nil {
		t.Errorf("%s -> %s: %v", from.Name, to.Name, err)
		return
	}
	t.Logf("%s -> %s: %d MiB in %v", from.Name, to.Name, size>>20, took.Round(time.Millisecond))
}

// exchange proves from reaches to: a TCP echo to a server in to's pod and a ping.
func exchange(t *testing.T, from, to *lab.Pod) {
	t.Helper()
	dst := netip.AddrPortFrom(to.IP, 8080)
	srv, err := lab.ServeTCPEcho(to.Netns, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := lab.TCPEcho(from.Netns, dst, 3*time.Second); err != nil {
		t.Errorf("%s -> %s: TCP echo: %v", from.Name, to.Name, err)
	}
	if _, err := lab.WaitPing(t.Context(), from.Netns, to.IP, 3*time.Second); err != nil {
		t.Errorf("%s -> %s: ping: %v", from.Name, to.Name, err)
	}
}

// bgpSegments counts the TCP segments to or from port 179 crossing ifname for d, with and without
// the TCP-MD5 signature option (RFC 2385, kind 19).
func bgpSegments(t *testing.T, ns lab.Netns, ifname string, d time.Duration) (signed, unsigned int) {
	t.Helper()
	c, err := lab.StartCapture(ns, ifname)
	if err != nil {
		t.Error(err)
		return 0, 0
	}
	defer c.Close()
	for end := time.Now().Add(d); time.Now().Before(end); {
		frame, err := c.Next(200 * time.Millisecond)
		if err != nil || len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP {
			continue
		}
		ip := frame[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != unix.IPPROTO_TCP || len(ip) < ihl+20 {
			continue
		}
		tcp := ip[ihl:]
		if binary.BigEndian.Uint16(tcp[0:2]) != 179 && binary.BigEndian.Uint16(tcp[2:4]) != 179 {
			continue
		}
		if hasTCPOption(tcp, 19) {
			signed++
		} else {
			unsigned++
		}
	}
	return signed, unsigned
}

func hasTCPOption(tcp []byte, kind byte) bool {
	end := int(tcp[12]>>4) * 4
	if end > len(tcp) {
		return false
	}
	for i := 20; i < end; {
		switch tcp[i] {
		case 0:
			return false
		case 1:
			i++
			continue
		}
		if tcp[i] == kind {
			return true
		}
		if i+1 >= end || tcp[i+1] < 2 {
			return false
		}
		i += int(tcp[i+1])
	}
	return false
}

// wire counts what crosses one interface: plain IPv4 packets to or from a pod by (source,
// destination), and VXLAN frames (UDP to 8472).
type wire struct {
	capture *lab.Capture
	done    chan struct{}
	mu      sync.Mutex
	stats   wireStats
	quit    chan struct{}
}

type wireStats struct {
	plain map[[2]netip.Addr]int
	vxlan int
}

func (s wireStats) String() string {
	var b strings.Builder
	for k, n := range s.plain {
		fmt.Fprintf(&b, "%s->%s: %d, ", k[0], k[1], n)
	}
	return fmt.Sprintf("{plain IPv4 pod-to-pod: {%s} VXLAN: %d}", strings.TrimSuffix(b.String(), ", "), s.vxlan)
}

func watch(t *testing.T, ns lab.Netns, ifname string) *wire {
	t.Helper()
	c, err := lab.StartCapture(ns, ifname)
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{capture: c, done: make(chan struct{}), quit: make(chan struct{}), stats: wireStats{plain: map[[2]netip.Addr]int{}}}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.quit:
				return
			default:
			}
			frame, err := c.Next(100 * time.Millisecond)
			if err != nil {
				continue
			}
			w.count(frame)
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *wire) count(frame []byte) {
	if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := lab.ParseVXLAN(frame, 8472); ok {
		w.stats.vxlan++
		return
	}
	ip := frame[14:]
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	if lab.ClusterCIDR.Contains(src) || lab.ClusterCIDR.Contains(dst) {
		w.stats.plain[[2]netip.Addr{src, dst}]++
	}
}

// stop ends the capture and returns what it counted; safe to call twice.
func (w *wire) stop() wireStats {
	select {
	case <-w.quit:
	default:
		close(w.quit)
		<-w.done
		w.capture.Close()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}
