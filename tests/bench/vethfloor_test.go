package bench

import (
	"os/exec"
	"strings"
	"testing"
)

// The veth floor must be what it claims: pods on plain veth pairs, kernel routing only, full-size
// packets unfragmented, and nothing on the way but the links and routes it wired.
func TestVethFloorForwards(t *testing.T) {
	prefix, sw := testSwitch(t)
	c, err := SetupVethFloor(prefix, sw, "br0", 21, []string{"172.31.250.31", "172.31.250.32"}, 24, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Teardown)
	a, b := c.Nodes[0], c.Nodes[1]
	if b.PodIP(0) != "10.246.22.2" {
		t.Fatalf("second node's first pod is %s, want 10.246.22.2 (nodes numbered from 21)", b.PodIP(0))
	}
	// Full-size packets: the underlay's MTU end to end.
	pingFrom(t, a.Pods[0], true, b.PodIP(0), b.PodIP(1), a.PodIP(1))
	// The pod's route to its peer is the default via the link-local gateway, the node's a /32 to
	// the pod on its host-side veth and the peer's pod CIDR via the peer's underlay address.
	for _, q := range []struct{ netns, dst, want string }{
		{a.Pods[0], b.PodIP(0), "via " + vethFloorGateway + " dev eth0"},
		{a.NetNS, b.PodIP(0), "via " + b.NodeIP + " dev eth0"},
		{b.NetNS, b.PodIP(0), "dev " + b.HostVeth(0)},
	} {
		out, err := exec.Command("ip", "-n", q.netns, "route", "get", q.dst).CombinedOutput()
		if err != nil || !strings.Contains(string(out), q.want) {
			t.Fatalf("ip -n %s route get %s = %q (%v), want %q", q.netns, q.dst, out, err, q.want)
		}
	}
	if err := c.CheckPath(a, b); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPath(b, a); err != nil {
		t.Fatal(err)
	}
	// The check sees what it claims to: a netfilter rule on the way fails it.
	if err := nsRun(b.NetNS, "iptables", "-A", "FORWARD", "-j", "ACCEPT"); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPath(a, b); err == nil || !strings.Contains(err.Error(), "netfilter") {
		t.Fatalf("CheckPath with a FORWARD rule on the peer node = %v, want a netfilter error", err)
	}
	checkRequestResponse(t, "veth-floor", a.Pods[0], b.Pods[0], b.PodIP(0), 12003)
}
