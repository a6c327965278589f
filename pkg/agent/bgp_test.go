package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/bgp"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
	"github.com/edgeplane/edgeplane/pkg/bgp/gobgp"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// The tests run the agent's speaker against a real in-process "gateway" speaker, over loopback
// only: the gateway listens on 127.0.0.1 at a free high port, the node dials it from 127.0.0.2
// (its node IP here) and does not listen.

var (
	gatewayIP   = netip.MustParseAddr("127.0.0.1")
	bgpNodeIP   = netip.MustParseAddr("127.0.0.2")
	bgpPodCIDR  = netip.MustParsePrefix("10.244.1.0/24")
	quietCIDR   = netip.MustParsePrefix("10.244.2.0/24") // a non-speaking node's
	quietNodeIP = netip.MustParseAddr("192.0.2.2")
)

const (
	gatewayASN = 65000
	siteASN    = 65001
)

// siteConfig is a route-mode domain whose labelled nodes speak to the gateway at port.
func siteConfig(port int32, password string) string {
	secret := ""
	if password != "" {
		secret = "\n        passwordSecretRef: {name: site-bgp, key: " + password + "}"
	}
	return fmt.Sprintf(`
domains:
  site:
    pools: [site]
    encapsulation: route
    bgp:
      localASN: %d
      speakerSelector:
        matchLabels: {edgeplane.io/bgp-speaker: "true"}
      advertiseNonSpeakers: true
      peers:
      - address: 127.0.0.1
        port: %d
        peerASN: %d
        gracefulRestartTime: 30%s
`, siteASN, port, gatewayASN, secret)
}

type staticDomains struct{ model *domain.Model }

func (d staticDomains) Model() *domain.Model { return d.model }
func (d staticDomains) HasSynced() bool      { return true }

type fakeSecrets struct {
	mu      sync.Mutex
	secrets map[string]*api.Secret // namespace/name
}

func (f *fakeSecrets) GetSecret(_ context.Context, namespace, name string) (*api.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.secrets[namespace+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(api.Resource("secrets"), name)
}

func bgpNode(name string, ip netip.Addr, podCIDR netip.Prefix, speaker bool) *k8s.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{domain.DefaultPoolLabel: "site"}},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR.String(), PodCIDRs: []string{podCIDR.String()}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}}},
	}
	if speaker {
		n.Labels["edgeplane.io/bgp-speaker"] = "true"
	}
	return k8stest.Node(n)
}

type bgpFixture struct {
	gateway  *gobgp.Speaker
	port     int32
	nodes    cache.Indexer
	model    *domain.Model
	secrets  *fakeSecrets
	recorder *record.FakeRecorder
	speaker  *bgpSpeaker
}

