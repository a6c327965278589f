package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	bin := filepath.Join(l.Config().EdgeplaneBin, "edgeplanectl")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("edgeplanectl not built (make build): %v", err)
	}
	dst := netip.MustParseAddr("10.244.200.9") // in lab.ClusterCIDR, beyond every node's pod CIDR

	cmd := exec.Command("nsenter", "--net="+node.Netns.Path(), "--", bin,
		"--bpffs-root", node.BPFFS, "monitor", "-o", "json", "--ip", dst.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	status := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			status <- sc.Text()
		}
		close(status)
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	select {
	case s := <-status:
		if !strings.HasPrefix(s, "monitoring drop events") {
			t.Fatalf("monitor: %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("monitor did not start within 5s")
	}
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
	var line string
	select {
	case line = <-lines:
	case <-time.After(time.Second):
		t.Fatalf("no event within 1s of the drop (node1 counters: %s)", countersOf(node))
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

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines { // to EOF: the pipes must be read out before Wait
	}
	var summary []string
	for s := range status {
		summary = append(summary, s)
	}
	err = cmd.Wait()
	exited = true
	if err != nil {
		t.Errorf("monitor after SIGINT: %v", err)
	}
	if len(summary) == 0 || !strings.HasSuffix(summary[len(summary)-1], " lost") {
		t.Errorf("no summary on stderr after SIGINT: %q", summary)
	}
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
