package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/maps/events"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// TestMonitorShowsDrop runs `edgeplanectl monitor` in node1's netns against its bpffs, makes
// pod-1a send to an address of the cluster CIDR that no node owns, and expects the NO_ROUTE drop
// on the monitor's output within a second. Interrupting the monitor turns emission off again.
func TestMonitorShowsDrop(t *testing.T) {
	l := sharedLab(t)
	node, pod := shared.nodes[0], shared.pods[0]
	dst := netip.MustParseAddr("10.244.200.9") // in lab.ClusterCIDR, beyond every node's pod CIDR

	m := startMonitor(t, newCtl(t, l, node), "-o", "json", "--ip", dst.String())
	if c, err := events.ReadConfig(node.BPFFS); err != nil || c.Flags != events.FlagDrops {
		t.Fatalf("monitor_cfg_map while monitoring: %+v %v", c, err)
	}

	conn, err := lab.DialUDP(pod.Netns, netip.AddrPortFrom(dst, 5353), false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sent := time.Now()
	if _, err := conn.Write([]byte("nobody owns this address")); err != nil {
		t.Fatal(err)
	}
	line, err := m.next(time.Second)
	if err != nil {
		t.Fatalf("%v of the drop (node1 counters: %s)", err, countersOf(node))
	}
	took := time.Since(sent)
	var ev struct {
		Type, Reason, Direction, Interface string
		Tuple                              *struct {
			Proto, Src, Dst string
			DstPort         uint16
		}
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if ev.Type != "drop" || ev.Reason != "NO_ROUTE" || ev.Direction != "pod-egress" || ev.Interface != pod.HostVeth() ||
		ev.Tuple == nil || ev.Tuple.Src != pod.IP.String() || ev.Tuple.Dst != dst.String() || ev.Tuple.DstPort != 5353 || ev.Tuple.Proto != "udp" {
		t.Errorf("event %s, want NO_ROUTE pod-egress on %s from %s to %s:5353 udp", line, pod.HostVeth(), pod.IP, dst)
	}
	t.Logf("event %v after the send: %s", took.Round(time.Millisecond), line)

	m.stop(t)
	if c, err := events.ReadConfig(node.BPFFS); err != nil || c.Flags != 0 {
		t.Errorf("monitor_cfg_map after the monitor exited: %+v %v, want 0", c, err)
	}
}

func countersOf(n *lab.Node) string {
	c, err := n.Counters()
	if err != nil {
		return err.Error()
	}
	return fmt.Sprint(c)
}
