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
