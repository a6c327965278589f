package partition

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/snapshot"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// TestRebootDuringPartition (issue 18 item 3): site-a is cut off from the API server, and s2,
// which holds web's only backend p3, reboots during the cut (Lab.Reboot: agent killed, pods'
// interfaces, VXLAN device, bpffs and run directory gone). Its new agent cannot reach the API
// server: it programs the datapath from its snapshot, the CNI plugin wires p3 again under a new
// address and a client pod p4, and web answers p4 from the new p3 (its backend repaired on the
// node from the name index), while s2's pods and s1's reach each other. After the heal, with p3's
// Pod object updated as its kubelet would, the API server's state wins: s1's maps name the new
// address too, and s2's agent says it replaced the snapshot.
func TestRebootDuringPartition(t *testing.T) {
	s := build(t)
	l, s2 := s.lab, s.s2
	ctx := t.Context()
	oldP3 := s.p3.IP
	s.waitSnapshotNamesP3(t)

	_, heal := cutSite(ctx, t, l)
	defer heal()
	if err := l.Reboot(ctx, s2); err != nil {
		t.Fatal(err)
	}
	_, p3, p4 := s.restartRebooted(ctx, t, oldP3)
	s.checkRebootedPaths(t, p3, p4)
	streamCtx, stopStream := context.WithTimeout(ctx, 3*time.Second)
	st, err := lab.UDPStream(streamCtx, p4.Netns, s.web, 2*time.Millisecond, 500*time.Millisecond)
	stopStream()
	if err != nil || len(st.Lost) > 0 || st.Received == 0 {
		t.Errorf("2 ms stream p4 -> web during the cut: %v %v", st, err)
	}
	code, body, err := s2.AgentGet("/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "Service backends of 1 re-created pod(s) repaired") {
		t.Errorf("%s: /readyz during the cut: %d %q %v; want 503 naming the snapshot and the repair", s2.Name, code, body, err)
	}

	// The link returns; p3's kubelet reports its new address.
	heal()
	setPodIP(t, l, "p3", p3.IP)
	healAt := time.Now()
	if err := waitEcho(s.p1.Netns, s.web, 30*time.Second); err != nil {
		t.Errorf("after the heal: p1 -> web (s1's maps with p3's new address): %v", err)
	} else {
		t.Logf("after the heal: p1 -> web answers from the new p3 %v after the heal", time.Since(healAt).Round(time.Millisecond))
	}
	if _, ok := waitFor(30*time.Second, func() bool {
		code, body, err = s2.AgentGet("/readyz")
		return err == nil && code == http.StatusOK && strings.Contains(body, "the API server's state has replaced it")
	}); !ok {
		t.Errorf("%s: /readyz after the heal: %d %q %v", s2.Name, code, body, err)
	}
	if err := waitEcho(p4.Netns, s.web, 10*time.Second); err != nil {
		t.Errorf("after the heal: p4 -> web: %v", err)
	}
}

// waitSnapshotNamesP3 waits until s2's snapshot names p3, at its address, as a Service backend:
// the state a rebooted s2's new agent starts from.
func (s *site) waitSnapshotNamesP3(t *testing.T) {
	t.Helper()
	var snap *snapshot.State
	if _, ok := waitFor(20*time.Second, func() bool {
		var err error
		snap, err = snapshot.Read(s.s2.SnapshotDir(), snapshot.DefaultMaxBytes)
		return err == nil && slices.ContainsFunc(snap.PodBackends, func(b snapshot.PodBackend) bool { return b.IP == s.p3.IP && b.Name == "p3" })
	}); !ok {
		t.Fatalf("precondition: %s's snapshot does not name p3 (%s) as a backend: %+v", s.s2.Name, s.p3.IP, snap)
	}
}

// restartRebooted brings s2 back after Lab.Reboot during a cut: its agent started and ready
// (node.json written, from the snapshot), then kubelet's work: new sandboxes for p3 and a client
// p4 through the CNI plugin, the Pod objects left as they were (kubelet cannot reach the API
// server), and p3 serving podPort and webPort again. It returns when the agent started.
func (s *site) restartRebooted(ctx context.Context, t *testing.T, oldP3 netip.Addr) (start time.Time, p3, p4 *lab.Pod) {
	t.Helper()
	l, s2 := s.lab, s.s2
	start = time.Now()
	if err := s2.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if err := s2.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: node.json written %v after the agent's start, from the snapshot", s2.Name, time.Since(start).Round(time.Millisecond))
	p3, err := l.AddPod(ctx, s2, "p3", lab.PodOptions{NoObject: true})
	if err != nil {
		t.Fatal(err)
	}
	if p3.IP == oldP3 {
		t.Fatalf("p3 came back with its old address %s: the test needs a new one", oldP3)
	}
	p4, err = l.AddPod(ctx, s2, "p4", lab.PodOptions{NoObject: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []uint16{podPort, webPort} {
		srv, err := lab.ServeUDPEcho(p3.Netns, netip.AddrPortFrom(p3.IP, port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}
	t.Logf("p3 re-created on %s: %s -> %s", s2.Name, oldP3, p3.IP)
	return start, p3, p4
}

// checkRebootedPaths checks, during the cut, that the rebooted s2's pods and s1's reach each
// other and that web answers p4 from the new p3 (its backend repaired on the node).
func (s *site) checkRebootedPaths(t *testing.T, p3, p4 *lab.Pod) {
	t.Helper()
	for _, c := range []struct {
		what string
		from lab.Netns
		to   netip.AddrPort
	}{
		{"p4 -> p2 (from the rebooted node to the other)", p4.Netns, netip.AddrPortFrom(s.p2.IP, podPort)},
		{"p1 -> p3 (from the other node to the rebooted one)", s.p1.Netns, netip.AddrPortFrom(p3.IP, podPort)},
		{"p4 -> web (Service, backend p3 on the rebooted node)", p4.Netns, s.web},
	} {
		start := time.Now()
		if err := waitEcho(c.from, c.to, 10*time.Second); err != nil {
			t.Errorf("during the cut, after the reboot: %s: %v\n%s", c.what, err, s.s2.Agent.LogTail(30))
		} else {
			t.Logf("during the cut, after the reboot: %s answers (%v)", c.what, time.Since(start).Round(time.Millisecond))
		}
	}
}

// setPodIP sets the Pod object's addresses, as its kubelet does for a new sandbox.
func setPodIP(t *testing.T, l *lab.Lab, name string, ip netip.Addr) {
	t.Helper()
	c := l.Client.CoreV1().Pods(lab.PodNamespace)
	obj, err := c.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj.Status.PodIP, obj.Status.PodIPs = ip.String(), []corev1.PodIP{{IP: ip.String()}}
	if _, err := c.UpdateStatus(t.Context(), obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
