package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// closedPort is a UDP port nothing in the lab listens on.
const closedPort = 9199

// TestICMPErrorsReachSender: UDP to a closed port draws an ICMP port unreachable that gets back
// to the sending pod, whose connected socket reports ECONNREFUSED: from a pod on the same node,
// on another node, and from the outside host, where the pod is masqueraded and the error, which
// quotes the node's address and port, is translated back.
func TestICMPErrorsReachSender(t *testing.T) {
	sharedLab(t)
	src := shared.pods[0] // pod-1a
	cases := []struct {
		name string
		dst  netip.Addr
	}{
		{"same node " + shared.pods[1].Name, shared.pods[1].IP},
		{"remote node " + shared.pods[2].Name, shared.pods[2].IP},
		{"outside (masqueraded)", lab.OutsideIP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := udpRefused(src.Netns, netip.AddrPortFrom(tc.dst, closedPort)); err != nil {
				t.Errorf("%s (%s on %s) -> %s: %v", src.Name, src.IP, src.Node.Name, tc.dst, err)
			}
		})
	}
}

// udpRefused sends a datagram from ns to dst, where nothing listens, and waits for the socket to
// report ECONNREFUSED. Datagrams are sent again (an error may be rate-limited or the first packet
// lost), three times at most.
func udpRefused(ns lab.Netns, dst netip.AddrPort) error {
	c, err := lab.DialUDP(ns, dst, false)
	if err != nil {
		return err
	}
	defer c.Close()
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		if _, err := c.Write([]byte("anyone there?")); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) { // the error of an earlier attempt, late
				return nil
			}
			return fmt.Errorf("send: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.Read(make([]byte, 64))
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		last = err
	}
	return fmt.Errorf("no ICMP port unreachable reached the socket (want ECONNREFUSED): %v", last)
}
