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

// pingFrom pings each address in dsts twice from the namespace pod; fullSize pings with 1472
// bytes of ICMP payload and DF set: 1500 bytes with the headers.
func pingFrom(t *testing.T, pod string, fullSize bool, dsts ...string) {
	t.Helper()
	what, args := "ping", []string{"netns", "exec", pod, "ping", "-c", "2", "-i", "0.2", "-W", "2"}
	if fullSize {
		what, args = "full-size ping", append(args, "-M", "do", "-s", "1472")
	}
	for _, dst := range dsts {
		if out, err := exec.Command("ip", append(args, dst)...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s from %s: %v\n%s", what, dst, pod, err, out)
		}
	}
}

// checkRequestResponse runs a one-second UDP request/response test over the path name, from the
// namespace client to server at serverIP, and fails below 1,000 transactions a second.
func checkRequestResponse(t *testing.T, name, client, server, serverIP string, port int) {
	t.Helper()
	s, err := RequestResponse(Path{Name: name, Client: Endpoint{NetNS: client}, Server: Endpoint{NetNS: server, IP: serverIP}}, false, 1, "1", port)
	if err != nil {
		t.Fatal(err)
	}
	if s.TPS < 1000 {
		t.Fatalf("%s: request/response rate %.0f/s is implausibly low", name, s.TPS)
	}
	t.Logf("%s: cross-node UDP RR: %.0f tps, p50 %.1f us, p99 %.1f us", name, s.TPS, s.P50us, s.P99us)
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
	pingFrom(t, a.Pods[0], false, b.PodIP(0), b.PodIP(1), a.PodIP(1))
	checkRequestResponse(t, "flannel", a.Pods[0], b.Pods[0], b.PodIP(0), 12001)
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
	pingFrom(t, a.Pods[0], true, b.PodIP(0), b.PodIP(1), a.PodIP(1))
	if out, err := exec.Command("ip", "-n", a.NetNS, "-d", "link", "show", "type", "vxlan").CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("host-gw node has VXLAN devices (%v): %s", err, out)
	}
	checkRequestResponse(t, "flannel-hostgw", a.Pods[0], b.Pods[0], b.PodIP(0), 12002)
}
