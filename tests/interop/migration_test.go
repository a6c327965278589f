package interop

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	udpEchoPort = 9090
	// The label that puts edgeplane's DaemonSet on a node (deploy/base/daemonset.yaml) and, with
	// Flannel's DaemonSet patched as docs/install.md says, takes Flannel's off it.
	agentLabel     = "edgeplane.io/agent"
	streamInterval = 10 * time.Millisecond
	probeInterval  = 5 * time.Millisecond
)

// flannelIPTablesCleanup is docs/install.md's step 5 of "Moving from Flannel node by node".
var flannelIPTablesCleanup = [][]string{
	{"-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"},
	{"-t", "nat", "-F", "FLANNEL-POSTRTG"},
	{"-t", "nat", "-X", "FLANNEL-POSTRTG"},
	{"-t", "filter", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD"},
	{"-t", "filter", "-F", "FLANNEL-FWD"},
	{"-t", "filter", "-X", "FLANNEL-FWD"},
}

// migrationPod is a pod with the echo servers the test talks to.
type migrationPod struct {
	*lab.Pod
	tcp, udp *lab.Server
}

func (p *migrationPod) close() {
	p.tcp.Close()
	p.udp.Close()
}

// TestMigrateFromFlannel moves a three-node Flannel cluster (real flanneld v0.28 on every node,
// pods wired by Flannel's CNI) to edgeplane node by node, as docs/install.md's "Moving from Flannel
// node by node" says: label the node, stop flanneld (what Flannel's patched DaemonSet does), start
// edgeplane-agent, remove 10-flannel.conflist, re-create the node's pods (now wired by edgeplane's
// CNI), remove flanneld's iptables rules. Throughout each move, a UDP stream runs between pods of
// every ordered pair of nodes. Checked per move: streams whose endpoints are not on the moving
// node lose nothing; the agent takes over flanneld's leftovers (flannel.1, cni0, subnet.env gone);
// the node keeps its VTEP MAC (device and annotation), so Flannel peers' FDB entries stay as they
// are; the moved node's pods reach every pod and are reached by every pod. Measured: the moving
// node's outage, as the longest gap in echoes from its pod (the old one, then its replacement) to a
// prober on another node.
func TestMigrateFromFlannel(t *testing.T) {
	cfg := lab.ConfigForTest(t)
	flannelBin, err := lab.FlannelBinFromEnv(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewForTest(t, cfg, &labs)
	ctx := t.Context()
	var nodes []*lab.Node
	flannels := map[*lab.Node]*lab.Flannel{}
	for i := 1; i <= 3; i++ {
		n, err := l.AddNode(ctx, fmt.Sprintf("flannel%d", i), i, lab.NodeOptions{NoAgent: true})
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.StartFlannel(ctx, n, flannelBin)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		flannels[n] = f
	}
	pods := map[*lab.Node][]*migrationPod{}
	for _, n := range nodes {
		for k := 0; k < 2; k++ {
			p, err := addMigrationPod(ctx, l, n, fmt.Sprintf("pod-%d%c", n.Index, 'a'+k))
			if err != nil {
				t.Fatal(err)
			}
			pods[n] = append(pods[n], p)
		}
	}
	t.Cleanup(func() {
		for _, ps := range pods {
			for _, p := range ps {
				p.close()
			}
		}
	})
	vtep := map[*lab.Node]net.HardwareAddr{}
	for _, n := range nodes {
		mac, err := publishedVTEP(ctx, l, n)
		if err != nil {
			t.Fatal(err)
		}
		vtep[n] = mac
	}
	for _, n := range nodes {
		for _, peer := range nodes {
			if peer == n {
				continue
			}
			if _, err := eventually(convergeTimeout, func() error { return flannelKnows(ctx, n, peer, vtep[peer]) }); err != nil {
				t.Fatalf("flanneld on %s: %v", n.Name, err)
			}
		}
	}
	checkAllPairs(t, allPods(nodes, pods))
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("Flannel cluster up: %s; VTEP MACs %s", podNames(allPods(nodes, pods)), vtepNames(nodes, vtep))

	for k, moving := range nodes {
		ok := t.Run("move "+moving.Name, func(t *testing.T) {
			prober := pods[nodes[(k+1)%len(nodes)]][0]
			moveNode(t, l, nodes, moving, flannels[moving], pods, vtep, prober)
		})
		if !ok {
			t.FailNow()
		}
	}

	t.Run("all moved", func(t *testing.T) {
		checkAllPairs(t, allPods(nodes, pods))
		for _, n := range nodes {
			if mac, err := linkMAC(n.Netns, "edgeplane.1"); err != nil || mac.String() != vtep[n].String() {
				t.Errorf("%s: edgeplane.1 MAC %v (%v), want the VTEP MAC it had under Flannel, %s", n.Name, mac, err, vtep[n])
			}
		}
	})
}

// moveNode moves one node from Flannel to edgeplane under traffic and checks the outcome.
func moveNode(t *testing.T, l *lab.Lab, nodes []*lab.Node, moving *lab.Node, flannel *lab.Flannel,
	pods map[*lab.Node][]*migrationPod, vtep map[*lab.Node]net.HardwareAddr, prober *migrationPod) {
	ctx := t.Context()
	streamCtx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	type stream struct {
		from, to *migrationPod
		stats    lab.StreamStats
		err      error
	}
	var streams []*stream
	var running sync.WaitGroup
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			s := &stream{from: pods[a][0], to: pods[b][1]}
			streams = append(streams, s)
			running.Go(func() {
				s.stats, s.err = lab.UDPStream(streamCtx, s.from.Netns, s.to.udp.Addr, streamInterval, time.Second)
			})
		}
	}
	probe, err := startProbe(prober, pods[moving][0].udp.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.close()
	time.Sleep(500 * time.Millisecond)

	// docs/install.md, per node: 1. drain (the lab has no controllers: the node's pods stay, as
	// DaemonSet pods on the pod network do) 2. label (Flannel's DaemonSet stops flanneld,
	// edgeplane's starts its agent) 3. remove 10-flannel.conflist 4. re-create the pods 5. remove
	// flanneld's iptables rules.
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:"true"}}}`, agentLabel)
	if _, err := l.Client.CoreV1().Nodes().Patch(ctx, moving.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	flannel.Stop()
	agentStart := time.Now()
	if err := moving.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := moving.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(agentStart)
	if err := os.Remove(moving.ConflistDir() + "/10-flannel.conflist"); err != nil {
		t.Fatal(err)
	}
	recreateStart := time.Now()
	for i, old := range pods[moving] {
		old.close()
		if err := old.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		p, err := addMigrationPod(ctx, l, moving, old.Name)
		if err != nil {
			t.Fatal(err)
		}
		pods[moving][i] = p
		if i == 0 {
			probe.retarget(p.udp.Addr)
		}
	}
	recreated := time.Since(recreateStart)
	for _, args := range flannelIPTablesCleanup {
		if out, err := moving.Netns.Exec(ctx, "iptables", args...); err != nil {
			t.Errorf("iptables %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	time.Sleep(500 * time.Millisecond)
	stopStreams()
	running.Wait()
	outage := probe.longestGap()
	if since := probe.sinceLast(); since > 300*time.Millisecond {
		t.Errorf("no echo from %s's pod for the last %v: it never came back", moving.Name, since.Round(time.Millisecond))
	}
	t.Logf("agent ready %v after start (flanneld stopped just before); pods re-created in %v; %s's outage, seen from %s on %s: %v (longest gap in %v echoes, %d replies)",
		ready.Round(time.Millisecond), recreated.Round(time.Millisecond), moving.Name, prober.Name, prober.Node.Name,
		outage.Round(time.Millisecond), probeInterval, probe.count())

	for _, s := range streams {
		touches := s.from.Node == moving || s.to.Node == moving
		switch {
		case s.err != nil:
			t.Errorf("stream %s -> %s: %v", s.from.Name, s.to.Name, s.err)
		case !touches && (len(s.stats.Lost) > 0 || s.stats.Sent < 100):
			t.Errorf("stream %s (%s) -> %s (%s), not touching %s: %v; want none lost", s.from.Name, s.from.Node.Name,
				s.to.Name, s.to.Node.Name, moving.Name, s.stats)
		default:
			t.Logf("stream %s (%s) -> %s (%s): %v", s.from.Name, s.from.Node.Name, s.to.Name, s.to.Node.Name, s.stats)
		}
	}

	t.Run("leftovers", func(t *testing.T) {
		for _, dev := range []string{flannelDevice, "cni0"} {
			if _, err := eventually(5*time.Second, func() error {
				if _, err := linkMAC(moving.Netns, dev); err == nil {
					return fmt.Errorf("%s still on %s", dev, moving.Name)
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
		}
		if _, err := os.Stat(flannel.SubnetFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; want it removed", flannel.SubnetFile, err)
		}
		if out, err := moving.Netns.Exec(ctx, "iptables-save"); err != nil || strings.Contains(out, "FLANNEL") {
			t.Errorf("iptables after the documented cleanup (%v):\n%s", err, grepLines(out, "FLANNEL"))
		}
		logs := moving.AgentLogs(200)
		for _, want := range []string{"Took over from Flannel", "flanneld's iptables rules"} {
			if !strings.Contains(logs, want) {
				t.Errorf("agent log lacks %q:\n%s", want, logs)
			}
		}
	})

	t.Run("vtep kept", func(t *testing.T) {
		if mac, err := linkMAC(moving.Netns, "edgeplane.1"); err != nil || mac.String() != vtep[moving].String() {
			t.Errorf("edgeplane.1 MAC %v (%v), want flannel.1's %s", mac, err, vtep[moving])
		}
		if mac, err := publishedVTEP(ctx, l, moving); err != nil || mac.String() != vtep[moving].String() {
			t.Errorf("published VTEP MAC %v (%v), want %s", mac, err, vtep[moving])
		}
		for _, peer := range nodes {
			if peer == moving || peer.Agent != nil {
				continue
			}
			if err := flannelKnows(ctx, peer, moving, vtep[moving]); err != nil {
				t.Errorf("flanneld on %s: %v", peer.Name, err)
			}
		}
	})

	t.Run("reach", func(t *testing.T) {
		for _, mp := range pods[moving] {
			for _, other := range allPods(nodes, pods) {
				if other == mp {
					continue
				}
				for _, pair := range [][2]*migrationPod{{mp, other}, {other, mp}} {
					if _, err := pairCheck(ctx, pair[0].Pod, pair[1].Pod, pair[1].tcp.Addr); err != nil {
						t.Errorf("%s (%s) -> %s (%s): %v", pair[0].Name, pair[0].Node.Name, pair[1].Name, pair[1].Node.Name, err)
					}
				}
			}
		}
	})
}

func addMigrationPod(ctx context.Context, l *lab.Lab, n *lab.Node, name string) (*migrationPod, error) {
	p, err := l.AddPod(ctx, n, name, lab.PodOptions{})
	if err != nil {
		return nil, err
	}
	tcp, err := lab.ServeTCPEcho(p.Netns, netip.AddrPortFrom(p.IP, echoPort))
	if err != nil {
		return nil, err
	}
	udp, err := lab.ServeUDPEcho(p.Netns, netip.AddrPortFrom(p.IP, udpEchoPort))
	if err != nil {
		tcp.Close()
		return nil, err
	}
	return &migrationPod{Pod: p, tcp: tcp, udp: udp}, nil
}

func allPods(nodes []*lab.Node, pods map[*lab.Node][]*migrationPod) []*migrationPod {
	var out []*migrationPod
	for _, n := range nodes {
		out = append(out, pods[n]...)
	}
	return out
}

func podNames(pods []*migrationPod) string {
	var s []string
	for _, p := range pods {
		s = append(s, fmt.Sprintf("%s=%s@%s", p.Name, p.IP, p.Node.Name))
	}
	return strings.Join(s, " ")
}

// checkAllPairs checks every ordered pair of pods (ping, TCP echo without NAT).
func checkAllPairs(t *testing.T, pods []*migrationPod) {
	t.Helper()
	for _, src := range pods {
		for _, dst := range pods {
			if src == dst {
				continue
			}
			if _, err := pairCheck(t.Context(), src.Pod, dst.Pod, dst.tcp.Addr); err != nil {
				t.Errorf("%s (%s) -> %s (%s): %v", src.Name, src.Node.Name, dst.Name, dst.Node.Name, err)
			}
		}
	}
}

// probe sends a numbered datagram every probeInterval from a pod to a UDP echo server whose
// address can change (a re-created pod), and records when echoes come back.
type probe struct {
	conn    *net.UDPConn
	target  atomic.Pointer[netip.AddrPort]
	stop    chan struct{}
	done    sync.WaitGroup
	mu      sync.Mutex
	replies []time.Time
}

func startProbe(from *migrationPod, to netip.AddrPort) (*probe, error) {
	c, err := lab.ListenUDP(from.Netns, netip.AddrPortFrom(from.IP, 0))
	if err != nil {
		return nil, err
	}
	p := &probe{conn: c, stop: make(chan struct{})}
	p.target.Store(&to)
	p.done.Go(func() {
		buf := make([]byte, 64)
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if n >= 8 {
				p.mu.Lock()
				p.replies = append(p.replies, time.Now())
				p.mu.Unlock()
			}
		}
	})
	p.done.Go(func() {
		tick := time.NewTicker(probeInterval)
		defer tick.Stop()
		payload := make([]byte, 8)
		var seq uint64
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			seq++
			binary.BigEndian.PutUint64(payload, seq)
			_, _ = c.WriteToUDPAddrPort(payload, *p.target.Load())
		}
	})
	return p, nil
}

func (p *probe) retarget(to netip.AddrPort) { p.target.Store(&to) }

func (p *probe) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.conn.Close()
	p.done.Wait()
}

func (p *probe) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.replies)
}

// sinceLast is how long ago the last echo came (forever: none).
func (p *probe) sinceLast() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.replies) == 0 {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(p.replies[len(p.replies)-1])
}

// longestGap is the longest time between two consecutive echoes (the outage), measured until the
// last echo.
func (p *probe) longestGap() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var longest time.Duration
	for i := 1; i < len(p.replies); i++ {
		if d := p.replies[i].Sub(p.replies[i-1]); d > longest {
			longest = d
		}
	}
	return longest
}

func vtepNames(nodes []*lab.Node, vtep map[*lab.Node]net.HardwareAddr) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.Name+"="+vtep[n].String())
	}
	return strings.Join(s, " ")
}
