package externalroutes

import (
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
// the addresses never routed. No device is needed: only the routed set's changes try to sync.
func TestFrontendWritesCostWhatChanged(t *testing.T) {
	nodes := &countingNodes{NodeLister: k8s.NewNodeLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}))}
	r := New(Config{Device: "edgeplane-none", Src: netip.MustParseAddr("10.244.1.0"), Nodes: nodes, Logger: klog.Background()})
	r.FrontendsListed(nil)
	listed := nodes.lists
	for i := range 100 {
		k := service.FrontendKey{VIP: netip.AddrFrom4([4]byte{10, 96, 0, byte(i)}), Port: 80, Proto: service.ProtoTCP, Scope: service.ScopeInternal}
		r.FrontendWritten(k, controller.ServiceEntry{ID: uint32(i + 1), Count: 1})
	}
	if got := nodes.lists - listed; got != 0 {
		t.Errorf("100 ClusterIP frontend writes listed the nodes %d times, want 0", got)
	}
	ext := service.FrontendKey{VIP: netip.MustParseAddr("198.51.100.7"), Port: 80, Proto: service.ProtoTCP, Scope: service.ScopeInternal}
	r.FrontendWritten(ext, controller.ServiceEntry{ID: 200, Count: 1, Flags: service.FlagExternalIP})
	r.FrontendWritten(ext, controller.ServiceEntry{ID: 201, Count: 2, Flags: service.FlagExternalIP})
	if got := nodes.lists - listed; got != 1 {
		t.Errorf("an external-ip frontend written twice listed the nodes %d times, want 1 (when its address came)", got)
	}
	r.FrontendDeleted(ext)
	if got := nodes.lists - listed; got != 2 {
		t.Errorf("after its delete the nodes were listed %d times, want 2", got)
	}
}
