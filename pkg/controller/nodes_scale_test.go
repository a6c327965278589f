package controller

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// The NodeReconciler at the scale of issue 18 (5,000 Nodes in 100 pools, 20 domains, every pair
// of domains public): the start-up pass over the synced cache and one Node's event once every
// peer is programmed. Both must cost what the Nodes they handle cost: linear in the cluster for
// the start-up pass, independent of it for one Node.
//
//	go test -run '^$' -bench 'BenchmarkNode(Startup|Event)' -benchmem ./pkg/controller/

var scaleLocal = LocalNode{
	Name:        "scale-self",
	NodeIP:      netip.MustParseAddr("172.30.0.1"),
	PodCIDR:     netip.MustParsePrefix("10.240.0.0/24"),
	ClusterCIDR: netip.MustParsePrefix("10.240.0.0/12"),
}

// bulkPeerNode is Node i of a bulk cluster as its informer cache holds it: pool label, Flannel's
// annotations, a /26 pod CIDR (the i-th of 10.248.0.0/13) and an underlay address in 198.18.0.0/15.
func bulkPeerNode(i, pools int) *corev1.Node {
	ip := addrFromUint32(198<<24 | 18<<16 + uint32(i) + 1)
	cidr := netip.PrefixFrom(addrFromUint32(10<<24|248<<16+uint32(i)<<6), 26)
	mac := net.HardwareAddr{0x02, 0xb0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
	ann := k8s.VTEPAnnotations(k8s.VTEP{MAC: mac, IP: ip})
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:            fmt.Sprintf("bulk-node-%05d", i),
			ResourceVersion: "1",
			Labels:          map[string]string{domain.DefaultPoolLabel: fmt.Sprintf("pool-%03d", i%pools)},
			Annotations:     ann,
		},
		Spec: corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}},
	}
}

func addrFromUint32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// scaleModel groups `pools` pools into `domains` domains, every pair public (the default).
func scaleModel(tb testing.TB, pools, domains int) *domain.Model {
	members := make([][]string, domains)
	for p := range pools {
		members[p%domains] = append(members[p%domains], fmt.Sprintf("pool-%03d", p))
	}
	var sb strings.Builder
	sb.WriteString("domains:\n")
	for d := range domains {
		fmt.Fprintf(&sb, "  domain-%02d: [%s]\n", d, strings.Join(members[d], ", "))
	}
	m, err := domain.Parse([]byte(sb.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

type fixedModel struct{ m *domain.Model }

func (f fixedModel) Model() *domain.Model { return f.m }
func (f fixedModel) HasSynced() bool      { return true }

// gatewayNextHop answers every tunnel endpoint with the underlay gateway's MAC, as a node whose
// peers are all behind a router sees it.
type gatewayNextHop struct{}

func (gatewayNextHop) NextHop(netip.Addr) (net.HardwareAddr, error) { return gwMAC, nil }

// countingHostRoutes and countingNodeIndex keep the size of what they were last handed.
type countingHostRoutes struct{ routes, syncs int }

func (h *countingHostRoutes) Sync(want map[netip.Prefix]netdev.HostRoute) error {
	h.routes = len(want)
	h.syncs++
	return nil
}

type countingNodeIndex struct{ nodes int }

func (x *countingNodeIndex) Sync(nodes []NodeName) error {
	x.nodes = len(nodes)
	return nil
}

// newScaleReconciler is a NodeReconciler over a cache of n bulk Nodes plus the local Node, as
// the agent builds it (domains_map, host routes, name index), not started.
func newScaleReconciler(tb testing.TB, n int, model *domain.Model) (*NodeReconciler, cache.Indexer) {
	tb.Helper()
	informer := informers.NewSharedInformerFactory(fake.NewClientset(), 0).Core().V1().Nodes().Informer()
	indexer := informer.GetIndexer()
	for i := range n {
		if err := indexer.Add(k8stest.Node(bulkPeerNode(i, 100))); err != nil {
			tb.Fatal(err)
		}
	}
	self := bulkPeerNode(n+1, 100)
	self.Name = scaleLocal.Name
	self.Labels[domain.DefaultPoolLabel] = "pool-000"
	if err := indexer.Add(k8stest.Node(self)); err != nil {
		tb.Fatal(err)
	}
	r, err := NewNodeReconciler(NodeReconcilerConfig{
		Local: scaleLocal, Informer: informer,
		Routes: newMemTable[netip.Prefix, Route](), Nodes: newMemTable[netip.Addr, Node](),
		NextHop: gatewayNextHop{}, Recorder: &record.FakeRecorder{}, // drops events
		Domains: fixedModel{model}, DomainTable: newMemTable[uint32, Domain](), HostRoutes: &countingHostRoutes{},
		NodeIndex: &countingNodeIndex{},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return r, indexer
}

var scaleSizes = []int{1000, 5000}

// BenchmarkNodeStartup is the start-up pass (syncAll) over a synced cache of n Nodes.
func BenchmarkNodeStartup(b *testing.B) {
	model := scaleModel(b, 100, 20)
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				r, _ := newScaleReconciler(b, n, model)
				b.StartTimer()
				r.syncAll(context.Background())
				if got := len(r.peers); got != n+1 || len(r.errs) != 0 {
					b.Fatalf("%d peers programmed, want %d; errors %v", got, n+1, r.errs)
				}
			}
		})
	}
}

// BenchmarkNodeEvent is one Node's event once every Node is programmed: its key (the domains pass
// it queues is BenchmarkNodeDomainsPass; the queue merges those of a burst of events).
func BenchmarkNodeEvent(b *testing.B) {
	benchmarkSynced(b, func(b *testing.B, r *NodeReconciler, i int) {
		if err := r.reconcile(context.Background(), fmt.Sprintf("bulk-node-%05d", i)); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkNodeDomainsPass is the domains pass once every Node is programmed, with nothing changed.
func BenchmarkNodeDomainsPass(b *testing.B) {
	benchmarkSynced(b, func(b *testing.B, r *NodeReconciler, _ int) {
		if err := r.reconcile(context.Background(), domainsKey); err != nil {
			b.Fatal(err)
		}
	})
}

func benchmarkSynced(b *testing.B, op func(b *testing.B, r *NodeReconciler, i int)) {
	model := scaleModel(b, 100, 20)
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			r, _ := newScaleReconciler(b, n, model)
			r.syncAll(context.Background())
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				op(b, r, i%n)
				i++
			}
		})
	}
}

// BenchmarkNodeResyncIdle is the periodic pass once every Node is programmed, with nothing
// changed: it lists the maps, looks at every peer and writes nothing.
func BenchmarkNodeResyncIdle(b *testing.B) {
	benchmarkSynced(b, func(b *testing.B, r *NodeReconciler, _ int) {
		r.resync(context.Background())
		for r.queue.Len() > 0 {
			r.processNext(context.Background())
		}
	})
}
