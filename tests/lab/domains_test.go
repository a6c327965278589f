package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// TestDomains builds one node per network domain, agents running, and checks the router: the
// private line carries cloud <-> site-a while it is up and nothing once cut, site-b reaches the
// other domains only through public addresses and is seen by its own, and the site agents reached
// the API server through its public address.
func TestDomains(t *testing.T) {
	cfg, err := ConfigFromEnv()
	if errors.Is(err, ErrNotRoot) {
		t.Skip("needs root: the lab builds network namespaces (make test runs as root)")
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := newCheckedLab(t, ctx, cfg)

	// The cloud node comes first, before the lab has domains: the site node that builds them
	// routes it through the router afterwards.
	start := time.Now()
	cloud, err := l.AddNode(ctx, "cloud1", 1, NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Router() != "" {
		t.Fatalf("a cloud-only lab built the router %s", l.Router())
	}
	siteA, err := l.AddNode(ctx, "sitea2", 2, NodeOptions{Domain: DomainSiteA, PublicIPOverwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	siteB, err := l.AddNode(ctx, "siteb3", 3, NodeOptions{Domain: DomainSiteB, PublicIPOverwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("three nodes in three domains ready after %v", time.Since(start).Round(time.Millisecond))
	const timeout = 300 * time.Millisecond

	t.Run("addresses", func(t *testing.T) {
		for _, c := range []struct {
			n              *Node
			domain         string
			ip, public     string
			overwriteAnnot bool
		}{
			{cloud, DomainCloud, "172.30.0.11", "203.0.113.11", false},
			{siteA, DomainSiteA, "172.31.0.12", "203.0.113.12", true},
			{siteB, DomainSiteB, "172.32.0.13", "203.0.113.13", true},
		} {
			if c.n.Domain != c.domain || c.n.IP.String() != c.ip || c.n.PublicIP.String() != c.public {
				t.Errorf("%s: domain %s ip %s public %s, want %s %s %s", c.n.Name, c.n.Domain, c.n.IP, c.n.PublicIP, c.domain, c.ip, c.public)
			}
			obj, err := l.Client.CoreV1().Nodes().Get(ctx, c.n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ip, ok := k8s.InternalIP(k8stest.Node(obj)); !ok || ip != c.n.IP {
				t.Errorf("%s: InternalIP %s, want %s", c.n.Name, ip, c.n.IP)
			}
			v, ok := obj.Annotations[k8s.PublicIPOverwriteAnnotation]
			if ok != c.overwriteAnnot || (ok && v != c.public) {
				t.Errorf("%s: %s=%q (set: %v), want set: %v to %s", c.n.Name, k8s.PublicIPOverwriteAnnotation, v, ok, c.overwriteAnnot, c.public)
			}
		}
	})

	t.Run("api-through-public-address", func(t *testing.T) {
		for _, n := range []*Node{cloud, siteA, siteB} {
			want := l.API.URL
			if n.Domain != DomainCloud {
				want = l.API.PublicURL
			}
			kc, err := clientcmd.LoadFromFile(n.Kubecfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster].Server; got != want {
				t.Errorf("%s: kubeconfig server %s, want %s", n.Name, got, want)
			}
		}
		// The agents keep their watch connections open: the API server sees the site nodes by
		// their public addresses, the cloud node by its private one.
		deadline := time.Now().Add(5 * time.Second)
		for {
			out, err := l.API.Netns.Exec(ctx, "ss", "-Htn", "state", "established", "( sport = :6443 )")
			if err != nil {
				t.Fatal(err)
			}
			var missing []string
			for _, peer := range []netip.Addr{cloud.IP, siteA.PublicIP, siteB.PublicIP} {
				if !strings.Contains(out, " "+peer.String()+":") {
					missing = append(missing, peer.String())
				}
			}
			for _, private := range []netip.Addr{siteA.IP, siteB.IP} {
				if strings.Contains(out, " "+private.String()+":") {
					t.Errorf("the API server has a connection from the private address %s:\n%s", private, out)
				}
			}
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the API server has no connection from %v:\n%s", missing, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("private-line", func(t *testing.T) {
		t.Cleanup(func() {
			if err := l.SetPrivateLine(ctx, DomainCloud, DomainSiteA, true); err != nil {
				t.Error(err)
			}
		})
		for _, pair := range [][2]string{{DomainCloud, DomainSiteB}, {DomainSiteA, DomainSiteB}, {DomainCloud, "mars"}} {
			if err := l.SetPrivateLine(ctx, pair[0], pair[1], false); err == nil {
				t.Errorf("SetPrivateLine(%s, %s) did not fail", pair[0], pair[1])
			}
		}
		// Up: private addresses both ways, nothing translated.
		if _, err := WaitPing(ctx, cloud.Netns, siteA.IP, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := Ping(siteA.Netns, cloud.IP, timeout); err != nil {
			t.Error(err)
		}
		srv, err := ServeTCPEcho(cloud.Netns, netip.AddrPortFrom(cloud.IP, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		if seen, err := TCPEcho(siteA.Netns, srv.Addr, 2*time.Second); err != nil {
			t.Error(err)
		} else if seen.Addr() != siteA.IP {
			t.Errorf("over the private line the cloud saw %s, want %s", seen, siteA.IP)
		}

		// Down: no private path; the public one still works.
		if err := l.SetPrivateLine(ctx, DomainSiteA, DomainCloud, false); err != nil {
			t.Fatal(err)
		}
		if _, err := Ping(cloud.Netns, siteA.IP, timeout); err == nil {
			t.Error("cloud reaches site-a's private address with the line down")
		}
		if _, err := Ping(siteA.Netns, cloud.IP, timeout); err == nil {
			t.Error("site-a reaches the cloud's private address with the line down")
		}
		public := netip.AddrPortFrom(cloud.PublicIP, srv.Addr.Port())
		if seen, err := TCPEcho(siteA.Netns, public, 2*time.Second); err != nil {
			t.Error(err)
		} else if seen.Addr() != siteA.PublicIP {
			t.Errorf("through the internet the cloud saw %s, want site-a's public address %s", seen, siteA.PublicIP)
		}

		// Up again.
		if err := l.SetPrivateLine(ctx, DomainCloud, DomainSiteA, true); err != nil {
			t.Fatal(err)
		}
		if _, err := WaitPing(ctx, siteA.Netns, cloud.IP, 3*time.Second); err != nil {
			t.Error(err)
		}
		if _, err := Ping(cloud.Netns, siteA.IP, timeout); err != nil {
			t.Error(err)
		}
	})

	t.Run("site-b-private-unreachable", func(t *testing.T) {
		before := forwardDrops(t, l.Router())
		for _, c := range []struct {
			from *Node
			to   netip.Addr
		}{
			{siteB, cloud.IP}, {siteB, siteA.IP}, {cloud, siteB.IP}, {siteA, siteB.IP},
		} {
			if _, err := Ping(c.from.Netns, c.to, timeout); err == nil {
				t.Errorf("%s reaches the private address %s", c.from.Name, c.to)
			}
		}
		if after := forwardDrops(t, l.Router()); after < before+4 {
			t.Errorf("the router's FORWARD policy dropped %d packets, want at least 4", after-before)
		}
	})

	t.Run("site-b-public", func(t *testing.T) {
		for _, c := range []struct{ from, to *Node }{{siteB, cloud}, {cloud, siteB}, {siteB, siteA}} {
			if _, err := Ping(c.from.Netns, c.to.PublicIP, time.Second); err != nil {
				t.Error(err)
			}
			srv, err := ServeTCPEcho(c.to.Netns, netip.AddrPortFrom(c.to.IP, 0))
			if err != nil {
				t.Fatal(err)
			}
			seen, err := TCPEcho(c.from.Netns, netip.AddrPortFrom(c.to.PublicIP, srv.Addr.Port()), 2*time.Second)
			srv.Close()
			if err != nil {
				t.Error(err)
			} else if seen.Addr() != c.from.PublicIP {
				t.Errorf("%s saw %s connect from %s, want its public address %s", c.to.Name, c.from.Name, seen.Addr(), c.from.PublicIP)
			}
		}
		// UDP: the connected socket takes only answers from the public address, so every
		// datagram back proves the reverse translation.
		srv, err := ServeUDPEcho(cloud.Netns, netip.AddrPortFrom(cloud.IP, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer scancel()
		st, err := UDPStream(sctx, siteB.Netns, netip.AddrPortFrom(cloud.PublicIP, srv.Addr.Port()), 5*time.Millisecond, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if st.Sent < 10 || len(st.Lost) > 0 {
			t.Errorf("udp site-b -> cloud public: %v", st)
		}
	})

	t.Run("hairpin", func(t *testing.T) {
		// From the cloud to a cloud node's public address: in and out by the same router leg.
		// Twice, so an ICMP redirect after the first would show.
		srv, err := ServeTCPEcho(cloud.Netns, netip.AddrPortFrom(cloud.IP, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		dst := netip.AddrPortFrom(cloud.PublicIP, srv.Addr.Port())
		for _, c := range []struct {
			from Netns
			want netip.Addr
		}{
			{l.API.Netns, APIServerPublicIP}, {l.API.Netns, APIServerPublicIP},
			{l.Outside, RouterIP(DomainCloud)}, // no public address: seen as the router
		} {
			if seen, err := TCPEcho(c.from, dst, 2*time.Second); err != nil {
				t.Error(err)
			} else if seen.Addr() != c.want {
				t.Errorf("from %s the cloud node saw %s, want %s", c.from, seen.Addr(), c.want)
			}
		}
	})

	t.Run("remove-unmaps-public-address", func(t *testing.T) {
		if err := siteB.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := l.Router().Exec(ctx, "iptables-save", "-t", "nat")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{siteB.PublicIP.String() + "/32", siteB.IP.String() + "/32"} {
			if strings.Contains(out, a) {
				t.Errorf("the router still maps %s after the node left:\n%s", a, out)
			}
		}
		if !strings.Contains(out, siteA.PublicIP.String()+"/32") {
			t.Errorf("the router lost site-a's mapping:\n%s", out)
		}
	})

	t.Run("root-netns-untouched", func(t *testing.T) {
		out, err := run(ctx, "ip", "-br", "addr")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{"172.30.0.", "172.31.0.", "172.32.0.", "203.0.113."} {
			if strings.Contains(out, a) {
				t.Errorf("lab address %s* in the root namespace:\n%s", a, out)
			}
		}
	})
}

var forwardPolicy = regexp.MustCompile(`Chain FORWARD \(policy DROP (\d+) packets`)

// forwardDrops is how many packets the router's FORWARD policy has dropped.
func forwardDrops(t *testing.T, router Netns) int {
	t.Helper()
	out, err := router.Exec(context.Background(), "iptables", "-w", "10", "-L", "FORWARD", "-n", "-v", "-x")
	if err != nil {
		t.Fatal(err)
	}
	m := forwardPolicy.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no FORWARD policy counter in:\n%s", out)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(fmt.Errorf("FORWARD policy counter: %w", err))
	}
	return n
}
