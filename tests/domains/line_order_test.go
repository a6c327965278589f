package domains

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// TestPrivateWithoutLine checks what docs/domains.md warns about: `private` is believed, not
// probed. With cloud <-> site-a set private while the private line is down, the sender's node
// tunnels to the peer's private address anyway: the connection times out, no ICMP comes back and
// the source counts the packets as forwarded, not as DOMAIN_UNREACHABLE. Set public again, the
// same pair fails at once and is counted.
func TestPrivateWithoutLine(t *testing.T) {
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx := t.Context()
	const ns, name = "kube-system", "edgeplane-line-order"
	cms := l.Client.CoreV1().ConfigMaps(ns)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Data: map[string]string{domain.ConfigKey: privateLine}}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []*lab.Pod
	for i, d := range []string{lab.DomainCloud, lab.DomainSiteA} {
		n, err := l.AddNode(ctx, d[:1]+"1", i+1, lab.NodeOptions{
			Domain: d, Labels: map[string]string{domain.DefaultPoolLabel: d},
			AgentArgs: []string{"--domain-config=" + ns + "/" + name},
		})
		if err != nil {
			t.Fatal(err)
		}
		p, err := l.AddPod(ctx, n, "p-"+n.Name, lab.PodOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	src, dst := pods[0], pods[1]
	echo := netip.AddrPortFrom(dst.IP, echoPort)
	srv, err := lab.ServeTCPEcho(dst.Netns, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := lab.WaitPing(ctx, src.Netns, dst.IP, convergeLimit); err != nil {
		t.Fatalf("private with the line up: %v", err)
	}
	count := func(reason dropreason.Reason) uint64 { return counter(t, src.Node, metricsmap.DirPodEgress, reason) }

	if err := l.SetPrivateLine(ctx, lab.DomainCloud, lab.DomainSiteA, false); err != nil {
		t.Fatal(err)
	}
	drops, forwarded := count(dropreason.DomainUnreachable), count(dropreason.Forwarded)
	start := time.Now()
	_, tcpErr := lab.TCPEcho(src.Netns, echo, 2*time.Second)
	took := time.Since(start)
	if tcpErr == nil || errors.Is(tcpErr, syscall.EHOSTUNREACH) {
		t.Errorf("TCP over a missing line: %v after %v, want a timeout", tcpErr, took)
	}
	if ans, err := lab.PingOrUnreachable(src.Netns, dst.IP, time.Second); err == nil {
		t.Errorf("ping over a missing line answered: %+v, want no answer at all", ans)
	}
	if d := count(dropreason.DomainUnreachable) - drops; d != 0 {
		t.Errorf("DOMAIN_UNREACHABLE +%d over a missing line, want +0 (the source believes the line)", d)
	}
	if f := count(dropreason.Forwarded) - forwarded; f < 2 {
		t.Errorf("FORWARDED +%d, want the SYN and the echo request counted as forwarded", f)
	}
	t.Logf("private, line down: %v after %v, nothing counted as a drop at the source", tcpErr, took.Round(time.Millisecond))

	// The right order to take a line down: the pair goes public first.
	if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(convergeLimit)
	for {
		drops = count(dropreason.DomainUnreachable)
		ans, err := lab.PingOrUnreachable(src.Netns, dst.IP, time.Second)
		if err == nil && ans.Unreachable {
			if d := count(dropreason.DomainUnreachable) - drops; d != 1 {
				t.Errorf("public: DOMAIN_UNREACHABLE +%d for one ping, want +1", d)
			}
			t.Logf("public: host unreachable from %v after %v", ans.From, ans.RTT)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pair set public: ping %+v, %v; want host unreachable", ans, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
