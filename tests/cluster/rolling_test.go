package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// TestRollingUpdate: with traffic flowing pod -> Service across nodes (from node1's and node3's
// pods, a long-lived TCP stream to each backend exchanging a line every 20 ms, and short
// connections one after the other), the agent DaemonSet
// is moved to a second image reference the documented way (the overlay's image changed, `kubectl
// apply -k`, `kubectl rollout status`): every agent pod is replaced, and no connect fails, no
// stream breaks or loses a line. A stream's echo later than its 2 s deadline fails the test unless
// it came intact and neither end of that connection ever resent a segment (connResent): a loss on
// the way is resent, so a late echo with nothing resent was the endpoints not running on the
// loaded machine, not the datapath.
func TestRollingUpdate(t *testing.T) {
	start := time.Now()
	c := cluster(t)
	deployEcho(t, c)
	pods := echoPods(t, c)
	ctx := t.Context()
	svc, err := c.Lab.Client.CoreV1().Services(echoNamespace).Get(ctx, echoName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(echoPort))
	before := agentPods(t, c)

	// Clients: the echo pods on the first and the last node (cloud and site-a).
	clients := []echoPod{pods[0], pods[len(pods)-1]}
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(time.Now().Format("15:04:05.000 ")+format, args...))
	}
	var shortOK, streamLines atomic.Int64
	backends := map[string]bool{}
	diag := startRollingDiag(t, c, svc.Spec.ClusterIP, pods, before)
	var lost, streams []lostFlow
	// Echoes that came after the deadline, intact; whether that fails is decided at the end.
	type lateEcho struct {
		flow lostFlow
		what string
		conn net.Conn
		pod  echoPod // the backend
	}
	var late []lateEcho
	// resent is the TCP segments sent again in every echo pod's namespace (information: the
	// decision is per connection).
	resent := func() uint64 {
		t.Helper()
		var sum uint64
		for _, p := range pods {
			v, err := p.Netns.Counter("Tcp", "RetransSegs")
			if err != nil {
				t.Fatal(err)
			}
			sum += v
		}
		return sum
	}
	resentBefore := resent()
	podNamed := map[string]echoPod{}
	for _, p := range pods {
		podNamed[p.Name] = p
	}
	var notes []string
	// noteSlowest adds what s observed to the notes: format's %v the time, %s when it began.
	noteSlowest := func(format string, s *slowestTime) {
		mu.Lock()
		defer mu.Unlock()
		notes = append(notes, fmt.Sprintf(format, s.took.Round(time.Millisecond), s.at.Format("15:04:05.000")))
	}
	for _, cl := range clients {
		// Long-lived streams: one to each backend (the Service picks; connections to a backend
		// already covered are closed), so streams cross nodes and the private line.
		covered := map[string]bool{}
		for attempt := 0; len(covered) < len(pods); attempt++ {
			if attempt == 60 {
				t.Fatalf("%s: 60 connections to %s reached only %v", cl.Name, addr, keys(covered))
			}
			conn, err := dialIn(ctx, cl.Netns, addr)
			if err != nil {
				t.Fatalf("%s: opening a stream to %s: %v", cl.Name, addr, err)
			}
			r := bufio.NewReader(conn)
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: stream to %s: %v", cl.Name, addr, err)
			}
			backend := strings.TrimSpace(line)
			if covered[backend] {
				conn.Close()
				continue
			}
			covered[backend] = true
			backends[backend] = true
			local := conn.LocalAddr().(*net.TCPAddr)
			flow := lostFlow{name: fmt.Sprintf("%s stream to %s", cl.Name, backend), clientIP: local.IP.String(), clientPort: local.Port}
			streams = append(streams, flow)
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Closed at the end, after a late echo's connection was asked what it resent.
				t.Cleanup(func() { conn.Close() })
				// The slowest echo: how close a passing run came to the deadline.
				var slowest slowestTime
				defer noteSlowest(flow.name+": slowest echo %v (line written at %s)", &slowest)
				for seq := 0; trafficCtx.Err() == nil; seq++ {
					line := fmt.Sprintf("%s-%s-%d\n", cl.Name, backend, seq)
					sent := time.Now()
					_ = conn.SetDeadline(sent.Add(2 * time.Second))
					if _, err := conn.Write([]byte(line)); err != nil {
						fail("%s: write %d: %v", flow.name, seq, err)
						return
					}
					got, err := r.ReadString('\n')
					if err == nil && got == line {
						streamLines.Add(1)
						slowest.observe(sent)
						time.Sleep(20 * time.Millisecond)
						continue
					}
					flow.at = time.Now()
					note := "no echo within 20 s more: the connection is broken"
					if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() && strings.HasPrefix(line, got) {
						// Late: the state now, while it lasts; then wait for the rest. Intact, the
						// stream goes on, and the end decides from what the connection resent.
						diag.late(flow)
						_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
						rest, rerr := r.ReadString('\n')
						took := time.Since(sent).Round(time.Millisecond)
						if rerr == nil && got+rest == line {
							mu.Lock()
							late = append(late, lateEcho{flow: flow, conn: conn, pod: podNamed[backend],
								what: fmt.Sprintf("%s: echo %d came %v after its line was written at %s", flow.name, seq, took, sent.Format("15:04:05.000"))})
							mu.Unlock()
							streamLines.Add(1)
							slowest.observe(sent)
							continue
						}
						if rerr == nil {
							note = fmt.Sprintf("the echo came %v after its line was written: %q", took, got+rest)
						}
						got, err = got+rest, rerr
						diag.failed(flow) // the timeline's FAILED; the snapshot was taken when late
					} else {
						// A gap or a break: wait longer for the echo (the diagnostics say which).
						diag.failed(flow)
						_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
						if rest, err := r.ReadString('\n'); err == nil {
							note = fmt.Sprintf("the echo came %v after its line was written: %q", time.Since(sent).Round(time.Millisecond), got+rest)
						}
					}
					fail("%s: echo %d: %q %v", flow.name, seq, got, err)
					mu.Lock()
					lost = append(lost, flow)
					notes = append(notes, flow.name+": "+note)
					mu.Unlock()
					return
				}
			}()
		}
		// Short connections, one after the other.
		wg.Add(1)
		go func() {
			defer wg.Done()
			var slowest slowestTime
			defer noteSlowest(cl.Name+": slowest short connection %v (started at %s)", &slowest)
			for trafficCtx.Err() == nil {
				began := time.Now()
				host, err := hello(trafficCtx, cl.Netns, addr)
				if err == nil {
					slowest.observe(began)
				}
				if err != nil {
					if trafficCtx.Err() == nil {
						fail("%s: short connection to %s: %v", cl.Name, addr, err)
					}
					continue
				}
				mu.Lock()
				backends[host] = true
				mu.Unlock()
				shortOK.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	time.Sleep(2 * time.Second)

	// The update: the same image under a second reference, so every agent restarts.
	updateStart := time.Now()
	newRef := c.EdgeplaneImageRef + "-update"
	if err := c.TagImage(ctx, c.EdgeplaneImageRef, newRef); err != nil {
		t.Fatal(err)
	}
	if err := c.SetOverlayImage(newRef); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "apply", "-k", c.Overlay); err != nil {
		t.Fatalf("kubectl apply -k: %v: %s", err, out)
	}
	if err := c.RolloutStatus(ctx, "edgeplane-system", "daemonset/edgeplane-agent", 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	rollout := time.Since(updateStart)
	time.Sleep(3 * time.Second) // traffic on the new agents
	stopTraffic()
	wg.Wait()

	after := agentPods(t, c)
	for _, k := range c.Nodes {
		old, new := before[k.Name], after[k.Name]
		if new.UID == "" || new.UID == old.UID || new.Spec.Containers[0].Image != newRef {
			t.Errorf("node %s: agent pod %s (%s, image %s) not replaced by one of %s", k.Name, old.Name, old.UID, old.Spec.Containers[0].Image, newRef)
		}
	}
	t.Logf("rollout of %d agents took %v; %d short connections and %d stream lines through %s, backends %v",
		len(c.Nodes), rollout.Round(time.Millisecond), shortOK.Load(), streamLines.Load(), addr, keys(backends))
	for _, f := range failures {
		t.Error(f)
	}
	for _, l := range late {
		client, server, how, err := connResent(ctx, l.conn, l.pod.Netns)
		switch {
		case err != nil:
			t.Errorf("%s; what its connection resent is unknown: %v", l.what, err)
			lost = append(lost, l.flow)
		case client+server > 0:
			t.Errorf("%s, and its connection resent %d segments from the client, %d from the backend (%s)", l.what, client, server, how)
			lost = append(lost, l.flow)
		default:
			t.Logf("%s; neither end of its connection resent a segment (%s): nothing was lost, the endpoints were not running (docs/kubelet-lab.md)", l.what, how)
		}
	}
	t.Logf("the echo pods' namespaces resent %d TCP segments during the traffic", resent()-resentBefore)
	for _, n := range notes {
		t.Log(n)
	}
	if os.Getenv(envRollingDiag) == "always" && len(lost) == 0 {
		// To check the diagnostics: report as if every stream had been lost now.
		for _, f := range streams {
			f.at = time.Now()
			lost = append(lost, f)
		}
		diag.failed(lost[0])
	}
	diag.report(lost)
	if shortOK.Load() == 0 || streamLines.Load() == 0 {
		t.Errorf("no traffic went through: %d short connections, %d stream lines", shortOK.Load(), streamLines.Load())
	}
	t.Logf("TestRollingUpdate took %v", time.Since(start).Round(time.Millisecond))
}

// slowestTime is the longest of the times observed, and when it began.
type slowestTime struct {
	took time.Duration
	at   time.Time
}

// observe takes the time since began.
func (s *slowestTime) observe(began time.Time) {
	if d := time.Since(began); d > s.took {
		s.took, s.at = d, began
	}
}

// connResent is what a stream's connection resent over its life: the client's socket (this
// process's, TCP_INFO's total_retrans) and the backend's socket of the same connection (`ss` in the
// backend pod's namespace: local port echoPort, peer port the client's; the peer address may be
// the pod hairpin address, lib/lb_xlate.h, so it is not matched), and how that was read.
func connResent(ctx context.Context, conn net.Conn, backend lab.Netns) (client, server uint32, how string, err error) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return 0, 0, "", fmt.Errorf("not a TCP connection: %T", conn)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, 0, "", err
	}
	var info *unix.TCPInfo
	var infoErr error
	if err := raw.Control(func(fd uintptr) { info, infoErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return 0, 0, "", err
	}
	if infoErr != nil {
		return 0, 0, "", fmt.Errorf("TCP_INFO: %w", infoErr)
	}
	clientPort := tc.LocalAddr().(*net.TCPAddr).Port
	out, err := backend.Exec(ctx, "ss", "-Htni", "state", "established", fmt.Sprintf("( sport = :%d and dport = :%d )", echoPort, clientPort))
	if err != nil {
		return 0, 0, "", err
	}
	server, n, err := parseSSRetrans(out)
	if err != nil || n != 1 {
		return 0, 0, "", fmt.Errorf("the backend's socket of the connection from port %d in %s: %d found, %v:\n%s", clientPort, backend, n, err, out)
	}
	return info.Total_retrans, server, "client TCP_INFO, backend ss -ti", nil
}

// parseSSRetrans reads `ss -Htni` output: how many sockets it lists, and the total of their
// "retrans:<unacknowledged>/<total>" fields (absent: none resent).
func parseSSRetrans(out string) (total uint32, sockets int, err error) {
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			sockets++ // a socket's line; its details follow, indented
		}
		for _, f := range strings.Fields(line) {
			v, ok := strings.CutPrefix(f, "retrans:")
			if !ok {
				continue
			}
			_, all, ok := strings.Cut(v, "/")
			n, perr := strconv.ParseUint(all, 10, 32)
			if !ok || perr != nil {
				return 0, 0, fmt.Errorf("ss field %q", f)
			}
			total += uint32(n)
		}
	}
	return total, sockets, nil
}
