package agent

import (
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/domain"
)

// node.json is the agent's readiness to the CNI plugin: a change of the routing before the agent
// published it (a restarted agent learns its domain's routing before its first pass is done) must
// not write it early, and after, the file follows the change.
func TestNodeConfigWaitsForPublish(t *testing.T) {
	a := &Agent{
		cfg:      Config{NodeName: "self", BPFFSRoot: "/sys/fs/bpf/edgeplane", RunDir: t.TempDir(), ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")},
		underlay: netdev.Underlay{IP: netip.MustParseAddr("192.168.60.2"), MTU: 1500},
		podCIDR:  netip.MustParsePrefix("10.244.1.0/24"),
	}
	a.routing.Store(&domain.NodeRouting{Encapsulation: domain.Route})
	if err := a.refreshNodeConfig(); err != nil {
		t.Fatal(err)
	}
	if c, err := cninode.Read(a.cfg.RunDir); err == nil {
		t.Fatalf("node.json written before the agent published it: %+v", c)
	}
	if err := a.publishNodeConfig(); err != nil {
		t.Fatal(err)
	}
	if c, err := cninode.Read(a.cfg.RunDir); err != nil || c.MTU != 1500 {
		t.Fatalf("published node.json %+v, %v; want MTU 1500 (route mode)", c, err)
	}
	a.routing.Store(&domain.NodeRouting{Encapsulation: domain.VXLAN})
	if err := a.refreshNodeConfig(); err != nil {
		t.Fatal(err)
	}
	if c, err := cninode.Read(a.cfg.RunDir); err != nil || c.MTU != 1450 {
		t.Fatalf("node.json after the switch to vxlan %+v, %v; want MTU 1450", c, err)
	}
}
