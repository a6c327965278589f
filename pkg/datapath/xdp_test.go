package datapath

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// xdpLinkInfo reads the pinned XDP link: its interface, program and ID.
func xdpLinkInfo(t *testing.T, pin string) (ifindex int, prog ebpf.ProgramID, id link.ID) {
	t.Helper()
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatalf("loading pinned link %s: %v", pin, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatalf("link info %s: %v", pin, err)
	}
	if info.XDP() == nil {
		t.Fatalf("%s is not an XDP link", pin)
	}
	return int(info.XDP().Ifindex), info.Program, info.ID
}

// xdpAttached returns the XDP program ID netlink reports on an interface of netns (0: none).
func xdpAttached(t *testing.T, netns ns.NetNS, name string) uint32 {
	t.Helper()
	var id uint32
	if err := netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			id = x.ProgId
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestXDPAttachReload(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	netns := testNetns(t)
	a0, b0 := ifindexIn(t, netns, "a0"), ifindexIn(t, netns, "b0")
	pin := filepath.Join(root, linksDir, linkUnderlayXDP)

	d := mustLoad(t, root)
	var mode string
	err := netns.Do(func(ns.NetNS) (err error) {
		mode, err = d.AttachUnderlayXDP(a0)
		return err
	})
	if err != nil {
		t.Fatalf("AttachUnderlayXDP: %+v", err)
	}
	if mode != XDPGeneric {
		t.Errorf("mode %q on a veth, want %q", mode, XDPGeneric)
	}
	ifindex, prog, id := xdpLinkInfo(t, pin)
	if ifindex != a0 || prog != programID(t, d.Program(progNodeXDP)) {
		t.Errorf("link on ifindex %d running program %d, want %d running node_xdp", ifindex, prog, a0)
	}
	a, err := ReadAttachments(root)
	if err != nil || !a.Attached[AttachUnderlayXDP] {
		t.Errorf("ReadAttachments: %v %v, want underlay-xdp attached", a.Attached, err)
	}
	d.Close()
	if got := xdpAttached(t, netns, "a0"); got != uint32(prog) {
		t.Fatalf("a0 runs XDP program %d after the agent closed, want %d", got, prog)
	}

	// A second agent updates the link in place.
	d2 := mustLoad(t, root)
	if err := netns.Do(func(ns.NetNS) error { _, err := d2.AttachUnderlayXDP(a0); return err }); err != nil {
		t.Fatalf("re-attach: %v", err)
	}
	_, prog2, id2 := xdpLinkInfo(t, pin)
	if id2 != id {
		t.Errorf("XDP link was replaced (id %d -> %d), want an in-place update", id, id2)
	}
	if want := programID(t, d2.Program(progNodeXDP)); prog2 != want || prog2 == prog {
		t.Errorf("XDP link runs program %d, want the new node_xdp %d", prog2, want)
	}

	// Another NIC: the link moves.
	if err := netns.Do(func(ns.NetNS) error { _, err := d2.AttachUnderlayXDP(b0); return err }); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := xdpLinkInfo(t, pin); got != b0 {
		t.Errorf("XDP link on ifindex %d, want %d", got, b0)
	}
	if got := xdpAttached(t, netns, "a0"); got != 0 {
		t.Errorf("a0 still runs XDP program %d", got)
	}

	d2.Close()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	if got := xdpAttached(t, netns, "b0"); got != 0 {
		t.Errorf("b0 still runs XDP program %d after Cleanup", got)
	}
}

// The mode per device: native where the driver has XDP (tap), generic where it has none (a
// bridge) and on a veth, where a native link found pinned (an older agent's) is replaced.
func TestXDPModes(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	netns := testNetns(t)
	ifindex := map[string]int{"a0": ifindexIn(t, netns, "a0")}
	if err := netns.Do(func(ns.NetNS) error {
		for _, l := range []netlink.Link{
			&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tap0"}, Mode: netlink.TUNTAP_MODE_TAP},
			&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}},
		} {
			if err := netlink.LinkAdd(l); err != nil {
				return err
			}
			ifindex[l.Attrs().Name] = l.Attrs().Index
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d := mustLoad(t, root)
	pin := filepath.Join(root, linksDir, linkUnderlayXDP)
	attach := func(dev string) string {
		var mode string
		if err := netns.Do(func(ns.NetNS) (err error) {
			mode, err = d.AttachUnderlayXDP(ifindex[dev])
			return err
		}); err != nil {
			t.Fatalf("AttachUnderlayXDP(%s): %+v", dev, err)
		}
		if got, _, _ := xdpLinkInfo(t, pin); got != ifindex[dev] {
			t.Errorf("XDP link on ifindex %d, want %s's %d", got, dev, ifindex[dev])
		}
		return mode
	}
	for _, c := range []struct{ dev, want string }{
		{"tap0", XDPNative}, {"tap0", XDPNative}, {"br0", XDPGeneric}, {"br0", XDPGeneric},
	} {
		if mode := attach(c.dev); mode != c.want {
			t.Errorf("%s: mode %q, want %q", c.dev, mode, c.want)
		}
	}

	if err := netns.Do(func(ns.NetNS) error {
		old, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			return err
		}
		defer old.Close()
		// Detached, not only unpinned: 5.10 drops an unpinned link's reference after an RCU grace
		// period, and br0 would still run it when the test looks.
		if err := releaseLink(old, pin); err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: d.Program(progNodeXDP), Interface: ifindex["a0"], Flags: link.XDPDriverMode})
		if err != nil {
			return err
		}
		defer l.Close()
		return l.Pin(pin)
	}); err != nil {
		t.Fatal(err)
	}
	if mode := attach("a0"); mode != XDPGeneric {
		t.Errorf("veth with a native link pinned: mode %q after converging, want %q", mode, XDPGeneric)
	}
	d.Close()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	for dev := range ifindex {
		if got := xdpAttached(t, netns, dev); got != 0 {
			t.Errorf("%s still runs XDP program %d after Cleanup", dev, got)
		}
	}
}

