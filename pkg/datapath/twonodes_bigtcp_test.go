package datapath

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
)

// TestTwoNodesBigTCP runs a bulk TCP transfer pod to pod with BIG TCP (the agent's
// --ipv4-big-tcp: every device on the way takes IPv4 GSO packets of 192 KiB), over both ways
// a remote pod is reached:
//   - route: the packets cross as they are, BIG (the tap on the sending node's host veth sees
//     frames longer than 64 KiB, and so does the receiving node's NIC);
//   - vxlan (native encapsulation): a packet longer than VXLAN's length fields allow is not
//     encapsulated in BPF but handed to the collect_md device, which segments it first
//     (vxlan_native_fits); every byte arrives, and the device transmitted.
//
// On a kernel without IPv4 BIG TCP (before 6.3) the devices refuse the size, which is what the
// agent then finds too (it leaves BIG TCP off), and there is nothing to transfer BIG.
func TestTwoNodesBigTCP(t *testing.T) {
	for _, path := range []string{"route", "vxlan"} {
		t.Run(path, func(t *testing.T) {
			n1, n2 := newTwoNodes(t, bpffstest.Mount(t), "b"+path)
			for _, pair := range [][2]*twoNode{{n1, n2}, {n2, n1}} {
				pair[0].program(t, pair[1], 0 /* native */)
				pair[0].resolvePeer(t, pair[1], path == "route")
			}
			for _, n := range []*twoNode{n1, n2} {
				if err := n.bigTCP(netdev.BigTCPv4Size); err != nil {
					if strings.Contains(err.Error(), "no IPv4 BIG TCP") {
						t.Skipf("%v: the agent leaves BIG TCP off on this kernel", err)
					}
					t.Fatal(err)
				}
			}
			sent := tapLongest(t, n1.netns, n1.veth.Attrs().Index)
			received := tapLongest(t, n2.netns, n2.eth0.Attrs().Index)
			devBefore := linkTxPackets(t, n1.netns, "edgeplane.1")

			const size = 32 << 20
			took, err := sendTCP(n1, n2, size)
			if err != nil {
				t.Fatalf("%s: %d bytes %s -> %s: %v", path, size, n1.pod, n2.pod, err)
			}
			longestSent, longestReceived := sent.stop(), received.stop()
			viaDevice := linkTxPackets(t, n1.netns, "edgeplane.1") - devBefore
			t.Logf("%s: %d MiB in %v; longest frame from the pod %d bytes, on the peer's NIC %d; collect_md device transmitted %d packets",
				path, size>>20, took.Round(time.Millisecond), longestSent, longestReceived, viaDevice)
			if longestSent <= 65536 {
				t.Errorf("%s: the pod's TCP sent no packet longer than 64 KiB (longest %d bytes): BIG TCP not in effect", path, longestSent)
			}
			switch path {
			case "route":
				if longestReceived <= 65536 {
					t.Errorf("route: the peer's NIC received no packet longer than 64 KiB (longest %d bytes)", longestReceived)
				}
				if viaDevice != 0 {
					t.Errorf("route: %d packets went through the VXLAN device", viaDevice)
				}
			case "vxlan":
				if viaDevice == 0 {
					t.Error("vxlan: no packet went through the collect_md device: the BIG ones were encapsulated in BPF")
				}
			}
		})
	}
}

// bigTCP gives every link of the node's and its pod's namespaces but the VXLAN device (whose
// GSO size stays at 64 KiB, as the kernel's) the IPv4 GSO and GRO size, as the agent (the NIC)
// and the CNI plugin (the pod's veth pair) do.
func (n *twoNode) bigTCP(size int) error {
	for _, netns := range []ns.NetNS{n.netns, n.podNetns} {
		if err := netns.Do(func(ns.NetNS) error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if name := l.Attrs().Name; name == "lo" || name == "edgeplane.1" {
					continue
				}
				if err := netdev.SetGSOIPv4MaxSize(l, size); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// sendTCP sends size bytes from n1's pod to a sink in n2's pod, which answers with the count it
// read; it fails unless every byte arrived within a minute.
func sendTCP(n1, n2 *twoNode, size int) (time.Duration, error) {
	srv := make(chan net.Listener, 1)
	if err := n2.podNetns.Do(func(ns.NetNS) error {
		l, err := net.Listen("tcp4", ":7002")
		srv <- l
		return err
	}); err != nil {
		return 0, err
	}
	l := <-srv
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%d\n", n)
	}()
	var took time.Duration
	err := n1.podNetns.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(n2.pod, 7002).String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		start := time.Now()
		c.SetDeadline(start.Add(time.Minute))
		chunk := make([]byte, 256<<10)
		for i := range chunk {
			chunk[i] = byte(i * 7)
		}
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return fmt.Errorf("after %d bytes: %w", sent, err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		var got int
		if _, err := fmt.Fscan(c, &got); err != nil {
			return fmt.Errorf("no count from the sink after %v: %w", time.Since(start).Round(time.Millisecond), err)
		}
		if got != size {
			return fmt.Errorf("the sink read %d bytes", got)
		}
		took = time.Since(start)
		return nil
	})
	return took, err
}

// longestTap records the longest frame an interface receives (an AF_PACKET socket sees a GSO
// packet whole, before anything segments it).
type longestTap struct {
	tap     *packetTap
	longest atomic.Int64
}

func tapLongest(t *testing.T, netns ns.NetNS, ifindex int) *longestTap {
	t.Helper()
	lt := &longestTap{}
	// The length is all it keeps: with MSG_TRUNC the read says the whole frame's.
	lt.tap = startTap(t, netns, ifindex, 64, unix.MSG_TRUNC, func(_ []byte, n int) {
		if int64(n) > lt.longest.Load() {
			lt.longest.Store(int64(n))
		}
	})
	return lt
}

// stop ends the tap and returns the longest frame it saw.
func (lt *longestTap) stop() int64 {
	lt.tap.stop()
	return lt.longest.Load()
}

func linkTxPackets(t *testing.T, netns ns.NetNS, name string) uint64 {
	t.Helper()
	var packets uint64
	if err := netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		packets = l.Attrs().Statistics.TxPackets
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return packets
}
