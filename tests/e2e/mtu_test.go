package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// vxlanOverhead is what VXLAN over IPv4 adds (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
const vxlanOverhead = 50

var podMTU = lab.UnderlayMTU - vxlanOverhead // 1450

// TestPodMTU: every pod's eth0 and its host-side veth have MTU underlay - 50 (1450), as do the
// nodes' VXLAN devices and node.json, from which the plugin takes it.
func TestPodMTU(t *testing.T) {
	sharedLab(t)
	for _, n := range shared.nodes {
		cfg, err := n.Config()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MTU != podMTU {
			t.Errorf("%s node.json MTU %d, want %d", n.Name, cfg.MTU, podMTU)
		}
		if mtu, err := n.Netns.LinkMTU("edgeplane.1"); err != nil || mtu != podMTU {
			t.Errorf("%s edgeplane.1 MTU %d (%v), want %d", n.Name, mtu, err, podMTU)
		}
	}
	for _, p := range shared.pods {
		if mtu, err := p.Netns.LinkMTU("eth0"); err != nil || mtu != podMTU {
			t.Errorf("%s eth0 MTU %d (%v), want %d", p.Name, mtu, err, podMTU)
		}
		if mtu, err := p.Node.Netns.LinkMTU(p.HostVeth()); err != nil || mtu != podMTU {
			t.Errorf("%s host veth %s on %s MTU %d (%v), want %d", p.Name, p.HostVeth(), p.Node.Name, mtu, err, podMTU)
		}
	}
}

