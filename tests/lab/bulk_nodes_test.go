package lab

import (
	"net/netip"
	"testing"

	domainmodel "github.com/edgeplane/edgeplane/pkg/domain"
)

// The bulk Nodes' address plan: distinct /26s inside the /12 and outside the lab's own nodes' and
// Services' ranges, distinct underlay addresses outside every lab network.
func TestBulkNodePlan(t *testing.T) {
	const n = 1 << (BulkNodeMask - 13) // every /26 of BulkPodCIDRs
	cidrs, ips := map[netip.Prefix]bool{}, map[netip.Addr]bool{}
	for i := range n {
		c, ip := BulkNodePodCIDR(i), BulkNodeIP(i)
		if c.Bits() != BulkNodeMask || c != c.Masked() || !BulkPodCIDRs.Contains(c.Addr()) || !BulkClusterCIDR.Contains(c.Addr()) ||
			ClusterCIDR.Overlaps(c) || ServiceCIDR.Overlaps(c) || cidrs[c] {
			t.Fatalf("bulk node %d: pod CIDR %s is not a fresh /26 of %s inside %s", i, c, BulkPodCIDRs, BulkClusterCIDR)
		}
		if !BulkNodeNet.Contains(ip) || UnderlayNet.Contains(ip) || ips[ip] {
			t.Fatalf("bulk node %d: address %s is not a fresh one of %s", i, ip, BulkNodeNet)
		}
		cidrs[c], ips[ip] = true, true
	}
	if !BulkClusterCIDR.Contains(ClusterCIDR.Addr()) || BulkClusterCIDR.Bits() > ClusterCIDR.Bits() || BulkClusterCIDR.Overlaps(ServiceCIDR) {
		t.Errorf("%s must hold the lab's cluster CIDR %s and miss the service CIDR %s", BulkClusterCIDR, ClusterCIDR, ServiceCIDR)
	}
	if got, want := BulkNodePodCIDR(1), netip.MustParsePrefix("10.248.0.64/26"); got != want {
		t.Errorf("bulk node 1: %s, want %s", got, want)
	}
}

// 100 pools in 20 domains: every pool in exactly the domain BulkDomain names, as the agent's
// domain model reads the ConfigMap.
func TestBulkDomainConfig(t *testing.T) {
	m, err := domainmodel.Parse([]byte(BulkDomainConfig(100, 20)))
	if err != nil {
		t.Fatal(err)
	}
	domains := map[string]bool{}
	for p := range 100 {
		pool := BulkPool(p, 100)
		got := m.DomainOfPool(pool)
		if want := BulkDomain(p, 20); got != want {
			t.Errorf("pool %s: domain %q, want %q", pool, got, want)
		}
		domains[got] = true
	}
	if len(domains) != 20 {
		t.Errorf("%d domains, want 20", len(domains))
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP apiserver_watch_events_sizes Watch event size distribution in bytes
# TYPE apiserver_watch_events_sizes histogram
apiserver_watch_events_sizes_bucket{group="",kind="Node",version="v1",le="1024"} 3
apiserver_watch_events_sizes_sum{group="",kind="Node",version="v1"} 4.5e+06
apiserver_watch_events_sizes_count{group="",kind="Node",version="v1"} 1200
apiserver_watch_events_total{group="",kind="Node",version="v1"} 1200
`
	got := parseMetrics(text, []string{"apiserver_watch_events_sizes_sum", "apiserver_watch_events_total"})
	want := map[string]float64{
		`apiserver_watch_events_sizes_sum{group="",kind="Node",version="v1"}`: 4.5e6,
		`apiserver_watch_events_total{group="",kind="Node",version="v1"}`:     1200,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}
