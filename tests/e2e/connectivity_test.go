package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// The first packets of a pair may race the agents' convergence right after the shared lab came
// up; after that, a pair either answers at once or is broken.
const reachTimeout = 3 * time.Second

// TestPodToPodPing: every pod pings every other pod, on its own node and across nodes.
func TestPodToPodPing(t *testing.T) {
	sharedLab(t)
	for _, src := range shared.pods {
		for _, dst := range shared.pods {
			if src == dst {
				continue
			}
			t.Run(src.Name+"->"+dst.Name, func(t *testing.T) {
				took, err := lab.WaitPing(t.Context(), src.Netns, dst.IP, reachTimeout)
				if err != nil {
					t.Fatalf("%s (%s on %s) -> %s (%s on %s): %v", src.Name, src.IP, src.Node.Name, dst.Name, dst.IP, dst.Node.Name, err)
				}
				if took > time.Second {
					t.Logf("first reply after %v", took)
				}
			})
		}
	}
}

// TestPodToPodTCP: every pod opens a TCP connection to every other pod's echo server, and the
// server sees the client pod's own address (no NAT inside the cluster).
func TestPodToPodTCP(t *testing.T) {
	sharedLab(t)
	servers := startEchoServers(t, shared.pods)
	for _, src := range shared.pods {
		for _, dst := range shared.pods {
			if src == dst {
				continue
			}
			t.Run(src.Name+"->"+dst.Name, func(t *testing.T) {
				var seen netip.AddrPort
				_, err := eventually(reachTimeout, func() error {
					var err error
					seen, err = lab.TCPEcho(src.Netns, servers[dst].Addr, time.Second)
					return err
				})
				if err != nil {
					t.Fatalf("%s (%s on %s) -> %s: %v", src.Name, src.IP, src.Node.Name, servers[dst].Addr, err)
				}
				if seen.Addr() != src.IP {
					t.Errorf("%s saw the connection from %s, want the pod address %s", dst.Name, seen.Addr(), src.IP)
				}
			})
		}
	}
}

// TestNodeToPod: every node reaches every pod (ping and TCP), and every pod reaches every node.
func TestNodeToPod(t *testing.T) {
	sharedLab(t)
	servers := startEchoServers(t, shared.pods)
	for _, n := range shared.nodes {
		for _, p := range shared.pods {
			t.Run(fmt.Sprintf("%s->%s", n.Name, p.Name), func(t *testing.T) {
				if _, err := lab.WaitPing(t.Context(), n.Netns, p.IP, reachTimeout); err != nil {
					t.Errorf("ping %s -> %s (%s on %s): %v", n.Name, p.Name, p.IP, p.Node.Name, err)
				}
				if _, err := eventually(reachTimeout, func() error {
					_, err := lab.TCPEcho(n.Netns, servers[p].Addr, time.Second)
					return err
				}); err != nil {
					t.Errorf("tcp %s -> %s: %v", n.Name, p.Name, err)
				}
			})
			t.Run(fmt.Sprintf("%s->%s", p.Name, n.Name), func(t *testing.T) {
				if _, err := lab.WaitPing(t.Context(), p.Netns, n.IP, reachTimeout); err != nil {
					t.Errorf("ping %s (on %s) -> %s (%s): %v", p.Name, p.Node.Name, n.Name, n.IP, err)
				}
			})
		}
	}
}

// TestPodToOutsideMasquerade: a pod reaches a host outside the cluster, which sees the pod's node
// address as the source.
func TestPodToOutsideMasquerade(t *testing.T) {
	l := sharedLab(t)
	srv, err := lab.ServeTCPEcho(l.Outside, netip.AddrPortFrom(lab.OutsideIP, echoPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, p := range shared.pods {
		t.Run(p.Name, func(t *testing.T) {
			if _, err := lab.WaitPing(t.Context(), p.Netns, lab.OutsideIP, reachTimeout); err != nil {
				t.Errorf("ping outside: %v", err)
			}
			var seen netip.AddrPort
			if _, err := eventually(reachTimeout, func() error {
				var err error
				seen, err = lab.TCPEcho(p.Netns, srv.Addr, time.Second)
				return err
			}); err != nil {
				t.Fatalf("tcp %s (%s on %s) -> outside %s: %v", p.Name, p.IP, p.Node.Name, srv.Addr, err)
			}
			if seen.Addr() != p.Node.IP {
				t.Errorf("outside saw %s, want the node address %s (masquerade)", seen.Addr(), p.Node.IP)
			}
		})
	}
}

func startEchoServers(t *testing.T, pods []*lab.Pod) map[*lab.Pod]*lab.Server {
	t.Helper()
	servers := map[*lab.Pod]*lab.Server{}
	for _, p := range pods {
		s, err := lab.ServeTCPEcho(p.Netns, netip.AddrPortFrom(p.IP, echoPort))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		servers[p] = s
	}
	return servers
}

// TestPodTraceroute: every routed hop of the datapath decrements the TTL and answers its expiry
// with "time exceeded" from the node (bpf/lib/ttl.h), as the kernel's forwarding does: a pod's
// traceroute to a pod on its own node shows that node, then the pod; to a pod on another node,
// its own node, the other node, then the pod (Flannel shows the same for the remote pod).
func TestPodTraceroute(t *testing.T) {
	sharedLab(t)
	src := shared.pods[0]
	for _, dst := range shared.pods[1:] {
		t.Run(src.Name+"->"+dst.Name, func(t *testing.T) {
			want := []netip.Addr{src.Node.IP}
			if dst.Node != src.Node {
				want = append(want, dst.Node.IP)
			}
			want = append(want, dst.IP)
			var hops []netip.Addr
			_, err := eventually(reachTimeout, func() error {
				var err error
				hops, err = lab.Traceroute(src.Netns, dst.IP, 5, time.Second)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(hops, want) {
				t.Errorf("hops %v, want %v", hops, want)
			}
		})
	}
}