func newBGPFixture(t *testing.T, password string) *bgpFixture {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(gatewayIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	port := int32(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	gw, err := gobgp.Start(t.Context(), bgp.Config{RouterID: netip.MustParseAddr("192.0.2.254"), ASN: gatewayASN,
		ListenPort: port, ListenAddresses: []netip.Addr{gatewayIP}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(context.Background()) })
	gwPeer := bgp.PeerConfig{Address: bgpNodeIP, ASN: siteASN, Passive: true, Password: password,
		GracefulRestart: bgp.GracefulRestart{Enabled: true}}
	if err := gw.SetPeer(t.Context(), gwPeer); err != nil {
		t.Fatal(err)
	}
	key := ""
	if password != "" {
		key = "password"
	}
	model, err := domain.Parse([]byte(siteConfig(port, key)))
	if err != nil {
		t.Fatal(err)
	}
	f := &bgpFixture{
		gateway: gw, port: port, model: model,
		nodes:    cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		secrets:  &fakeSecrets{secrets: map[string]*api.Secret{}},
		recorder: record.NewFakeRecorder(100),
	}
	f.nodes.Add(bgpNode("n1", bgpNodeIP, bgpPodCIDR, true))
	f.nodes.Add(bgpNode("n2", quietNodeIP, quietCIDR, false))
	f.speaker = &bgpSpeaker{
		nodeName: "n1", nodeIP: bgpNodeIP, podCIDR: bgpPodCIDR,
		nodes: k8s.NewNodeLister(f.nodes), domains: staticDomains{model},
		secrets: f.secrets, secretNamespace: "edgeplane-system", recorder: f.recorder,
		runDir: t.TempDir(), refresh: time.Hour, start: startInProcess,
	}
	f.speaker.init()
	t.Cleanup(func() { f.speaker.stop(context.Background(), true) })
	return f
}

// setView hands the speaker n1's view, as RouteModeView would, and runs one pass.
func (f *bgpFixture) setView(t *testing.T) {
	n1, err := k8s.NewNodeLister(f.nodes).Get("n1")
	if err != nil {
		t.Fatal(err)
	}
	f.speaker.setView(f.model.NodeRouting(n1.Labels))
	f.speaker.converge(t.Context())
}

// gatewayRoutes waits until the gateway's routes from the node are want (prefix -> next hop).
func (f *bgpFixture) waitForGatewayRoutes(t *testing.T, want map[netip.Prefix]netip.Addr) []bgpstatus.Route {
	t.Helper()
	var got []bgpstatus.Route
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		peers, err := f.gateway.Snapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		if len(peers) == 1 {
			got = peers[0].ReceivedRoutes
		}
		if sameRoutes(got, want) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gateway has routes %v from the node, want %v", got, want)
	return nil
}

func sameRoutes(got []bgpstatus.Route, want map[netip.Prefix]netip.Addr) bool {
	if len(got) != len(want) {
		return false
	}
	for _, r := range got {
		if nh, ok := want[r.Prefix]; !ok || nh != r.NextHop {
			return false
		}
	}
	return true
}

// waitForReport runs passes until the report satisfies ok.
func (f *bgpFixture) waitForReport(t *testing.T, what string, ok func(*bgpstatus.Report) bool) *bgpstatus.Report {
	t.Helper()
	var r *bgpstatus.Report
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		f.speaker.converge(t.Context())
		if r, err = bgpstatus.Read(f.speaker.runDir); err == nil && ok(r) {
			return r
		}
	}
	t.Fatalf("bgp.json never showed %s: %+v, %v", what, r, err)
	return nil
}

func TestBGPSpeakerAdvertisesTheDomainsPodCIDRs(t *testing.T) {
	f := newBGPFixture(t, "")
	f.setView(t)
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, quietCIDR: quietNodeIP})

	r := f.waitForReport(t, "an established session", func(r *bgpstatus.Report) bool {
		return len(r.Peers) == 1 && r.Peers[0].State == bgpstatus.StateEstablished
	})
	if !r.Speaking || r.RouterID != bgpNodeIP || r.LocalASN != siteASN || r.Domain != "site" || len(r.Advertised) != 2 {
		t.Errorf("report: %+v", r)
	}
	if p := r.Peers[0]; p.Address != gatewayIP || p.ASN != gatewayASN || !p.GracefulRestart {
		t.Errorf("report's peer: %+v", p)
	}
	if got := f.speaker.Report(); got.Speaking != r.Speaking || len(got.Peers) != 1 {
		t.Errorf("metrics' report %+v differs from bgp.json's", got)
	}

	// Another node of the domain starts speaking: it advertises itself, so this one stops doing it.
	f.nodes.Update(bgpNode("n2", quietNodeIP, quietCIDR, true))
	f.speaker.nodeChanged()
	f.speaker.converge(t.Context())
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP})
	// A new non-speaking node appears: advertised on its behalf; deleted: withdrawn.
	n3 := bgpNode("n3", netip.MustParseAddr("192.0.2.3"), netip.MustParsePrefix("10.244.3.0/24"), false)
	f.nodes.Add(n3)
	f.speaker.converge(t.Context())
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, netip.MustParsePrefix("10.244.3.0/24"): netip.MustParseAddr("192.0.2.3")})
	f.nodes.Delete(n3)
	f.speaker.converge(t.Context())
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP})

	// The gateway drops the session: the node records one event.
	if err := f.gateway.RemovePeer(t.Context(), bgpNodeIP); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, f.recorder, ReasonBGPSessionLost, gatewayIP.String())
}

