package externalroutes

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/internal/netnstest"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// memFrontends is lb_svc_map in memory, its writes told to the hook as the reconciler does.
type memFrontends struct {
	m    map[service.FrontendKey]controller.ServiceEntry
	hook controller.FrontendHook
}

func (t memFrontends) Upsert(k service.FrontendKey, e controller.ServiceEntry) {
	t.m[k] = e
	t.hook.FrontendWritten(k, e)
}

func (t memFrontends) Delete(k service.FrontendKey) {
	delete(t.m, k)
	t.hook.FrontendDeleted(k)
}

func (t memFrontends) List() { t.hook.FrontendsListed(maps.All(t.m)) }

func serviceRoutes(t *testing.T) []string {
	t.Helper()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: netdev.ServiceRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		out = append(out, r.Dst.String())
	}
	slices.Sort(out)
	return out
}

// The node's routes to externalIPs and LoadBalancer IPs follow the INTERNAL external-ip frontends
// the reconciler writes, never cover a node's address or the cluster's CIDRs, and are restored
// from the whole map the reconciler lists (start-up, resync).
func TestExternalRoutesFollowFrontends(t *testing.T) {
	netnstest.Run(t, func() { testExternalRoutesFollowFrontends(t) })
}

func testExternalRoutesFollowFrontends(t *testing.T) {
	// a veth stands in for the VXLAN device (the kernel may lack the dummy driver)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "edgeplane.1"}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	dev, err := netlink.LinkByName("edgeplane.1")
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("10.244.1.0")
	addr, _ := netlink.ParseAddr(src.String() + "/32")
	if err := netlink.AddrAdd(dev, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(dev); err != nil {
		t.Fatal(err)
	}

	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = nodes.Add(k8stest.Node(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Annotations: map[string]string{"flannel.alpha.coreos.com/public-ip": "203.0.113.12"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.30.0.12"}}}}))
	table := memFrontends{m: map[service.FrontendKey]controller.ServiceEntry{}, hook: New(Config{
		Device: "edgeplane.1", Src: src,
		Inside: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")},
		Nodes:  k8s.NewNodeLister(nodes), Logger: klog.Background(),
	})}
	internal := func(vip string, port uint16) service.FrontendKey {
		return service.FrontendKey{VIP: netip.MustParseAddr(vip), Port: port, Proto: 6, Scope: service.ScopeInternal}
	}
	extIP := controller.ServiceEntry{ID: 1, Count: 1, Flags: service.FlagExternalIP}
	for _, k := range []service.FrontendKey{
		internal("198.51.100.2", 80), internal("198.51.100.2", 443), // one address, two frontends
		internal("198.51.100.3", 80),
		internal("172.30.0.12", 80),  // a node's address: never routed
		internal("203.0.113.12", 80), // a node's public address
		internal("10.244.7.7", 80),   // inside the cluster CIDR
	} {
		table.Upsert(k, extIP)
	}
	// Neither a ClusterIP nor the EXTERNAL scope of the address is routed by these.
	table.Upsert(internal("10.96.0.10", 80), controller.ServiceEntry{ID: 2})
	table.Upsert(service.FrontendKey{VIP: netip.MustParseAddr("198.51.100.9"), Port: 80, Proto: 6, Scope: service.ScopeExternal}, extIP)
	if got, want := serviceRoutes(t), []string{"198.51.100.2/32", "198.51.100.3/32"}; !slices.Equal(got, want) {
		t.Fatalf("routes %v, want %v", got, want)
	}
	// The address stays while one of its frontends does.
	table.Delete(internal("198.51.100.2", 80))
	table.Delete(internal("198.51.100.3", 80))
	if got, want := serviceRoutes(t), []string{"198.51.100.2/32"}; !slices.Equal(got, want) {
		t.Fatalf("after deletes: routes %v, want %v", got, want)
	}
	// Someone deletes the route (or the device is recreated): List restores it from the map.
	routes, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: netdev.ServiceRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	for _, r := range routes {
		_ = netlink.RouteDel(&r)
	}
	table.List()
	if got, want := serviceRoutes(t), []string{"198.51.100.2/32"}; !slices.Equal(got, want) {
		t.Fatalf("after List: routes %v, want %v", got, want)
	}
}
