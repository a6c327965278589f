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
	// 1472 bytes of ICMP payload + 28 of headers = 1500: the underlay's MTU end to end.
	for _, dst := range []string{b.PodIP(0), b.PodIP(1), a.PodIP(1)} {
		if out, err := exec.Command("ip", "netns", "exec", a.Pods[0], "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1472", dst).CombinedOutput(); err != nil {
			t.Fatalf("full-size ping %s from %s: %v\n%s", dst, a.Pods[0], err, out)
		}
	}
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
	s, err := RequestResponse(Path{Name: "veth-floor", Client: Endpoint{NetNS: a.Pods[0]}, Server: Endpoint{NetNS: b.Pods[0], IP: b.PodIP(0)}}, false, 1, "1", 12003)
	if err != nil {
		t.Fatal(err)
	}
	if s.TPS < 1000 {
		t.Fatalf("veth floor request/response rate %.0f/s is implausibly low", s.TPS)
	}
	t.Logf("veth floor cross-node UDP RR: %.0f tps, p50 %.1f us, p99 %.1f us", s.TPS, s.P50us, s.P99us)
}
