package route

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// testPMTUAcrossModes: a route-mode pod has the underlay's MTU (1500), which its own domain's
// paths carry whole; toward the cloud its packets leave in VXLAN, which carries 1450. A datagram
// of 1500 bytes with DF reaches b3's pod (route mode, through the gateway); to c5's pod it is
// answered with "fragmentation needed" at the overlay MTU, the socket learns 1450, and a
// datagram of that size gets through (issue 16: PMTU stays correct where route and vxlan paths
// mix).
func testPMTUAcrossModes(t *testing.T, m *mixed) {
	pa1, pb3, pc5 := m.pods["a1"], m.pods["b3"], m.pods["c5"]
	if mtu, err := pa1.Netns.LinkMTU("eth0"); err != nil || mtu != lab.UnderlayMTU {
		t.Fatalf("%s's eth0: MTU %d, %v; want the underlay's %d (route mode)", pa1.Name, mtu, err, lab.UnderlayMTU)
	}
	overlayMTU := lab.UnderlayMTU - 50
	send := func(to *lab.Pod, port uint16, size int) (received int, sendErr error, mtu int) {
		t.Helper()
		dst := netip.AddrPortFrom(to.IP, port)
		rx, err := lab.ListenUDP(to.Netns, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer rx.Close()
		c, err := lab.DialUDP(pa1.Netns, dst, true)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The first datagram may meet the error; the socket reports it on its next call.
		payload := make([]byte, size-28)
		for try := 0; try < 3; try++ {
			if _, sendErr = c.Write(payload); sendErr != nil {
				break
			}
			_ = rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, _, err := rx.ReadFromUDPAddrPort(make([]byte, 65536)); err == nil {
				received = n + 28
				break
			}
		}
		mtu, _ = lab.PathMTU(c)
		return received, sendErr, mtu
	}
	if got, err, _ := send(pb3, 9301, lab.UnderlayMTU); got != lab.UnderlayMTU {
		t.Errorf("%s -> %s (route mode): a %d-byte datagram with DF arrived as %d bytes (%v)", pa1.Name, pb3.Name, lab.UnderlayMTU, got, err)
	}
	before := counter(t, m.nodes["a1"], metricsmap.DirPodEgress, dropreason.PktTooBig)
	got, err, mtu := send(pc5, 9302, lab.UnderlayMTU)
	if got != 0 || !errors.Is(err, syscall.EMSGSIZE) || mtu != overlayMTU {
		t.Errorf("%s -> %s (VXLAN): a %d-byte datagram with DF arrived as %d bytes, the socket says %v with path MTU %d; want nothing, EMSGSIZE and %d",
			pa1.Name, pc5.Name, lab.UnderlayMTU, got, err, mtu, overlayMTU)
	}
	if n := counter(t, m.nodes["a1"], metricsmap.DirPodEgress, dropreason.PktTooBig) - before; n == 0 {
		t.Errorf("a1's pod_egress counted no PKT_TOO_BIG: the error did not come from the datapath")
	}
	if got, err, _ := send(pc5, 9303, overlayMTU); got != overlayMTU {
		t.Errorf("%s -> %s (VXLAN): a %d-byte datagram with DF arrived as %d bytes (%v)", pa1.Name, pc5.Name, overlayMTU, got, err)
	}
}
