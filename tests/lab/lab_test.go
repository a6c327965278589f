package lab

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// harnessConfig is ConfigFromEnv without the edgeplane binaries: the harness self-test exercises
// everything the product does not take part in.
func harnessConfig(t *testing.T) Config {
	t.Helper()
	cfg, err := ConfigFromEnv()
	switch {
	case errors.Is(err, ErrNotRoot):
		t.Skip("needs root: the lab builds network namespaces (make test runs as root)")
	case err != nil && (cfg.K8sBin == "" || cfg.CNIPluginsBin == ""):
		t.Fatal(err)
	}
	cfg.Logf = t.Logf
	return cfg
}

// TestHarness brings up the switch, etcd + kube-apiserver, the outside host and two agent-less
// nodes, then checks the underlay, the API client, plugin execution inside a node netns, and that
// nothing leaked into the root namespace.
func TestHarness(t *testing.T) {
	cfg := harnessConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := newCheckedLab(t, ctx, cfg)

	var nodes []*Node
	for i := 1; i <= 2; i++ {
		n, err := l.AddNode(ctx, "node"+string(rune('0'+i)), i, NodeOptions{NoAgent: true})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}

	t.Run("underlay", func(t *testing.T) {
		for _, dst := range []netip.Addr{nodes[1].IP, APIServerIP, OutsideIP} {
			if _, err := Ping(nodes[0].Netns, dst, time.Second); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("apiserver", func(t *testing.T) {
		list, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 2 {
			t.Fatalf("got %d nodes, want 2", len(list.Items))
		}
		for _, n := range list.Items {
			if n.Spec.PodCIDR == "" || len(n.Status.Addresses) == 0 {
				t.Errorf("node %s: podCIDR %q addresses %v", n.Name, n.Spec.PodCIDR, n.Status.Addresses)
			}
		}
	})

	t.Run("tcp-from-node-to-outside", func(t *testing.T) {
		srv, err := ServeTCPEcho(l.Outside, netip.AddrPortFrom(OutsideIP, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		seen, err := TCPEcho(nodes[0].Netns, srv.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if seen.Addr() != nodes[0].IP {
			t.Errorf("outside saw %s, want %s", seen, nodes[0].IP)
		}
	})

	t.Run("udp-stream", func(t *testing.T) {
		srv, err := ServeUDPEcho(nodes[1].Netns, netip.AddrPortFrom(nodes[1].IP, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer scancel()
		st, err := UDPStream(sctx, nodes[0].Netns, srv.Addr, time.Millisecond, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(st)
		if len(st.Lost) > 0 || st.Sent < 100 {
			t.Errorf("stream: %v", st)
		}
	})

	t.Run("cni-in-node-netns", func(t *testing.T) {
		// A plugin-only chain: loopback needs nothing from edgeplane but runs through the same
		// libcni + nsenter path as the real chain.
		conf, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"lab-selftest","plugins":[{"type":"loopback"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		p, err := l.AddPod(ctx, nodes[0], "selftest", PodOptions{Conflist: conf, NoObject: true})
		if err != nil {
			t.Fatal(err)
		}
		out, err := p.Netns.IP(ctx, "-br", "link", "show", "lo")
		if err != nil || !strings.Contains(out, "UP") {
			t.Errorf("lo in pod netns after loopback ADD: %q %v", out, err)
		}
		if err := p.Delete(ctx); err != nil {
			t.Error(err)
		}
		log, _ := os.ReadFile(nodes[0].CNILogPath())
		if !strings.Contains(string(log), "ADD") || !strings.Contains(string(log), "DEL") {
			t.Errorf("cni log has no ADD/DEL:\n%s", log)
		}
	})

	t.Run("root-netns-untouched", func(t *testing.T) {
		out, err := run(ctx, "ip", "-br", "addr")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{"172.30.0.", "10.244."} {
			if strings.Contains(out, a) {
				t.Errorf("lab address %s* in the root namespace:\n%s", a, out)
			}
		}
	})
}

// assertLabGone checks that Close left no namespace, mount or directory behind.
// newCheckedLab builds a lab for a test of the harness itself: its files are kept when the test
// failed, and once it is closed nothing of it may be left (assertLabGone).
func newCheckedLab(t *testing.T, ctx context.Context, cfg Config) *Lab {
	t.Helper()
	l, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.KeepLogs()
			t.Logf("lab files kept in %s", l.Dir)
		}
		l.Close()
		assertLabGone(t, l)
	})
	return l
}

func assertLabGone(t *testing.T, l *Lab) {
	t.Helper()
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.ID+"-") {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), l.Dir) {
		t.Errorf("mounts under %s left behind", l.Dir)
	}
	if !t.Failed() {
		if _, err := os.Stat(l.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lab dir %s left behind", l.Dir)
		}
	}
}