// TestPathMTU: a pod whose interface is larger than the overlay (MTU 1500 on both ends of its
// veth, as a CNI "mtu" override would make it) talks to a remote pod of the same kind.
//   - Without DF a 1500-byte packet is fragmented by the node (the host path) and arrives whole.
//   - With DF it is not delivered: the sender gets "fragmentation needed", MTU 1450, from its
//     node's IP (576 bytes, as Linux sends), its route cache learns mtu 1450, and pod_egress counts
//     PKT_TOO_BIG and ICMP_SENT.
//   - A 4 MB TCP transfer from a cold route cache completes: PMTU discovery on the GSO path
//     converges instead of stalling.
func TestPathMTU(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	src := addBigMTUPod(t, l, shared.nodes[0], "pod-mtu-1")
	dst := addBigMTUPod(t, l, shared.nodes[1], "pod-mtu-2")
	if _, err := lab.WaitPing(ctx, src.Netns, dst.IP, reachTimeout); err != nil {
		t.Fatalf("precondition: %s -> %s: %v", src.Name, dst.Name, err)
	}
	dstAddr := netip.AddrPortFrom(dst.IP, 9100)
	rx, err := lab.ListenUDP(dst.Netns, dstAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	full := make([]byte, lab.UnderlayMTU-28) // a 1500-byte IPv4 packet
	for i := range full {
		full[i] = byte(i)
	}

	t.Run("no DF: fragmented on the node", func(t *testing.T) {
		for _, size := range []int{len(full), 4000} {
			payload := bytes.Repeat(full, 3)[:size]
			if err := udpArrivesWhole(src.Netns, dstAddr, rx, payload); err != nil {
				t.Errorf("%s -> %s, %d bytes without DF: %v", src.Name, dst.Name, size, err)
			}
		}
		if out := routeGet(t, src, dst.IP); strings.Contains(out, "mtu") {
			t.Errorf("%s learned a path MTU from packets without DF: %s", src.Name, out)
		}
	})

	t.Run("DF: fragmentation needed", func(t *testing.T) {
		flushRouteCache(t, src)
		before := podEgressCounters(t, src.Node)
		icmpConn := listenICMP(t, src.Netns)
		c, err := lab.DialUDP(src.Netns, dstAddr, true)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(full); err != nil {
			t.Fatalf("sending %d bytes with DF: %v", len(full)+28, err)
		}
		msg, from, err := readFragNeeded(icmpConn, dst.IP, 2*time.Second)
		if err != nil {
			t.Fatalf("%s -> %s, 1500 bytes with DF: %v", src.Name, dst.Name, err)
		}
		t.Logf("got ICMP fragmentation needed from %s: mtu %d, %d bytes", from, msg.mtu, msg.ipLen)
		if from != src.Node.IP {
			t.Errorf("fragmentation needed from %s, want the node IP %s", from, src.Node.IP)
		}
		if msg.mtu != podMTU {
			t.Errorf("fragmentation needed announces MTU %d, want %d", msg.mtu, podMTU)
		}
		if msg.ipLen != 576 {
			t.Errorf("the ICMP error is %d bytes long (IPv4), want 576", msg.ipLen)
		}
		if msg.quotedSrc != src.IP || msg.quotedDst != dst.IP || msg.quotedProto != unix.IPPROTO_UDP {
			t.Errorf("the error quotes %s -> %s proto %d, want the UDP packet %s -> %s", msg.quotedSrc, msg.quotedDst, msg.quotedProto, src.IP, dst.IP)
		}
		// The socket was told, and the route cache learned it.
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, syscall.EMSGSIZE) {
			t.Errorf("the connected socket reports %v, want EMSGSIZE", err)
		}
		if mtu, err := lab.PathMTU(c); err != nil || mtu != podMTU {
			t.Errorf("IP_MTU of the socket %d (%v), want %d", mtu, err, podMTU)
		}
		if out := routeGet(t, src, dst.IP); !strings.Contains(out, fmt.Sprintf("mtu %d", podMTU)) {
			t.Errorf("%s route cache has no mtu %d for %s: %s", src.Name, podMTU, dst.IP, out)
		}
		// Nothing larger than the overlay was accepted.
		_ = rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, _, err := rx.ReadFromUDPAddrPort(make([]byte, 65536)); err == nil {
			t.Errorf("%s received a %d-byte datagram sent with DF over a 1450-byte path", dst.Name, n)
		}
		after := podEgressCounters(t, src.Node)
		for _, r := range []dropreason.Reason{dropreason.PktTooBig, dropreason.ICMPSent} {
			k := metricsmap.Key{Dir: metricsmap.DirPodEgress, Reason: uint32(r)}
			if after[k].Packets <= before[k].Packets {
				t.Errorf("%s pod-egress %s counter did not rise: %d -> %d", src.Node.Name, r, before[k].Packets, after[k].Packets)
			}
		}
	})

	t.Run("TCP converges", func(t *testing.T) {
		sink, err := lab.ServeTCPSink(dst.Netns, netip.AddrPortFrom(dst.IP, 9101))
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		flushRouteCache(t, src)
		if out := routeGet(t, src, dst.IP); strings.Contains(out, "mtu") {
			t.Fatalf("precondition: %s route cache not flushed: %s", src.Name, out)
		}
		k := metricsmap.Key{Dir: metricsmap.DirPodEgress, Reason: uint32(dropreason.PktTooBig)}
		before := podEgressCounters(t, src.Node)[k]
		const size = 4 << 20
		took, err := lab.TCPSend(src.Netns, sink.Addr, size, 20*time.Second)
		if err != nil {
			t.Fatalf("%s -> %s: %v", src.Name, dst.Name, err)
		}
		after := podEgressCounters(t, src.Node)[k]
		t.Logf("%d MB in %v (%.0f Mbit/s); %d segments too big answered with fragmentation needed on the way",
			size>>20, took.Round(time.Millisecond), float64(size*8)/took.Seconds()/1e6, after.Packets-before.Packets)
		if after.Packets == before.Packets {
			t.Errorf("no PKT_TOO_BIG during the transfer: PMTU discovery was not exercised (route: %s)", routeGet(t, src, dst.IP))
		}
		if out := routeGet(t, src, dst.IP); !strings.Contains(out, fmt.Sprintf("mtu %d", podMTU)) {
			t.Errorf("%s route cache after the transfer: %s, want mtu %d", src.Name, out, podMTU)
		}
	})
}

