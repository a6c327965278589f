package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The underlay NIC's XDP program (bpf/xdp.c) drops packets for NodePorts this node does not listen
// on before the kernel builds an skb for them. It is attached with a bpf_link pinned at
// <root>/links/underlay-xdp, converged like the tcx links: updated in place on restart, replaced
// when the NIC changed, removed by Cleanup.
//
// Native (driver) mode is tried first: only there does the drop save the skb. A driver without
// XDP, or one that refuses it as configured (LRO on, an MTU beyond its XDP buffers), gets generic
// mode: the same program on the skb in the receive path. A veth gets generic mode directly: its
// packets arrive as skbs built by the peer whatever the mode, so native mode saves nothing there,
// and it costs plenty: the kernel turns TSO off on the peer of a veth with a native program, so
// bulk TCP through it is segmented in software (the lab measured tcp_stream at 0.37x Flannel in
// native mode against 1.30x in generic mode and 1.20x without XDP; docs/benchmarks.md). A
// program someone else attached to the NIC is not replaced; that is an error naming it.
const linkUnderlayXDP = "underlay-xdp"

// XDP attach modes, as AttachUnderlayXDP reports them.
const (
	XDPNative  = "native"
	XDPGeneric = "generic"
)

// AttachUnderlayXDP attaches node_xdp to the underlay NIC and returns the mode it runs in.
func (d *Datapath) AttachUnderlayXDP(ifindex int) (string, error) {
	mode, err := ensureXDP(d.linkPin(linkUnderlayXDP), d.programs[progNodeXDP], ifindex)
	if err != nil {
		return "", fmt.Errorf("attaching node_xdp to the underlay NIC: %w", err)
	}
	return mode, nil
}

// ensureXDP converges the XDP link pinned at pin to prog on ifindex.
func ensureXDP(pin string, prog *ebpf.Program, ifindex int) (string, error) {
	if prog == nil {
		return "", errors.New("program not loaded")
	}
	genericOnly := isVeth(ifindex)
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		target, ok := xdpTarget(l)
		mode := xdpMode(ifindex)
		if ok && target == ifindex && !(genericOnly && mode == XDPNative) {
			err := l.Update(prog)
			l.Close()
			if err != nil {
				return "", fmt.Errorf("updating %s: %w", pin, err)
			}
			return mode, nil
		}
		// Another interface, the NIC is gone, or a veth in native mode: drop the old attachment.
		rerr := releaseLink(l, pin)
		l.Close()
		if rerr != nil {
			return "", fmt.Errorf("replacing %s: %w", pin, rerr)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return "", fmt.Errorf("opening %s: %w", pin, err)
	}

	l, mode, err := attachXDP(prog, ifindex, genericOnly)
	if err != nil {
		return "", err
	}
	defer l.Close() // the pin keeps the link
	return mode, pinLink(l, pin)
}

func attachXDP(prog *ebpf.Program, ifindex int, genericOnly bool) (link.Link, string, error) {
	var native error
	if !genericOnly {
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
		if err == nil {
			return l, XDPNative, nil
		}
		if err := xdpFatal(err, ifindex); err != nil {
			return nil, "", err
		}
		native = err
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPGenericMode})
	if err != nil {
		if ferr := xdpFatal(err, ifindex); ferr != nil {
			return nil, "", ferr
		}
		if native == nil {
			return nil, "", fmt.Errorf("attaching xdp in generic mode to ifindex %d: %w", ifindex, err)
		}
		return nil, "", fmt.Errorf("attaching xdp to ifindex %d: native mode: %v; generic mode: %w", ifindex, native, err)
	}
	if native != nil {
		slog.Info("the underlay NIC's driver refused native XDP; attached in generic mode", "ifindex", ifindex, "reason", native)
	}
	return l, XDPGeneric, nil
}

// xdpFatal explains the attach errors that another mode would not cure, and returns nil for the
// others.
func xdpFatal(err error, ifindex int) error {
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("XDP links need Linux 5.9: %w", err)
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
		return fmt.Errorf("ifindex %d already has another XDP program attached (ip link show): %w", ifindex, err)
	}
	return nil
}

// isVeth tells whether ifindex is a veth, which gets generic mode (see above).
func isVeth(ifindex int) bool {
	l, err := netlink.LinkByIndex(ifindex)
	return err == nil && l.Type() == "veth"
}

// xdpTarget returns the interface an XDP link is attached to; 0 means the interface is gone.
func xdpTarget(l link.Link) (int, bool) {
	info, err := l.Info()
	if err != nil {
		return 0, false
	}
	x := info.XDP()
	if x == nil {
		return 0, false
	}
	return int(x.Ifindex), true
}

// xdpMode tells how the interface runs its XDP program; "" when netlink cannot say.
func xdpMode(ifindex int) string {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil {
		return ""
	}
	switch l.Attrs().Xdp.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		return XDPNative
	case nl.XDP_ATTACHED_SKB:
		return XDPGeneric
	}
	return ""
}
