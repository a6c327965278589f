package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// nodeAddresses are the addresses a node is reached at from outside: its underlay IP, a second
// address on its NIC (a node with several, e.g. an InternalIP and an ExternalIP; the programs ask
// the FIB whether a destination is local) and its public address, which the router maps 1:1 to
// the underlay IP.
func nodeAddresses(n *lab.Node) []netip.Addr {
	return []netip.Addr{n.IP, secondaryIP(n), n.PublicIP}
}

func secondaryIP(n *lab.Node) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 30, 0, byte(200 + n.Index)})
}

// dropped sends one TCP SYN (the dial gives up before the kernel's first retransmission, 1 s,
// unless the machine stalls the test past it: synRetransmits counts those) or one UDP datagram to
// dst and requires that nothing answers: no connection, no refusal.
func dropped(ns lab.Netns, proto corev1.Protocol, dst netip.AddrPort) error {
	name, _, err := lab.AskHostname(ns, proto, dst, 300*time.Millisecond)
	if err == nil {
		return fmt.Errorf("%s %v: %s answered", proto, dst, name)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return fmt.Errorf("%s %v: %v, want no answer at all", proto, dst, err)
	}
	return nil
}

// testNodePortIsolationEveryAddress: NodePort isolation (listen=pool-a, then live pool-b, then
// *) on every address of every node, TCP and UDP. A closed node port is dropped on each address
// and the node's NODEPORT_CLOSED count (node_xdp's or node_ingress's, nodePortDrops) is exactly the probes; an open one answers on each.
func testNodePortIsolationEveryAddress(t *testing.T, c *cluster) {
	ctx := t.Context()
	// The router and the public addresses (it stays: later subtests see default routes through it).
	if err := c.lab.EnableDomains(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		prefix := netip.PrefixFrom(secondaryIP(n), lab.UnderlayNet.Bits()).String()
		if _, err := n.Netns.IP(ctx, "addr", "add", prefix, "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = n.Netns.IP(context.Background(), "addr", "del", prefix, "dev", "eth0") })
	}
	svc := c.webService(t, "isolated-everywhere", lab.ServiceOptions{
		Type:        corev1.ServiceTypeNodePort,
		Annotations: map[string]string{"nodeport.openyurt.io/listen": "pool-a"},
		Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolTCP},
			{Name: "dns", Port: 53, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolUDP},
		},
	})
	ports := map[corev1.Protocol]uint16{corev1.ProtocolTCP: nodePortOf(svc, 0), corev1.ProtocolUDP: nodePortOf(svc, 1)}
	protos := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}
	closedCount := func(n *lab.Node) uint64 { return nodePortDrops(t, n) }
	// synRetransmits is the SYNs the outside namespace sent again: a probe's dial that a loaded
	// machine wakes after the kernel's 1 s retransmission has sent its SYN twice, and each copy
	// is a packet the node drops and counts (seen once in CI, 7 drops for 6 probes).
	synRetransmits := func() uint64 {
		t.Helper()
		v, err := c.lab.Outside.Counter("TcpExt", "TCPSynRetrans")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// settled waits until every node's underlay IP shows the expected state, so that the exact
	// round below is not racing the agents. It returns when the probe that first saw the new state
	// on n1 was sent, and the same for the last node (n3, probed after the others): upper bounds
	// of when the agents applied it (a probe that still finds the port open returns at once, one
	// that still finds it closed after 300 ms).
	// UDP first: a TCP probe
	// that caught the switch half way (its SYN let through, the rest dropped) would leave a
	// connection whose retransmissions land in the round's count; a datagram leaves nothing.
	settled := func(open map[string]bool) (first, last time.Duration) {
		t.Helper()
		start := time.Now()
		for _, n := range c.nodes {
			for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
				dst := netip.AddrPortFrom(n.IP, ports[proto])
				for {
					var err error
					sent := time.Since(start)
					if open[n.Name] {
						_, _, err = lab.AskHostname(c.lab.Outside, proto, dst, 300*time.Millisecond)
					} else if before := closedCount(n); dropped(c.lab.Outside, proto, dst) != nil || closedCount(n) == before {
						err = fmt.Errorf("not dropped as NODEPORT_CLOSED")
					}
					if err == nil {
						if first == 0 {
							first = sent
						}
						last = sent
						break
					}
					if time.Since(start) > waitLimit {
						t.Fatalf("%s (%s %v) open=%v: %v", n.Name, proto, dst, open[n.Name], err)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
		return first, last
	}
	// round probes every address of every node over TCP and UDP and checks the counters.
	round := func(what string, open map[string]bool) {
		t.Helper()
		var out []string
		for _, n := range c.nodes {
			before, resentBefore := closedCount(n), synRetransmits()
			probes := 0
			for _, addr := range nodeAddresses(n) {
				for _, proto := range protos {
					dst := netip.AddrPortFrom(addr, ports[proto])
					if open[n.Name] {
						counts, err := lab.CountHostnames(c.lab.Outside, proto, dst, 6, 2*time.Second)
						if err != nil {
							t.Errorf("%s: %s listens but %s %v: %v", what, n.Name, proto, dst, err)
						} else {
							out = append(out, fmt.Sprintf("%s %s %s", addr, proto, lab.FormatCounts(counts)))
						}
						continue
					}
					probes++
					if err := dropped(c.lab.Outside, proto, dst); err != nil {
						t.Errorf("%s: %s does not listen but %v", what, n.Name, err)
					}
				}
			}
			// Each probe's dial returns only after any SYN it sent again, so those fall in this
			// node's window; an open node's probes connect and resend nothing.
			got, resent := closedCount(n)-before, synRetransmits()-resentBefore
			if open[n.Name] {
				resent = 0
			}
			// A SYN resent just before its dial gave up may still be on its way to the node.
			for deadline := time.Now().Add(500 * time.Millisecond); got < uint64(probes)+resent && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				got = closedCount(n) - before
			}
			if got != uint64(probes)+resent {
				t.Errorf("%s: %s counted %d NODEPORT_CLOSED drops (XDP + tc) for %d probes of a closed node port (+%d SYNs sent again)", what, n.Name, got, probes, resent)
			}
			if !open[n.Name] {
				out = append(out, fmt.Sprintf("%s closed on %v: %d probes (+%d SYNs sent again), %d NODEPORT_CLOSED drops", n.Name, nodeAddresses(n), probes, resent, got))
			}
		}
		t.Logf("%s:\n  %s", what, strings.Join(out, "\n  "))
	}

	matrix := []struct {
		listen string
		open   map[string]bool
	}{
		{"pool-a", map[string]bool{"n1": true, "n2": true}},
		{"pool-b", map[string]bool{"n3": true}},
		{"*", map[string]bool{"n1": true, "n2": true, "n3": true}},
	}
	for i, m := range matrix {
		if i > 0 {
			c.annotate(t, "isolated-everywhere", "nodeport.openyurt.io/listen", m.listen)
		}
		first, last := settled(m.open)
		if i > 0 {
			t.Logf("listen=%s seen on n1 by a probe sent %v after the update, on n3 %v", m.listen, first.Round(100*time.Microsecond), last.Round(100*time.Microsecond))
		}
		round("listen="+m.listen, m.open)
	}
}