func TestBGPSpeakerStopsWhenTheDomainLeavesRouteMode(t *testing.T) {
	f := newBGPFixture(t, "")
	f.setView(t)
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, quietCIDR: quietNodeIP})

	vxlan, err := domain.Parse([]byte("domains:\n  site: [site]\n"))
	if err != nil {
		t.Fatal(err)
	}
	n1, _ := k8s.NewNodeLister(f.nodes).Get("n1")
	f.speaker.setView(vxlan.NodeRouting(n1.Labels))
	f.speaker.converge(t.Context())
	// Withdrawn at once (a NOTIFICATION), not kept stale for the restart time.
	f.waitForGatewayRoutes(t, nil)
	r, err := bgpstatus.Read(f.speaker.runDir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Speaking || len(r.Peers) != 0 || len(r.Advertised) != 0 {
		t.Errorf("report of a node that stopped speaking: %+v", r)
	}
}

func TestBGPSpeakerStopForRestartKeepsRoutesAtTheGateway(t *testing.T) {
	f := newBGPFixture(t, "")
	f.setView(t)
	want := map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, quietCIDR: quietNodeIP}
	f.waitForGatewayRoutes(t, want)
	f.waitForReport(t, "an established session", func(r *bgpstatus.Report) bool {
		return len(r.Peers) == 1 && r.Peers[0].State == bgpstatus.StateEstablished && r.Peers[0].GracefulRestart
	})

	if err := f.speaker.stop(t.Context(), false); err != nil { // SIGTERM: the agent restarts
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		peers, err := f.gateway.Snapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) == 1 && peers[0].State != bgpstatus.StateEstablished {
			routes := peers[0].ReceivedRoutes
			if !sameRoutes(routes, want) || !routes[0].Stale {
				t.Fatalf("after a restart stop the gateway has %+v, want %v kept stale", routes, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never saw the session end: %+v", peers)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The next agent: a fresh speaker on the same node refreshes them.
	f.speaker = &bgpSpeaker{nodeName: "n1", nodeIP: bgpNodeIP, podCIDR: bgpPodCIDR, nodes: f.speaker.nodes,
		domains: f.speaker.domains, secrets: f.secrets, secretNamespace: "edgeplane-system", recorder: f.recorder,
		runDir: f.speaker.runDir, refresh: time.Hour, start: startInProcess}
	f.speaker.init()
	f.setView(t)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		routes := f.waitForGatewayRoutes(t, want)
		if !routes[0].Stale && !routes[1].Stale {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("routes still stale after the restart: %+v", routes)
		}
	}
}

func TestBGPSpeakerReadsThePasswordFromASecret(t *testing.T) {
	f := newBGPFixture(t, "s3cret")
	f.setView(t) // the Secret does not exist yet
	waitForEvent(t, f.recorder, ReasonBGPConfig, `Secret edgeplane-system/site-bgp`)
	r, err := bgpstatus.Read(f.speaker.runDir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Error, "site-bgp") || len(r.Peers) != 0 {
		t.Errorf("report without the Secret: %+v", r)
	}

	f.secrets.mu.Lock()
	f.secrets.secrets["edgeplane-system/site-bgp"] = &api.Secret{Data: map[string][]byte{"password": []byte("s3cret")}}
	f.secrets.mu.Unlock()
	f.speaker.converge(t.Context()) // the tick's retry
	// TCP-MD5 on both ends: the session only comes up when the passwords agree.
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, quietCIDR: quietNodeIP})
	r = f.waitForReport(t, "the error cleared", func(r *bgpstatus.Report) bool { return r.Error == "" })
	if len(r.Peers) != 1 {
		t.Errorf("report: %+v", r)
	}
}

func waitForEvent(t *testing.T, recorder *record.FakeRecorder, reason, text string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-recorder.Events:
			if strings.Contains(e, reason) && strings.Contains(e, text) {
				return
			}
			t.Logf("other event: %s", e)
		case <-timeout:
			t.Fatalf("no %s event mentioning %q", reason, text)
		}
	}
}

