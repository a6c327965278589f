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
// on before the kernel builds an skb for them. It is an accelerator, not the guard: node_ingress
// (tc) takes the same decision (lib/nodeport.h) on every packet that reaches it, so a closed
// NodePort stays closed without XDP, and readiness does not wait for the XDP link
// (OptionalAttachPoints, status.go).
//
// It runs in native (driver) mode only; where a NIC cannot run it natively, nothing is attached
// (mode XDPNone) and node_ingress drops. Generic mode, the same program on the skb, is never used:
// before a generic program runs the kernel linearizes every non-linear skb (do_xdp_generic ->
// __pskb_pull_tail -> skb_copy_bits, one copy of up to 64 KiB per GRO aggregate), for the
// overlay's VXLAN and the node's own traffic alike. Profiling bulk TCP found 10-13% of the CPU
// there (docs/benchmarks.md); tc sees the same skb without the copy. So:
//   - a veth gets none directly: its packets are skbs its peer built, so native mode would save
//     no skb, and a native program on a veth makes the kernel turn TSO off on the peer (the lab
//     measured bulk TCP at 0.37x Flannel that way, docs/benchmarks.md);
//   - a driver that refuses native XDP (no XDP support, LRO on, an MTU beyond its XDP buffers)
//     gets none, and the reason is logged once;
//   - a link pinned by an older agent in generic mode, or in native mode on a veth, is released.
//
// The link is pinned at <root>/links/underlay-xdp and converged like the tcx links: updated in
// place on restart, replaced when the NIC changed, removed by Cleanup. A program someone else
// attached to the NIC is not replaced; that is an error naming it.
const linkUnderlayXDP = "underlay-xdp"

// XDP modes, as AttachUnderlayXDP reports them.
const (
	XDPNative = "native" // node_xdp runs in the driver
	XDPNone   = "none"   // no XDP program: node_ingress (tc) drops closed NodePorts

	xdpGeneric = "generic" // the skb mode older agents used; only ever released
)

// AttachUnderlayXDP converges node_xdp on the underlay NIC and returns the mode it runs in:
// XDPNative, or XDPNone when the NIC is a veth or its driver refused (logged when that changes).
func (d *Datapath) AttachUnderlayXDP(ifindex int) (string, error) {
	mode, why, err := ensureXDP(d.linkPin(linkUnderlayXDP), d.programs[progNodeXDP], ifindex)
	if err != nil {
		return "", fmt.Errorf("attaching node_xdp to the underlay NIC: %w", err)
	}
	if state := fmt.Sprintf("%d %s %s", ifindex, mode, why); state != d.xdpState {
		d.xdpState = state
		if mode == XDPNone {
			slog.Info("no XDP program on the underlay NIC; node_ingress (tc) drops closed NodePorts", "ifindex", ifindex, "reason", why)
		} else {
			slog.Info("node_xdp runs in native mode on the underlay NIC", "ifindex", ifindex)
		}
	}
	return mode, nil
}

// ensureXDP converges the XDP link pinned at pin to prog on ifindex, in native mode or not at
// all; for XDPNone it also says why.
func ensureXDP(pin string, prog *ebpf.Program, ifindex int) (mode, why string, err error) {
	if prog == nil {
		return "", "", errors.New("program not loaded")
	}
	veth := isVeth(ifindex)
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		target, ok := xdpTarget(l)
		if ok && target == ifindex && !veth && xdpMode(ifindex) == XDPNative {
			err := l.Update(prog)
			l.Close()
			if err != nil {
				return "", "", fmt.Errorf("updating %s: %w", pin, err)
			}
			return XDPNative, "", nil
		}
		// Another interface, the NIC is gone, a veth, or generic mode (an older agent's).
		rerr := releaseLink(l, pin)
		l.Close()
		if rerr != nil {
			return "", "", fmt.Errorf("replacing %s: %w", pin, rerr)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return "", "", fmt.Errorf("opening %s: %w", pin, err)
	}

	if veth {
		return XDPNone, "a veth: native XDP would save no skb and turn TSO off on its peer", nil
	}
	l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		if ferr := xdpFatal(err, ifindex); ferr != nil {
			return "", "", ferr
		}
		return XDPNone, fmt.Sprintf("the driver refused native XDP: %v", err), nil
	}
	defer l.Close() // the pin keeps the link
	return XDPNative, "", pinLink(l, pin)
}

// xdpFatal explains the attach errors that are not a driver's refusal, and returns nil for the
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

// isVeth tells whether ifindex is a veth, which gets no XDP program (see above).
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

// xdpMode tells how the interface runs its XDP program, "" when there is none or netlink cannot
// say.
func xdpMode(ifindex int) string {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil {
		return ""
	}
	switch l.Attrs().Xdp.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		return XDPNative
	case nl.XDP_ATTACHED_SKB:
		return xdpGeneric
	}
	return ""
}
