package controller

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
)

type staticModel struct{ m atomic.Pointer[domain.Model] }

func (s *staticModel) Model() *domain.Model { return s.m.Load() }
func (s *staticModel) HasSynced() bool      { return true }

func parseModel(t *testing.T, yaml string) *domain.Model {
	t.Helper()
	m, err := domain.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type fakeHostRoutes struct {
	mu   sync.Mutex
	want map[netip.Prefix]netdev.HostRoute
}

func (f *fakeHostRoutes) Sync(want map[netip.Prefix]netdev.HostRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.want = want
	return nil
}

type domainFixture struct {
	*nodeFixture
	model   *staticModel
	domains *memTable[uint32, Domain]
	host    *fakeHostRoutes
	local   []LocalState
}

func newDomainFixture(t *testing.T, yaml string, objs ...*corev1.Node) *domainFixture {
	t.Helper()
	f := &domainFixture{nodeFixture: newNodeFixture(t), model: &staticModel{},
		domains: newMemTable[uint32, Domain](), host: &fakeHostRoutes{}}
	f.model.m.Store(parseModel(t, yaml))
	f.r.cfg.Domains = f.model
	f.r.cfg.DomainTable = f.domains
	f.r.cfg.HostRoutes = f.host
	f.r.cfg.OnLocal = func(s LocalState) error { f.local = append(f.local, s); return nil }
	for _, n := range objs {
		f.seed(n)
	}
	return f
}

// pass reconciles every node and the domains, as the start-up pass does.
func (f *domainFixture) pass(t *testing.T) {
	t.Helper()
	f.reconcile(t, local.Name)
	nodes, _ := f.r.lister.List(labels.Everything())
	for _, n := range nodes {
		f.reconcile(t, n.Name)
	}
	f.reconcile(t, domainsKey)
}

// pooled is a peer in a pool with a private underlay address and, optionally, a NAT address.
func pooled(name, pool, podCIDR, ip, overwrite string, labels ...string) *corev1.Node {
	n := peerNode(name, podCIDR, ip, macB)
	n.Labels = map[string]string{}
	if pool != "" {
		n.Labels[domain.DefaultPoolLabel] = pool
	}
	for _, l := range labels {
		n.Labels[l] = ""
	}
	if overwrite != "" {
		n.Annotations[k8s.PublicIPOverwriteAnnotation] = overwrite
	}
	return n
}

const cloudSiteAPrivate = "connectivity:\n- domains: [cloud, site-a]\n  mode: private\n"

func edgeCluster(extraSelfLabels ...string) []*corev1.Node {
	return []*corev1.Node{
		pooled("self", "cloud", "10.244.0.0/24", "192.168.0.1", "203.0.113.1", extraSelfLabels...),
		pooled("b", "cloud", "10.244.1.0/24", "192.168.0.2", "203.0.113.2"),
		pooled("c", "site-a", "10.244.2.0/24", "192.168.1.3", "203.0.113.3"),
		pooled("d", "site-b", "10.244.3.0/24", "192.168.2.4", "203.0.113.4"),
	}
}

func TestDomainsEndpointsReachabilityAndHostRoutes(t *testing.T) {
	f := newDomainFixture(t, cloudSiteAPrivate, edgeCluster()...)
	f.pass(t)
	cloud, siteA, siteB := domain.ID("cloud"), domain.ID("site-a"), domain.ID("site-b")
	routes, _ := f.routes.List()
	want := map[netip.Prefix]Route{
		prefix("10.244.0.0/24"): {NodeIP: local.NodeIP, Domain: cloud, Local: true},
		// same domain and across the private line: the private underlay address
		prefix("10.244.1.0/24"): {NodeIP: nodeIP("192.168.0.2"), Domain: cloud},
		prefix("10.244.2.0/24"): {NodeIP: nodeIP("192.168.1.3"), Domain: siteA},
		// a public pair: the NAT address (what its packets come from, for anti-spoofing)
		prefix("10.244.3.0/24"): {NodeIP: nodeIP("203.0.113.4"), Domain: siteB},
	}
	if !reflect.DeepEqual(routes, want) {
		t.Errorf("routes = %v\nwant %v", routes, want)
	}
	nodes, _ := f.nodes.List()
	if nodes[nodeIP("203.0.113.4")].Domain != siteB || nodes[nodeIP("192.168.1.3")].Domain != siteA {
		t.Errorf("nodes_map domains: %v", nodes)
	}
	doms, _ := f.domains.List()
	wantDoms := map[uint32]Domain{
		cloud: {Name: "cloud", Reachable: true, Local: true},
		siteA: {Name: "site-a", Reachable: true},
		siteB: {Name: "site-b"},
	}
	if !reflect.DeepEqual(doms, wantDoms) {
		t.Errorf("domains = %v\nwant %v", doms, wantDoms)
	}
	if !reflect.DeepEqual(f.host.want, map[netip.Prefix]netdev.HostRoute{prefix("10.244.3.0/24"): {Unreachable: true}}) {
		t.Errorf("host routes = %v, want site-b unreachable only", f.host.want)
	}
	if len(f.local) != 1 || f.local[0] != (LocalState{Domain: "cloud", DomainID: cloud}) {
		t.Errorf("local states %v", f.local)
	}

	// Live: site-b gets a private line, site-a's pool joins the cloud domain.
	f.model.m.Store(parseModel(t, "domains:\n  cloud: [cloud, site-a]\nconnectivity:\n- domains: [cloud, site-b]\n  mode: private\n"))
	f.pass(t)
	routes, _ = f.routes.List()
	if r := routes[prefix("10.244.3.0/24")]; r.NodeIP != nodeIP("192.168.2.4") || r.Domain != siteB {
		t.Errorf("site-b over a private line: %v", r)
	}
	if r := routes[prefix("10.244.2.0/24")]; r.Domain != cloud {
		t.Errorf("site-a's pool regrouped into cloud: %v", r)
	}
	doms, _ = f.domains.List()
	if _, stale := doms[siteA]; stale || !doms[siteB].Reachable {
		t.Errorf("domains after the change: %v", doms)
	}
	if len(f.host.want) != 0 {
		t.Errorf("host routes after the change: %v", f.host.want)
	}
}

func TestDomainsCloudGateway(t *testing.T) {
	nodes := edgeCluster()
	nodes[1].Labels[domain.CloudGatewayLabel] = "" // b is the gateway
	f := newDomainFixture(t, cloudSiteAPrivate, nodes...)
	f.pass(t)
	want := map[netip.Prefix]netdev.HostRoute{
		prefix("10.244.2.0/24"): {Via: nodeIP("192.168.0.2")}, // site-a through the gateway
		prefix("10.244.3.0/24"): {Unreachable: true},
	}
	if !reflect.DeepEqual(f.host.want, want) {
		t.Errorf("host routes = %v\nwant %v", f.host.want, want)
	}
	if last := f.local[len(f.local)-1]; last.Gateway != nodeIP("192.168.0.2") || last.IsGateway {
		t.Errorf("local state %+v", last)
	}

	// The label moves to this node: no routes via anyone, this node forwards itself.
	delete(nodes[1].Labels, domain.CloudGatewayLabel)
	self := nodes[0].DeepCopy()
	self.Labels[domain.CloudGatewayLabel] = ""
	f.seed(nodes[1])
	f.seed(self)
	f.pass(t)
	if last := f.local[len(f.local)-1]; !last.IsGateway || last.Gateway.IsValid() {
		t.Errorf("local state after the move %+v", last)
	}
	if !reflect.DeepEqual(f.host.want, map[netip.Prefix]netdev.HostRoute{prefix("10.244.3.0/24"): {Unreachable: true}}) {
		t.Errorf("host routes after the move = %v", f.host.want)
	}
	select {
	case ev := <-f.recorder.Events:
		t.Errorf("unexpected event %q", ev)
	default:
	}
}

func TestDomainsIsolatedGatewayWarns(t *testing.T) {
	f := newDomainFixture(t, "", edgeCluster(domain.CloudGatewayLabel)...)
	f.pass(t)
	f.pass(t) // once, not on every pass
	if n := len(f.recorder.Events); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	if ev := <-f.recorder.Events; !strings.Contains(ev, ReasonCloudGatewayIsolated) || !strings.Contains(ev, "cannot carry") {
		t.Errorf("event %q", ev)
	}
}

// A second isolation after a recovery is a new condition: it is reported again.
func TestDomainsIsolatedGatewayWarnsAgainAfterRecovery(t *testing.T) {
	f := newDomainFixture(t, "", edgeCluster(domain.CloudGatewayLabel)...)
	f.pass(t)
	f.model.m.Store(parseModel(t, cloudSiteAPrivate)) // the private line is configured: recovered
	f.pass(t)
	f.model.m.Store(parseModel(t, "")) // public again: isolated again
	f.pass(t)
	if n := len(f.recorder.Events); n != 2 {
		t.Fatalf("%d events for two isolations, want 2", n)
	}
	for range 2 {
		if ev := <-f.recorder.Events; !strings.Contains(ev, ReasonCloudGatewayIsolated) {
			t.Errorf("event %q", ev)
		}
	}
}

func TestDomainsDefaultDomainKeepsFlannelEndpoints(t *testing.T) {
	// Nodes in no pool: one domain, but not one network, so public-ip-overwrite wins as in Flannel.
	f := newDomainFixture(t, "",
		pooled("self", "", "10.244.0.0/24", "192.168.0.1", ""),
		pooled("b", "", "10.244.1.0/24", "192.168.9.2", "203.0.113.2"))
	f.pass(t)
	routes, _ := f.routes.List()
	if r := routes[prefix("10.244.1.0/24")]; r.NodeIP != nodeIP("203.0.113.2") || r.Domain != 0 {
		t.Errorf("route %v, want the overwrite address in domain 0", r)
	}
	if len(f.host.want) != 0 {
		t.Errorf("host routes %v", f.host.want)
	}
}

type fakeNodeIndex struct {
	syncs   [][]NodeName
	failing error
}

func (f *fakeNodeIndex) Sync(nodes []NodeName) error {
	if f.failing != nil {
		return f.failing
	}
	f.syncs = append(f.syncs, slices.Clone(nodes))
	return nil
}

func (f *fakeNodeIndex) last() []NodeName {
	if len(f.syncs) == 0 {
		return nil
	}
	return f.syncs[len(f.syncs)-1]
}

// TestNodeIndex: the name index gets every node the maps route to, with its pool (the model's
// label) and domain (pools grouped), after each change and only then; a failed write is retried.
func TestNodeIndex(t *testing.T) {
	nodes := edgeCluster()
	f := newDomainFixture(t, "domains:\n  cloud: [cloud, cloud-2]\n"+cloudSiteAPrivate, nodes...)
	index := &fakeNodeIndex{}
	f.r.cfg.NodeIndex = index
	nodes[1].Labels[domain.DefaultPoolLabel] = "cloud-2" // grouped into domain cloud
	f.seed(nodes[1])
	f.pass(t)
	want := []NodeName{
		{Name: "b", NodeIP: nodeIP("192.168.0.2"), PodCIDR: prefix("10.244.1.0/24"), Pool: "cloud-2", Domain: "cloud"},
		{Name: "c", NodeIP: nodeIP("192.168.1.3"), PodCIDR: prefix("10.244.2.0/24"), Pool: "site-a", Domain: "site-a"},
		{Name: "d", NodeIP: nodeIP("203.0.113.4"), PodCIDR: prefix("10.244.3.0/24"), Pool: "site-b", Domain: "site-b"},
		{Name: "self", NodeIP: local.NodeIP, PodCIDR: local.PodCIDR, Pool: "cloud", Domain: "cloud", Local: true},
	}
	if !reflect.DeepEqual(index.last(), want) {
		t.Fatalf("index = %v\nwant %v", index.last(), want)
	}
	f.pass(t)
	if len(index.syncs) != 1 {
		t.Errorf("%d syncs after an unchanged pass, want 1", len(index.syncs))
	}

	// d leaves: the index follows; a failing write is retried by the next pass.
	index.failing = errors.New("read-only file system")
	f.remove(nodes[3])
	f.reconcile(t, "d")
	f.reconcile(t, domainsKey) // the index error is not the pass's
	index.failing = nil
	f.reconcile(t, domainsKey)
	if got := index.last(); len(index.syncs) != 2 || !reflect.DeepEqual(got, slices.Delete(slices.Clone(want), 2, 3)) {
		t.Errorf("index after d left = %v (%d syncs)", got, len(index.syncs))
	}

	// A resync rewrites it even when nothing changed (the file may have been lost), unless the
	// index says it is intact.
	f.r.resync(context.Background())
	f.reconcile(t, domainsKey)
	if len(index.syncs) != 3 {
		t.Errorf("%d syncs after a resync, want 3", len(index.syncs))
	}
	intact := &intactNodeIndex{fakeNodeIndex: index, intact: true}
	f.r.cfg.NodeIndex = intact
	f.r.resync(context.Background())
	f.reconcile(t, domainsKey)
	if len(index.syncs) != 3 {
		t.Errorf("%d syncs after a resync that found the index intact, want 3", len(index.syncs))
	}
	intact.intact = false // the file was removed
	f.r.resync(context.Background())
	f.reconcile(t, domainsKey)
	if len(index.syncs) != 4 {
		t.Errorf("%d syncs after a resync that found the index gone, want 4", len(index.syncs))
	}
}

// intactNodeIndex is a fakeNodeIndex that answers Intact.
type intactNodeIndex struct {
	*fakeNodeIndex
	intact bool
}

func (x *intactNodeIndex) Intact() bool { return x.intact }

// Route mode: the peers of this node's own route-mode domain get direct routes (no
// encapsulation); peers of other domains keep VXLAN, also across a private line, and a switch of
// the domain back to vxlan turns its routes back.
func TestDomainsRouteModeRoutes(t *testing.T) {
	const routeSiteA = cloudSiteAPrivate + `domains:
  site-a:
    encapsulation: route
    bgp:
      localASN: 65010
      peers:
      - {address: 192.168.1.254, peerASN: 65000}
`
	self := pooled("self", "site-a", "10.244.0.0/24", "192.168.1.1", "")
	f := newDomainFixture(t, routeSiteA, self,
		pooled("e", "site-a", "10.244.4.0/24", "192.168.1.5", ""),
		pooled("b", "cloud", "10.244.1.0/24", "192.168.0.2", ""))
	f.pass(t)
	encaps := func() map[string]Encap {
		out := map[string]Encap{}
		routes, _ := f.routes.List()
		for cidr, r := range routes {
			if !r.Local {
				out[cidr.String()] = r.Encap
			}
		}
		return out
	}
	// Make before break: e speaks, but its speaker has not said its routes are at the gateway.
	if got, want := encaps(), map[string]Encap{"10.244.4.0/24": EncapVXLAN, "10.244.1.0/24": EncapVXLAN}; !reflect.DeepEqual(got, want) {
		t.Errorf("before e's routes are advertised: %v, want %v (VXLAN until the gateway has them)", got, want)
	}
	e := pooled("e", "site-a", "10.244.4.0/24", "192.168.1.5", "")
	e.Annotations[k8s.RoutesAdvertisedAnnotation] = "site-a"
	f.seed(e)
	f.pass(t)
	if got, want := encaps(), map[string]Encap{"10.244.4.0/24": EncapDirect, "10.244.1.0/24": EncapVXLAN}; !reflect.DeepEqual(got, want) {
		t.Errorf("route encapsulations %v, want %v (site-a's peer direct, the cloud's through VXLAN)", got, want)
	}
	// An annotation naming another domain (left from before a move) is not this one's.
	e = e.DeepCopy()
	e.Annotations[k8s.RoutesAdvertisedAnnotation] = "site-b"
	f.seed(e)
	f.pass(t)
	if got := encaps()["10.244.4.0/24"]; got != EncapVXLAN {
		t.Errorf("e advertised in another domain: %v, want VXLAN", got)
	}
	e = e.DeepCopy()
	e.Annotations[k8s.RoutesAdvertisedAnnotation] = "site-a"
	f.seed(e)
	f.pass(t)

	f.model.m.Store(parseModel(t, cloudSiteAPrivate))
	f.pass(t)
	if got, want := encaps(), map[string]Encap{"10.244.4.0/24": EncapVXLAN, "10.244.1.0/24": EncapVXLAN}; !reflect.DeepEqual(got, want) {
		t.Errorf("after the switch back to vxlan: %v, want %v", got, want)
	}
}