// Real packets through the attached program: a client netns sends UDP over a veth to the node's
// NIC; the datagrams for a closed NodePort never reach the socket listening on that port, the
// others do.
func TestXDPDropsOnTheWire(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	node, client := testNetns(t), testNetns(t)
	var nic int
	err := node.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "client0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("client0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(client.Fd())); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		nic = l.Attrs().Index
		return addrUp(l, nodeIP.String()+"/24")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("client0")
		if err != nil {
			return err
		}
		return addrUp(l, strangerIP.String()+"/24")
	}); err != nil {
		t.Fatal(err)
	}

	d := mustLoad(t, root)
	if err := d.Map("node_cfg_map").Put(uint32(0), testNodeCfg()); err != nil {
		t.Fatal(err)
	}
	closed := xdpLbSvcKey{Port: be16(closedUDP), Proto: protoUDP, Scope: lbScopeExternal}
	if err := d.Map("lb_svc_map").Put(closed, xdpLbSvc{Flags: lbSvcNodePort | lbSvcClosed}); err != nil {
		t.Fatal(err)
	}
	if err := node.Do(func(ns.NetNS) error { _, err := d.AttachUnderlayXDP(nic); return err }); err != nil {
		t.Fatal(err)
	}

	listen := func(port uint16) net.PacketConn {
		var c net.PacketConn
		if err := node.Do(func(ns.NetNS) (err error) {
			c, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closedConn, openConn := listen(closedUDP), listen(closedUDP+1)
	const sent = 5
	if err := client.Do(func(ns.NetNS) error {
		for _, port := range []uint16{closedUDP, closedUDP + 1} {
			c, err := net.Dial("udp4", netip.AddrPortFrom(nodeIP, port).String())
			if err != nil {
				return err
			}
			for range sent {
				if _, err := c.Write([]byte("hello")); err != nil {
					c.Close()
					return err
				}
			}
			c.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	received := func(c net.PacketConn) int {
		n := 0
		buf := make([]byte, 64)
		for {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, _, err := c.ReadFrom(buf); err != nil {
				return n
			}
			n++
		}
	}
	if got := received(openConn); got != sent {
		t.Errorf("open port received %d datagrams, want %d", got, sent)
	}
	if got := received(closedConn); got != 0 {
		t.Errorf("closed NodePort received %d datagrams, want 0", got)
	}
	var per []xdpMetric
	if err := d.Map("metrics_map").Lookup(uint32(dirNodeXDP*metricsReasons+int(dropreason.NodePortClosed)), &per); err != nil {
		t.Fatal(err)
	}
	var drops uint64
	for _, m := range per {
		drops += m.Packets
	}
	if drops != sent {
		t.Errorf("node-xdp NODEPORT_CLOSED counted %d, want %d", drops, sent)
	}
}

func addrUp(l netlink.Link, cidr string) error {
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, addr); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}
