package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
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

// addTaps creates persistent tap devices in netns and returns their ifindexes by name. A tap's
// driver runs XDP natively; with no file descriptor open, nothing arrives on it.
func addTaps(t *testing.T, netns ns.NetNS, names ...string) map[string]int {
	t.Helper()
	ifindex := make(map[string]int, len(names))
	if err := netns.Do(func(ns.NetNS) error {
		for _, name := range names {
			tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP}
			if err := netlink.LinkAdd(tap); err != nil {
				return err
			}
			ifindex[name] = tap.Attrs().Index
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ifindex
}

// xdpModeIn is how a device of netns runs its XDP program ("" for none), as netlink reports it.
func xdpModeIn(t *testing.T, netns ns.NetNS, ifindex int) string {
	t.Helper()
	var mode string
	if err := netns.Do(func(ns.NetNS) error { mode = xdpMode(ifindex); return nil }); err != nil {
		t.Fatal(err)
	}
	return mode
}

// attachXDPIn runs AttachUnderlayXDP in netns.
func attachXDPIn(t *testing.T, netns ns.NetNS, d *Datapath, ifindex int) string {
	t.Helper()
	var mode string
	if err := netns.Do(func(ns.NetNS) (err error) {
		mode, err = d.AttachUnderlayXDP(ifindex)
		return err
	}); err != nil {
		t.Fatalf("AttachUnderlayXDP(%d): %+v", ifindex, err)
	}
	return mode
}

func TestXDPAttachReload(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	netns := testNetns(t)
	taps := addTaps(t, netns, "tap0", "tap1")
	tap0, tap1 := taps["tap0"], taps["tap1"]
	pin := filepath.Join(root, linksDir, linkUnderlayXDP)

	d := mustLoad(t, root)
	if mode := attachXDPIn(t, netns, d, tap0); mode != XDPNative {
		t.Errorf("mode %q on a tap, want %q", mode, XDPNative)
	}
	ifindex, prog, id := xdpLinkInfo(t, pin)
	if ifindex != tap0 || prog != programID(t, d.Program(progNodeXDP)) {
		t.Errorf("link on ifindex %d running program %d, want %d running node_xdp", ifindex, prog, tap0)
	}
	a, err := ReadAttachments(root)
	if err != nil || !a.Attached[AttachUnderlayXDP] {
		t.Errorf("ReadAttachments: %v %v, want underlay-xdp attached", a.Attached, err)
	}
	d.Close()
	if got := xdpAttached(t, netns, "tap0"); got != uint32(prog) {
		t.Fatalf("tap0 runs XDP program %d after the agent closed, want %d", got, prog)
	}

	// A second agent updates the link in place.
	d2 := mustLoad(t, root)
	if mode := attachXDPIn(t, netns, d2, tap0); mode != XDPNative {
		t.Errorf("re-attach: mode %q, want %q", mode, XDPNative)
	}
	_, prog2, id2 := xdpLinkInfo(t, pin)
	if id2 != id {
		t.Errorf("XDP link was replaced (id %d -> %d), want an in-place update", id, id2)
	}
	if want := programID(t, d2.Program(progNodeXDP)); prog2 != want || prog2 == prog {
		t.Errorf("XDP link runs program %d, want the new node_xdp %d", prog2, want)
	}

	// Another NIC: the link moves.
	attachXDPIn(t, netns, d2, tap1)
	if got, _, _ := xdpLinkInfo(t, pin); got != tap1 {
		t.Errorf("XDP link on ifindex %d, want %d", got, tap1)
	}
	if got := xdpAttached(t, netns, "tap0"); got != 0 {
		t.Errorf("tap0 still runs XDP program %d", got)
	}

	d2.Close()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	if got := xdpAttached(t, netns, "tap1"); got != 0 {
		t.Errorf("tap1 still runs XDP program %d after Cleanup", got)
	}
}

// The mode per device: native where the driver runs XDP (tap); none, with nothing attached and no
// pin, on a veth and where the driver has no XDP (a bridge), also after a native link elsewhere.
func TestXDPModes(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	netns := testNetns(t)
	ifindex := addTaps(t, netns, "tap0")
	ifindex["a0"] = ifindexIn(t, netns, "a0")
	if err := netns.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		ifindex["br0"] = br.Attrs().Index
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d := mustLoad(t, root)
	pin := filepath.Join(root, linksDir, linkUnderlayXDP)
	var linkID link.ID
	for _, c := range []struct{ dev, want string }{
		{"a0", XDPNone}, {"tap0", XDPNative}, {"tap0", XDPNative}, {"br0", XDPNone}, {"br0", XDPNone}, {"a0", XDPNone},
	} {
		if mode := attachXDPIn(t, netns, d, ifindex[c.dev]); mode != c.want {
			t.Errorf("%s: mode %q, want %q", c.dev, mode, c.want)
		}
		for dev, idx := range ifindex {
			want := ""
			if dev == c.dev && c.want == XDPNative {
				want = XDPNative
			}
			if got := xdpModeIn(t, netns, idx); got != want {
				t.Errorf("after attaching to %s: %s runs XDP in mode %q, want %q", c.dev, dev, got, want)
			}
		}
		if c.want == XDPNone {
			if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s exists (%v), want no link pinned", c.dev, pin, err)
			}
			continue
		}
		got, _, id := xdpLinkInfo(t, pin)
		if got != ifindex[c.dev] {
			t.Errorf("XDP link on ifindex %d, want %s's %d", got, c.dev, ifindex[c.dev])
		}
		if linkID != 0 && id != linkID {
			t.Errorf("%s again: link %d replaced by %d, want an in-place update", c.dev, linkID, id)
		}
		linkID = id
	}
	a, err := ReadAttachments(root)
	if err != nil || a.Attached[AttachUnderlayXDP] {
		t.Errorf("ReadAttachments on a veth: %v %v, want underlay-xdp not attached", a.Attached, err)
	}
	d.Close()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
}

// A link an older agent pinned, in generic mode anywhere or in native mode on a veth, is released
// on converge; on a NIC with native XDP the new link runs natively.
func TestXDPReleasesOlderAgentsLinks(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	netns := testNetns(t)
	ifindex := addTaps(t, netns, "tap0")
	ifindex["a0"] = ifindexIn(t, netns, "a0")
	d := mustLoad(t, root)
	pin := filepath.Join(root, linksDir, linkUnderlayXDP)
	for _, c := range []struct {
		dev   string
		older link.XDPAttachFlags
		want  string
	}{
		{"a0", link.XDPGenericMode, XDPNone},
		{"a0", link.XDPDriverMode, XDPNone},
		{"tap0", link.XDPGenericMode, XDPNative},
	} {
		var older link.ID
		if err := netns.Do(func(ns.NetNS) error {
			l, err := link.AttachXDP(link.XDPOptions{Program: d.Program(progNodeXDP), Interface: ifindex[c.dev], Flags: c.older})
			if err != nil {
				return err
			}
			defer l.Close()
			info, err := l.Info()
			if err != nil {
				return err
			}
			older = info.ID
			return l.Pin(pin)
		}); err != nil {
			t.Fatalf("%s: pinning an older agent's link: %v", c.dev, err)
		}
		if mode := attachXDPIn(t, netns, d, ifindex[c.dev]); mode != c.want {
			t.Errorf("%s with a link pinned in flags %v: mode %q, want %q", c.dev, c.older, mode, c.want)
		}
		wantMode := ""
		if c.want == XDPNative {
			wantMode = XDPNative
			if _, _, id := xdpLinkInfo(t, pin); id == older {
				t.Errorf("%s: the older agent's link %d is still pinned", c.dev, older)
			}
		}
		if got := xdpModeIn(t, netns, ifindex[c.dev]); got != wantMode {
			t.Errorf("%s after converging: XDP mode %q, want %q", c.dev, got, wantMode)
		}
		if err := netns.Do(func(ns.NetNS) error {
			l, err := link.LoadPinnedLink(pin, nil)
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			defer l.Close()
			return releaseLink(l, pin)
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// A driver that refuses native XDP is reported once, not on every convergence pass, and again
// when it changes.
func TestXDPRefusalLoggedOnce(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	netns := testNetns(t)
	ifindex := addTaps(t, netns, "tap0")
	if err := netns.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		ifindex["br0"] = br.Attrs().Index
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	d := mustLoad(t, root)
	for _, dev := range []string{"br0", "br0", "br0", "tap0", "tap0", "br0"} {
		attachXDPIn(t, netns, d, ifindex[dev])
	}
	refused := strings.Count(logs.String(), "the driver refused native XDP")
	native := strings.Count(logs.String(), "node_xdp runs in native mode")
	if refused != 2 || native != 1 {
		t.Errorf("logged %d refusals and %d native attachments, want 2 and 1:\n%s", refused, native, logs.String())
	}
	d.Close()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
}

// nodePortWire is a node netns with a NIC holding nodeIP, node_cfg_map written, UDP closedUDP a
// closed NodePort and sockets listening on it and on closedUDP+1.
type nodePortWire struct {
	d                    *Datapath
	node                 ns.NetNS
	closedConn, openConn net.PacketConn
}

func newNodePortWire(t *testing.T, node ns.NetNS, root string, nic netlink.Link) *nodePortWire {
	t.Helper()
	if err := node.Do(func(ns.NetNS) error { return addrUp(nic, nodeIP.String()+"/24") }); err != nil {
		t.Fatal(err)
	}
	w := &nodePortWire{d: mustLoad(t, root), node: node}
	if err := w.d.Map("node_cfg_map").Put(uint32(0), testNodeCfg()); err != nil {
		t.Fatal(err)
	}
	closed := xdpLbSvcKey{Port: be16(closedUDP), Proto: protoUDP, Scope: lbScopeExternal}
	if err := w.d.Map("lb_svc_map").Put(closed, xdpLbSvc{Flags: lbSvcNodePort | lbSvcClosed}); err != nil {
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
	w.closedConn, w.openConn = listen(closedUDP), listen(closedUDP+1)
	return w
}

// check asserts that the open port received sent datagrams, the closed NodePort none, and that
// dir counted sent NODEPORT_CLOSED drops.
func (w *nodePortWire) check(t *testing.T, sent int, dir int, dirName string) {
	t.Helper()
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
	if got := received(w.openConn); got != sent {
		t.Errorf("open port received %d datagrams, want %d", got, sent)
	}
	if got := received(w.closedConn); got != 0 {
		t.Errorf("closed NodePort received %d datagrams, want 0", got)
	}
	var per []xdpMetric
	if err := w.d.Map("metrics_map").Lookup(uint32(dir*metricsReasons+int(dropreason.NodePortClosed)), &per); err != nil {
		t.Fatal(err)
	}
	var drops uint64
	for _, m := range per {
		drops += m.Packets
	}
	if drops != uint64(sent) {
		t.Errorf("%s NODEPORT_CLOSED counted %d, want %d", dirName, drops, sent)
	}
}

// Real packets on a veth NIC, which gets no XDP program: a client netns sends UDP over the veth;
// node_ingress (tc) drops the datagrams for a closed NodePort before they reach the socket
// listening on that port, and counts them under node-in; the others arrive.
func TestNodePortDropOnTheWire(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	node, client := testNetns(t), testNetns(t)
	var nic netlink.Link
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
		nic, err = netlink.LinkByName("eth0")
		return err
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

	w := newNodePortWire(t, node, root, nic)
	if err := node.Do(func(ns.NetNS) error { return w.d.AttachUnderlay(nic.Attrs().Index) }); err != nil {
		t.Fatal(err)
	}
	if mode := attachXDPIn(t, node, w.d, nic.Attrs().Index); mode != XDPNone {
		t.Fatalf("XDP mode %q on a veth, want %q", mode, XDPNone)
	}

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
	w.check(t, sent, dirNodeIn, "node-in")
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
}

// Real frames through node_xdp in native mode: frames written into a tap (whose driver runs XDP
// natively, on the frame before any skb) for a closed NodePort are dropped and counted under
// node-xdp; the others reach their socket.
func TestXDPNativeDropOnTheWire(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	node := testNetns(t)
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: netlink.TUNTAP_NO_PI, Queues: 1, NonPersist: true}
	var nic netlink.Link
	if err := node.Do(func(ns.NetNS) (err error) {
		if err := netlink.LinkAdd(tap); err != nil {
			return err
		}
		nic, err = netlink.LinkByName("eth0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	wire := tap.Fds[0] // the frames the "wire" delivers to the NIC
	t.Cleanup(func() { wire.Close() })

	w := newNodePortWire(t, node, root, nic)
	if err := node.Do(func(ns.NetNS) error { return w.d.AttachUnderlay(nic.Attrs().Index) }); err != nil {
		t.Fatal(err)
	}
	if mode := attachXDPIn(t, node, w.d, nic.Attrs().Index); mode != XDPNative {
		t.Fatalf("XDP mode %q on a tap, want %q", mode, XDPNative)
	}

	var nicMAC [6]byte
	copy(nicMAC[:], nic.Attrs().HardwareAddr)
	const sent = 5
	for _, port := range []uint16{closedUDP, closedUDP + 1} {
		udp := udpSeg(strangerIP, nodeIP, 40000, port, []byte("hello"), true)
		frame := ethFrame(nicMAC, anyMAC, ethPIPv4, ipHdr{src: strangerIP, dst: nodeIP, proto: protoUDP}.build(udp))
		for range sent {
			if _, err := wire.Write(frame); err != nil {
				t.Fatalf("writing a frame into the tap: %v", err)
			}
		}
	}
	w.check(t, sent, dirNodeXDP, "node-xdp")
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
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
