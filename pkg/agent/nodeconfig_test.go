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

// BIG TCP reaches new pods (node.json's gsoIPv4MaxSize) only when the NIC took it and the node's
// domain is in route mode: VXLAN carries no packet longer than 64 KiB.
func TestNodeConfigBigTCP(t *testing.T) {
	a := &Agent{
		cfg:      Config{NodeName: "self", BPFFSRoot: "/sys/fs/bpf/edgeplane", RunDir: t.TempDir(), ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), IPv4BigTCP: true},
		underlay: netdev.Underlay{IP: netip.MustParseAddr("192.168.60.2"), MTU: 1500},
		podCIDR:  netip.MustParsePrefix("10.244.1.0/24"),
	}
	if err := a.publishNodeConfig(); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name    string
		nicSize int32
		encap   domain.Encapsulation
		want    int
	}{
		{"route mode, the NIC refused", 0, domain.Route, 0},
		{"route mode, the NIC took it", netdev.BigTCPv4Size, domain.Route, netdev.BigTCPv4Size},
		{"vxlan", netdev.BigTCPv4Size, domain.VXLAN, 0},
		{"back to route mode", netdev.BigTCPv4Size, domain.Route, netdev.BigTCPv4Size},
	} {
		a.bigTCP.Store(step.nicSize)
		a.routing.Store(&domain.NodeRouting{Encapsulation: step.encap})
		if err := a.refreshNodeConfig(); err != nil {
			t.Fatal(err)
		}
		if c, err := cninode.Read(a.cfg.RunDir); err != nil || c.GSOIPv4MaxSize != step.want {
			t.Errorf("%s: node.json %+v, %v; want gsoIPv4MaxSize %d", step.name, c, err, step.want)
		}
	}
}