func TestBGPSessionLostEventOnlyForConfiguredPeers(t *testing.T) {
	recorder := record.NewFakeRecorder(10)
	s := &bgpSpeaker{nodeName: "n1", recorder: recorder}
	s.init()
	configured := map[netip.Addr]bool{gatewayIP: true}
	s.configured.Store(&configured)
	removed := netip.MustParseAddr("127.0.0.9")
	for _, c := range []bgp.SessionChange{
		{Peer: gatewayIP, ASN: gatewayASN, State: bgpstatus.StateEstablished, Previous: bgpstatus.StateOpenConfirm},
		{Peer: removed, ASN: gatewayASN, State: bgpstatus.StateIdle, Previous: bgpstatus.StateEstablished},
		{Peer: gatewayIP, ASN: gatewayASN, State: bgpstatus.StateActive, Previous: bgpstatus.StateEstablished, Reason: "hold timer expired"},
	} {
		s.sessionChanged(c)
	}
	close(recorder.Events)
	var events []string
	for e := range recorder.Events {
		events = append(events, e)
	}
	want := "Warning BGPSessionLost BGP session with 127.0.0.1 (AS 65000) lost: now active: hold timer expired"
	if len(events) != 1 || events[0] != want {
		t.Errorf("events %q, want only %q", events, want)
	}
}

func TestBGPSpeakerWaitsForTheNodeList(t *testing.T) {
	f := newBGPFixture(t, "")
	synced := false
	f.speaker.nodesSynced = func() bool { return synced }
	f.setView(t)
	if _, err := bgpstatus.Read(f.speaker.runDir); err == nil || f.speaker.Report().Speaking {
		t.Fatal("the speaker ran before the node list synced")
	}
	synced = true
	f.speaker.converge(t.Context())
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, quietCIDR: quietNodeIP})
}

// The speaker publishes k8s.RoutesAdvertisedAnnotation once its session is up, its routes sent,
// for publishSettle (the router's time to install them), and when the
// domain leaves route mode removes it while the gateway still has the routes, withdrawing only
// after withdrawDelay (make before break: the other nodes move to VXLAN first).
func TestBGPSpeakerPublishesRoutesAdvertisedBeforeAndAfterTheRoutes(t *testing.T) {
	f := newBGPFixture(t, "")
	var mu sync.Mutex
	var published []string
	var routesAtRemoval int
	f.speaker.withdrawDelay = 300 * time.Millisecond
	f.speaker.publishSettle = time.Second
	f.speaker.annotate = func(ctx context.Context, value string) error {
		n1, err := k8s.NewNodeLister(f.nodes).Get("n1")
		if err != nil {
			return err
		}
		n1 = n1.DeepCopy()
		annotations := n1.Annotations.Map()
		if annotations == nil {
			annotations = map[string]string{}
		}
		if value == "" {
			delete(annotations, k8s.RoutesAdvertisedAnnotation)
			if peers, err := f.gateway.Snapshot(ctx); err == nil && len(peers) == 1 {
				routesAtRemoval = len(peers[0].ReceivedRoutes)
			}
		} else {
			annotations[k8s.RoutesAdvertisedAnnotation] = value
		}
		n1.Annotations = k8s.KeyValuesOf(annotations)
		mu.Lock()
		published = append(published, value)
		mu.Unlock()
		return f.nodes.Update(n1)
	}
	f.setView(t)
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, quietCIDR: quietNodeIP})
	f.waitForReport(t, "the session established", func(r *bgpstatus.Report) bool {
		return len(r.Peers) == 1 && r.Peers[0].State == bgpstatus.StateEstablished
	})
	f.speaker.converge(t.Context())
	mu.Lock()
	if up := time.Since(f.speaker.establishedSince(f.speaker.Report().Peers[0])); len(published) != 0 && up < f.speaker.publishSettle {
		t.Errorf("annotations published %v after the session came up: %q, want none before %v", up, published, f.speaker.publishSettle)
	}
	mu.Unlock()
	time.Sleep(f.speaker.publishSettle)
	f.speaker.converge(t.Context())
	mu.Lock()
	if !slices.Equal(published, []string{"site"}) {
		t.Errorf("annotations published once the session is up, the routes sent, and %v after: %q, want [site]", f.speaker.publishSettle, published)
	}
	mu.Unlock()

	vxlan, err := domain.Parse([]byte("domains:\n  site: [site]\n"))
	if err != nil {
		t.Fatal(err)
	}
	n1, _ := k8s.NewNodeLister(f.nodes).Get("n1")
	f.speaker.setView(vxlan.NodeRouting(n1.Labels))
	start := time.Now()
	f.speaker.converge(t.Context())
	if took := time.Since(start); took < f.speaker.withdrawDelay {
		t.Errorf("withdrew %v after the switch, want after the %v delay", took, f.speaker.withdrawDelay)
	}
	f.waitForGatewayRoutes(t, nil)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(published, []string{"site", ""}) || routesAtRemoval != 2 {
		t.Errorf("annotations published %q, gateway routes when it was removed %d; want [site \"\"] with the 2 routes still there",
			published, routesAtRemoval)
	}
}

