package externalroutes

import (
	"maps"
	"net/netip"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// countingNodes counts the listings of every node.
type countingNodes struct {
	*k8s.NodeLister
	lists int
}

func (c *countingNodes) List(selector labels.Selector) ([]*k8s.Node, error) {
	c.lists++
	return c.NodeLister.List(selector)
}

// TestFrontendWritesCostWhatChanged: the start-up pass writes every Service's frontends (10,000
// in a large cluster); a write that does not change the routed addresses (a ClusterIP, or an
// external-ip frontend rewritten) reads no node, where each used to list every node (5,000) for
// the addresses never routed. A listing of the map with no external-ip frontend (each resync, in
// most clusters) reads no node either. No device is needed: only the routed set's changes try to
// sync.
func TestFrontendWritesCostWhatChanged(t *testing.T) {
	nodes := &countingNodes{NodeLister: k8s.NewNodeLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}))}
	r := New(Config{Device: "edgeplane-none", Src: netip.MustParseAddr("10.244.1.0"), Nodes: nodes, Logger: klog.Background()})
	clusterIPs := map[service.FrontendKey]controller.ServiceEntry{}
	for i := range 100 {
		k := service.FrontendKey{VIP: netip.AddrFrom4([4]byte{10, 96, 0, byte(i)}), Port: 80, Proto: service.ProtoTCP, Scope: service.ScopeInternal}
		clusterIPs[k] = controller.ServiceEntry{ID: uint32(i + 1), Count: 1}
	}
	r.FrontendsListed(maps.All(clusterIPs))
	if nodes.lists != 0 {
		t.Errorf("a listing of 100 ClusterIP frontends listed the nodes %d times, want 0", nodes.lists)
	}
	for k, e := range clusterIPs {
		r.FrontendWritten(k, e)
	}
	if nodes.lists != 0 {
		t.Errorf("100 ClusterIP frontend writes listed the nodes %d times, want 0", nodes.lists)
	}
	ext := service.FrontendKey{VIP: netip.MustParseAddr("198.51.100.7"), Port: 80, Proto: service.ProtoTCP, Scope: service.ScopeInternal}
	r.FrontendWritten(ext, controller.ServiceEntry{ID: 200, Count: 1, Flags: service.FlagExternalIP})
	r.FrontendWritten(ext, controller.ServiceEntry{ID: 201, Count: 2, Flags: service.FlagExternalIP})
	if nodes.lists != 1 {
		t.Errorf("an external-ip frontend written twice listed the nodes %d times, want 1 (when its address came)", nodes.lists)
	}
	r.FrontendsListed(maps.All(map[service.FrontendKey]controller.ServiceEntry{ext: {ID: 201, Count: 2, Flags: service.FlagExternalIP}}))
	if nodes.lists != 2 {
		t.Errorf("a listing with the external-ip frontend listed the nodes %d times in all, want 2", nodes.lists)
	}
	r.FrontendDeleted(ext)
	if nodes.lists != 2 {
		t.Errorf("after its delete the nodes were listed %d times in all, want 2 (no address left to check)", nodes.lists)
	}
}
