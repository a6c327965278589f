package bench

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"testing"
)

// testSwitch creates a switch namespace with a bridge for a standalone baseline test.
func testSwitch(t *testing.T) (prefix, ns string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	prefix = fmt.Sprintf("bt%03d", rand.Intn(1000))
	ns = prefix + "sw"
	for _, s := range [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", ns, "link", "set", "br0", "up"},
	} {
		if err := run(s...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", ns) })
	return prefix, ns
}

// The baseline must really be a working Flannel-like cluster, or the ratios mean nothing.
func TestFlannelBaselineForwards(t *testing.T) {
	prefix, sw := testSwitch(t)
	c, err := SetupFlannel(prefix, sw, "br0", []string{"172.31.250.11", "172.31.250.12"}, 24, 2, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Teardown)
	a, b := c.Nodes[0], c.Nodes[1]
	for _, dst := range []string{b.PodIP(0), b.PodIP(1), a.PodIP(1)} {
		if out, err := exec.Command("ip", "netns", "exec", a.Pods[0], "ping", "-c", "2", "-i", "0.2", "-W", "2", dst).CombinedOutput(); err != nil {
			t.Fatalf("ping %s from %s: %v\n%s", dst, a.Pods[0], err, out)
		}
	}
	s, err := RequestResponse(Path{Name: "flannel", Client: Endpoint{NetNS: a.Pods[0]}, Server: Endpoint{NetNS: b.Pods[0], IP: b.PodIP(0)}}, false, 1, "1", 12001)
	if err != nil {
		t.Fatal(err)
	}
	if s.TPS < 1000 {
		t.Fatalf("baseline request/response rate %.0f/s is implausibly low", s.TPS)
	}
	t.Logf("flannel-like cross-node UDP RR: %.0f tps, p50 %.1f us, p99 %.1f us", s.TPS, s.P50us, s.P99us)
}

// The host-gw baseline forwards pods' packets between nodes by plain routes: full-size packets
// (the underlay's MTU, no VXLAN overhead) pass with DF set, and the node has no VXLAN device.
func TestFlannelHostGWBaselineForwards(t *testing.T) {
	prefix, sw := testSwitch(t)
	c, err := SetupFlannelBackend(FlannelHostGW, 11, prefix, sw, "br0", []string{"172.31.250.21", "172.31.250.22"}, 24, 2, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Teardown)
	a, b := c.Nodes[0], c.Nodes[1]
	if b.PodIP(0) != "10.245.12.2" {
		t.Fatalf("second host-gw node's first pod is %s, want 10.245.12.2 (nodes numbered from 11)", b.PodIP(0))
	}
	// 1472 bytes of ICMP payload + 28 of headers = 1500: fits the underlay only without encapsulation.
	for _, dst := range []string{b.PodIP(0), b.PodIP(1), a.PodIP(1)} {
		if out, err := exec.Command("ip", "netns", "exec", a.Pods[0], "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1472", dst).CombinedOutput(); err != nil {
			t.Fatalf("full-size ping %s from %s: %v\n%s", dst, a.Pods[0], err, out)
		}
	}
	if out, err := exec.Command("ip", "-n", a.NetNS, "-d", "link", "show", "type", "vxlan").CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("host-gw node has VXLAN devices (%v): %s", err, out)
	}
	s, err := RequestResponse(Path{Name: "flannel-hostgw", Client: Endpoint{NetNS: a.Pods[0]}, Server: Endpoint{NetNS: b.Pods[0], IP: b.PodIP(0)}}, false, 1, "1", 12002)
	if err != nil {
		t.Fatal(err)
	}
	if s.TPS < 1000 {
		t.Fatalf("host-gw request/response rate %.0f/s is implausibly low", s.TPS)
	}
	t.Logf("flannel host-gw cross-node UDP RR: %.0f tps, p50 %.1f us, p99 %.1f us", s.TPS, s.P50us, s.P99us)
}
