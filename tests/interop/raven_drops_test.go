package interop

// What the Raven test watches on the edgeplane nodes: the drop counters of the paths Raven's
// packets cross, and `edgeplanectl monitor`'s drop events, told apart as Raven's or other traffic.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

func readCounters(t *testing.T, nodes []*lab.Node) map[*lab.Node]map[metricsmap.Key]metricsmap.Metric {
	t.Helper()
	out := map[*lab.Node]map[metricsmap.Key]metricsmap.Metric{}
	for _, n := range nodes {
		c, err := n.Counters()
		if err != nil {
			t.Fatal(err)
		}
		out[n] = c
	}
	return out
}

// ravenPaths are the directions Raven's packets cross on an edgeplane node: the underlay NIC both
// ways, and the overlay ingress where a Raven packet taken for edgeplane's VXLAN would land.
var ravenPaths = []metricsmap.Dir{metricsmap.DirNodeIn, metricsmap.DirNodeOut, metricsmap.DirOverlayIn}

// checkNoDrops fails for any drop counter of ravenPaths that grew between two readings, and logs
// how every counter moved (drops elsewhere are pods' and the overlay device's own traffic, which
// the drop monitor attributes).
func checkNoDrops(t *testing.T, nodes []*lab.Node, before, after map[*lab.Node]map[metricsmap.Key]metricsmap.Metric) {
	t.Helper()
	for _, n := range nodes {
		var forwarded, drops []string
		for k, m := range after[n] {
			delta := m.Packets - before[n][k].Packets
			if m.Packets < before[n][k].Packets || delta == 0 {
				continue
			}
			line := fmt.Sprintf("%s/%s +%d", k.Dir, dropreason.Reason(k.Reason), delta)
			if r := dropreason.Reason(k.Reason); r == dropreason.Forwarded || r == dropreason.ICMPSent {
				forwarded = append(forwarded, line)
				continue
			}
			drops = append(drops, line)
			if slices.Contains(ravenPaths, k.Dir) {
				t.Errorf("%s counted drops where Raven's packets pass: %s", n.Name, line)
			}
		}
		slices.Sort(forwarded)
		slices.Sort(drops)
		if len(drops) == 0 {
			drops = []string{"none"}
		}
		t.Logf("%s counters: forwarded %s; drops %s", n.Name, strings.Join(forwarded, ", "), strings.Join(drops, ", "))
	}
}

// dropMonitor runs `edgeplanectl monitor -o json` (drop events) in a node's namespace.
type dropMonitor struct {
	node   *lab.Node
	cmd    *exec.Cmd
	events chan dropEvent
	once   sync.Once
	got    []dropEvent
}

// dropEvent is the part of a `monitor -o json` line (docs/cli.md) the test looks at.
type dropEvent struct {
	Reason    string      `json:"reason"`
	Direction string      `json:"direction"`
	Interface string      `json:"interface"`
	Tuple     *eventTuple `json:"tuple"`
	Inner     *eventTuple `json:"inner"`
}

type eventTuple struct {
	Proto   string `json:"proto"`
	Src     string `json:"src"`
	Dst     string `json:"dst"`
	SrcPort uint16 `json:"srcPort"`
	DstPort uint16 `json:"dstPort"`
}

func (e dropEvent) String() string {
	s := fmt.Sprintf("%s %s on %s", e.Direction, e.Reason, e.Interface)
	for _, tu := range []*eventTuple{e.Tuple, e.Inner} {
		if tu != nil {
			s += fmt.Sprintf(" [%s %s:%d -> %s:%d]", tu.Proto, tu.Src, tu.SrcPort, tu.Dst, tu.DstPort)
		}
	}
	if e.Tuple == nil {
		s += " (not IPv4)"
	}
	return s
}

// isRaven tells a Raven packet: UDP 4472 outside, or raven0's addresses inside.
func (e dropEvent) isRaven() bool {
	for _, tu := range []*eventTuple{e.Tuple, e.Inner} {
		if tu == nil {
			continue
		}
		if tu.SrcPort == ravenPort || tu.DstPort == ravenPort {
			return true
		}
		for _, a := range []string{tu.Src, tu.Dst} {
			if ip, err := netip.ParseAddr(a); err == nil && ravenNet.Contains(ip) {
				return true
			}
		}
	}
	return e.Interface == ravenDevice
}

func startDropMonitor(l *lab.Lab, n *lab.Node) (*dropMonitor, error) {
	bin := filepath.Join(l.Config().EdgeplaneBin, "edgeplanectl")
	cmd := exec.Command("nsenter", "--net="+n.Netns.Path(), "--", bin, "--bpffs-root", n.BPFFS, "monitor", "-o", "json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("edgeplanectl monitor on %s: %w", n.Name, err)
	}
	m := &dropMonitor{node: n, cmd: cmd, events: make(chan dropEvent, 4096)}
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case started <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		defer close(m.events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev dropEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				m.events <- ev
			}
		}
	}()
	select {
	case s := <-started:
		if !strings.HasPrefix(s, "monitoring drop events") {
			m.stop()
			return nil, fmt.Errorf("edgeplanectl monitor on %s: %s", n.Name, s)
		}
	case <-time.After(10 * time.Second):
		m.stop()
		return nil, fmt.Errorf("edgeplanectl monitor on %s did not start within 10s", n.Name)
	}
	return m, nil
}

// stop interrupts the monitor (it turns emission off again) and returns what it printed.
func (m *dropMonitor) stop() []dropEvent {
	m.once.Do(func() {
		_ = m.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() {
			for ev := range m.events {
				m.got = append(m.got, ev)
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = m.cmd.Process.Kill()
			<-done
		}
		_ = m.cmd.Wait()
	})
	return m.got
}

// summarize counts repeated lines: "a ×3, b".
func summarize(lines []string) string {
	count := map[string]int{}
	var order []string
	for _, l := range lines {
		if count[l] == 0 {
			order = append(order, l)
		}
		count[l]++
	}
	var out []string
	for _, l := range order {
		if count[l] > 1 {
			l = fmt.Sprintf("%s x%d", l, count[l])
		}
		out = append(out, l)
	}
	return strings.Join(out, "; ")
}
