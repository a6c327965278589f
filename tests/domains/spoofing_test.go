package domains

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// vxlanProbe is a VXLAN frame (VNI 1) carrying a UDP packet to pod, as a spoofer would send it.
func vxlanProbe(pod *lab.Pod, vtep net.HardwareAddr) []byte {
	b := []byte{0x08, 0, 0, 0, 0, 0, 1, 0} // I flag, VNI 1
	b = append(b, vtep...)
	b = append(b, 0x02, 0, 0, 0, 0, 0x66, 0x08, 0x00)
	ip := []byte{0x45, 0, 0, 28 + 4, 0, 0, 0, 0, 64, 17, 0, 0, 10, 244, 200, 1}
	ip = append(ip, pod.IP.AsSlice()...)
	udp := []byte{0x30, 0x39, byte(echoPort >> 8), byte(echoPort & 0xff), 0, 12, 0, 0, 'h', 'i', '!', '!'}
	return append(append(b, ip...), udp...)
}

func sendUDP(t *testing.T, ns lab.Netns, dst netip.AddrPort, payload []byte, n int) {
	t.Helper()
	conn, err := lab.DialUDP(ns, dst, false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range n {
		if _, err := conn.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
}

// testSpoofedVXLAN: VXLAN to a node from a host that is no node is dropped as UNKNOWN_TUNNEL_SOURCE,
// and from a node of a domain it cannot reach as DOMAIN_UNREACHABLE.
func testSpoofedVXLAN(t *testing.T, c *cluster) {
	c.setConfig(t, "") // all public: site-b is an unreachable domain for c1
	c.converge(t, sameDomain)
	c1 := c.node("c1")
	link, err := c1.Netns.IP(t.Context(), "-br", "link", "show", "edgeplane.1")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(link)
	if len(fields) < 3 {
		t.Fatalf("ip -br link: %q", link)
	}
	mac, err := net.ParseMAC(fields[2])
	if err != nil {
		t.Fatal(err)
	}
	probe := vxlanProbe(c.pod("c1"), mac)
	const n = 5
	count := func(reason dropreason.Reason) uint64 {
		m, err := c1.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return m[metricsmap.Key{Dir: metricsmap.DirOverlayIn, Reason: uint32(reason)}].Packets
	}
	settle := func(reason dropreason.Reason, before uint64) uint64 {
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && count(reason) < before+n {
			time.Sleep(20 * time.Millisecond)
		}
		return count(reason) - before
	}

	// From a host that is not a node (the outside host on the cloud network).
	before := count(dropreason.UnknownTunnelSource)
	sendUDP(t, c.lab.Outside, netip.AddrPortFrom(c1.IP, 8472), probe, n)
	if got := settle(dropreason.UnknownTunnelSource, before); got != n {
		t.Errorf("VXLAN from the outside host: UNKNOWN_TUNNEL_SOURCE +%d, want +%d", got, n)
	}
	// From site-b's node, through the NAT (the only way it reaches c1): a node of a domain c1
	// cannot reach.
	before = count(dropreason.DomainUnreachable)
	sendUDP(t, c.node("b1").Netns, netip.AddrPortFrom(c1.PublicIP, 8472), probe, n)
	if got := settle(dropreason.DomainUnreachable, before); got != n {
		t.Errorf("VXLAN from site-b's node: DOMAIN_UNREACHABLE +%d, want +%d", got, n)
	}
}