// TestFragments: datagrams longer than the pod MTU, without DF, are fragmented by the sending pod
// and arrive whole, both directions, on the same node and across nodes; so does a 3000-byte ping.
func TestFragments(t *testing.T) {
	sharedLab(t)
	pairs := [][2]*lab.Pod{
		{shared.pods[0], shared.pods[2]}, // pod-1a -> pod-2a
		{shared.pods[2], shared.pods[0]}, // pod-2a -> pod-1a
		{shared.pods[0], shared.pods[1]}, // pod-1a -> pod-1b (same node)
	}
	payload := make([]byte, 4000)
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	for i, pair := range pairs {
		src, dst := pair[0], pair[1]
		t.Run(src.Name+"->"+dst.Name, func(t *testing.T) {
			addr := netip.AddrPortFrom(dst.IP, uint16(9110+i))
			rx, err := lab.ListenUDP(dst.Netns, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			if err := udpArrivesWhole(src.Netns, addr, rx, payload); err != nil {
				t.Errorf("UDP %d bytes without DF: %v", len(payload), err)
			}
			if _, err := lab.PingSize(src.Netns, dst.IP, 3000, 2*time.Second); err != nil {
				t.Errorf("ping -s 3000 -M dont: %v", err)
			}
		})
	}
}

// addBigMTUPod adds a pod whose veth (both ends) has the underlay's MTU, larger than the overlay's;
// it is deleted when the test ends.
func addBigMTUPod(t *testing.T, l *lab.Lab, n *lab.Node, name string) *lab.Pod {
	t.Helper()
	p, err := l.AddPod(t.Context(), n, name, lab.PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Delete(ctx); err != nil {
			t.Errorf("deleting %s: %v", p.Name, err)
		}
	})
	mtu := fmt.Sprint(lab.UnderlayMTU)
	if _, err := n.Netns.IP(t.Context(), "link", "set", p.HostVeth(), "mtu", mtu); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Netns.IP(t.Context(), "link", "set", "eth0", "mtu", mtu); err != nil {
		t.Fatal(err)
	}
	return p
}

// udpArrivesWhole sends payload from ns to dst without DF (fragmented as needed) and checks that
// rx, bound at dst, receives it whole. A datagram lost on the way is sent again, twice at most.
func udpArrivesWhole(ns lab.Netns, dst netip.AddrPort, rx *net.UDPConn, payload []byte) error {
	c, err := lab.DialUDP(ns, dst, false)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 65536)
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		if _, err := c.Write(payload); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		_ = rx.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := rx.ReadFromUDPAddrPort(buf)
		if err != nil {
			last = fmt.Errorf("nothing received: %w", err)
			continue
		}
		if !bytes.Equal(buf[:n], payload) {
			return fmt.Errorf("received %d bytes, not the %d sent (or different ones)", n, len(payload))
		}
		return nil
	}
	return last
}

// fragNeeded is a received ICMP "fragmentation needed" with the header it quotes.
type fragNeeded struct {
	mtu, ipLen           int
	quotedSrc, quotedDst netip.Addr
	quotedProto          uint8
}

func listenICMP(t *testing.T, ns lab.Netns) *net.IPConn {
	t.Helper()
	var c *net.IPConn
	if err := lab.InNetns(ns, func() error {
		var err error
		c, err = net.ListenIP("ip4:icmp", &net.IPAddr{IP: net.IPv4zero})
		return err
	}); err != nil {
		t.Fatalf("icmp socket in %s: %v", ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readFragNeeded waits for a "fragmentation needed" about a packet to dst.
func readFragNeeded(c *net.IPConn, dst netip.Addr, timeout time.Duration) (fragNeeded, netip.Addr, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromIP(buf)
		if err != nil {
			return fragNeeded{}, netip.Addr{}, fmt.Errorf("no ICMP fragmentation needed within %v: %w", timeout, err)
		}
		m := buf[:n] // the ICMP message; the kernel strips the IPv4 header of raw sockets
		if n < 8+20 || m[0] != 3 /* ICMP_DEST_UNREACH */ || m[1] != 4 /* ICMP_FRAG_NEEDED */ {
			continue
		}
		q := m[8:]
		f := fragNeeded{
			mtu:         int(m[6])<<8 | int(m[7]),
			ipLen:       n + 20,
			quotedSrc:   netip.AddrFrom4([4]byte(q[12:16])),
			quotedDst:   netip.AddrFrom4([4]byte(q[16:20])),
			quotedProto: q[9],
		}
		if f.quotedDst != dst {
			continue
		}
		src, _ := netip.AddrFromSlice(from.IP.To4())
		return f, src, nil
	}
}

func podEgressCounters(t *testing.T, n *lab.Node) map[metricsmap.Key]metricsmap.Metric {
	t.Helper()
	c, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// routeGet is `ip route get dst` in the pod: it shows a learned path MTU as "mtu N".
func routeGet(t *testing.T, p *lab.Pod, dst netip.Addr) string {
	t.Helper()
	out, err := p.Netns.IP(t.Context(), "route", "get", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(out), " ")
}

// flushRouteCache forgets the pod's learned path MTUs (ip route flush cache).
func flushRouteCache(t *testing.T, p *lab.Pod) {
	t.Helper()
	if err := p.Netns.Sysctl("net.ipv4.route.flush", "1"); err != nil {
		t.Fatal(err)
	}
}
