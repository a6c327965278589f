package netdev

import (
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/internal/netnstest"
)

// TestEnsureBigTCPv4: a NIC whose TSO takes 192 KiB packets (a veth: 512 KiB) gets BIG TCP's
// IPv4 GSO and GRO size, once; one whose TSO stops at 64 KiB (a bridge) is refused with the
// reason, and keeps its size. A kernel before 6.3 refuses every NIC (the size does not stick).
func TestEnsureBigTCPv4(t *testing.T) {
	netnstest.Run(t, func() {
		eth := underlayFixture(t)
		size, err := EnsureBigTCPv4(eth.Attrs().Index, BigTCPv4Size)
		if err != nil && strings.Contains(err.Error(), "no IPv4 BIG TCP") {
			if size != 0 {
				t.Errorf("refused, but size %d in effect", size)
			}
			t.Skipf("%v: the agent leaves BIG TCP off on this kernel", err)
		}
		if err != nil || size != BigTCPv4Size {
			t.Fatalf("EnsureBigTCPv4(veth) = %d, %v; want %d", size, err, BigTCPv4Size)
		}
		got, err := netlink.LinkByIndex(eth.Attrs().Index)
		must(t, err)
		if a := got.Attrs(); a.GSOIPv4MaxSize != BigTCPv4Size || a.GROIPv4MaxSize != BigTCPv4Size {
			t.Errorf("eth0 has gso_ipv4_max_size %d, gro_ipv4_max_size %d; want %d", a.GSOIPv4MaxSize, a.GROIPv4MaxSize, BigTCPv4Size)
		}
		if size, err := EnsureBigTCPv4(eth.Attrs().Index, BigTCPv4Size); err != nil || size != BigTCPv4Size {
			t.Errorf("again: %d, %v", size, err)
		}

		must(t, netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}))
		br, err := netlink.LinkByName("br0")
		must(t, err)
		size, err = EnsureBigTCPv4(br.Attrs().Index, BigTCPv4Size)
		if err == nil || size != 0 || !strings.Contains(err.Error(), "takes TSO packets of at most 65536 bytes") {
			t.Errorf("EnsureBigTCPv4(bridge) = %d, %v; want 0 and the TSO limit", size, err)
		}
		if got, _ := netlink.LinkByName("br0"); got.Attrs().GSOIPv4MaxSize != 65536 /* the kernel's legacy size */ {
			t.Errorf("the bridge's gso_ipv4_max_size became %d", got.Attrs().GSOIPv4MaxSize)
		}
	})
}