// A password rotated at the router first breaks the session; the speaker reads the Secret again on
// each retry while a session is down, not only every bgpPasswordReread.
func TestBGPSpeakerRereadsThePasswordWhileASessionIsDown(t *testing.T) {
	f := newBGPFixture(t, "rotated")
	f.speaker.refresh = 100 * time.Millisecond
	f.secrets.secrets["edgeplane-system/site-bgp"] = &api.Secret{Data: map[string][]byte{"password": []byte("old")}}
	f.setView(t)
	time.Sleep(time.Second)
	f.speaker.converge(t.Context())
	if peers, _ := f.gateway.Snapshot(t.Context()); len(peers) == 1 && len(peers[0].ReceivedRoutes) != 0 {
		t.Fatalf("the gateway took routes over a session with the wrong password: %+v", peers)
	}
	f.secrets.mu.Lock()
	f.secrets.secrets["edgeplane-system/site-bgp"] = &api.Secret{Data: map[string][]byte{"password": []byte("rotated")}}
	f.secrets.mu.Unlock()
	time.Sleep(f.speaker.refresh) // the next tick
	f.speaker.converge(t.Context())
	f.waitForGatewayRoutes(t, map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, quietCIDR: quietNodeIP})
}

// startInProcess runs the node's speaker in the test's process (the agent runs it in the speaker
// process; pkg/bgp/gobgp's TestProcess covers that path).
func startInProcess(ctx context.Context, cfg bgp.Config) (bgp.Speaker, error) {
	sp, err := gobgp.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return sp, nil
}

// A speaker that ended on its own (its process crashed: Err set) is started again by the next
// pass, which advertises and peers as after an agent restart; the gateway has the routes again.
func TestBGPSpeakerStartsAgainAfterItEnded(t *testing.T) {
	f := newBGPFixture(t, "")
	f.setView(t)
	want := map[netip.Prefix]netip.Addr{bgpPodCIDR: bgpNodeIP, quietCIDR: quietNodeIP}
	f.waitForGatewayRoutes(t, want)
	f.speaker.mu.Lock()
	crashed := f.speaker.speaker
	f.speaker.mu.Unlock()
	if err := crashed.StopForRestart(t.Context()); err != nil { // as a crash leaves it: Err set
		t.Fatal(err)
	}
	if crashed.Err() == nil {
		t.Fatal("a stopped speaker reports no error")
	}
	f.speaker.converge(t.Context())
	f.speaker.mu.Lock()
	again := f.speaker.speaker
	f.speaker.mu.Unlock()
	if again == nil || again == crashed || again.Err() != nil {
		t.Fatalf("after a pass the speaker is %v (the ended one %v): want a new, running one", again, crashed)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if routes := f.waitForGatewayRoutes(t, want); !routes[0].Stale {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway's routes stayed stale after the new speaker")
		}
	}
}
