package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Link pins under <root>/links.
const (
	linkUnderlayIngress = "underlay-ingress"
	linkUnderlayEgress  = "underlay-egress"
	linkOverlayIngress  = "overlay-ingress"
	linkOverlayEgress   = "overlay-egress"
	podLinkPrefix       = "pod-"
)

// direction is a TC hook: tcx attach type and, for the netlink fallback, the clsact parent.
type direction struct {
	name   string
	tcx    ebpf.AttachType
	parent uint32
}

var (
	ingress = direction{"ingress", ebpf.AttachTCXIngress, 0xFFFFFFF2} // netlink.HANDLE_MIN_INGRESS
	egress  = direction{"egress", ebpf.AttachTCXEgress, 0xFFFFFFF3}   // netlink.HANDLE_MIN_EGRESS
)

// AttachUnderlay attaches node_ingress and node_egress to the underlay NIC.
func (d *Datapath) AttachUnderlay(ifindex int) error {
	if err := ensureAttached(d.linkPin(linkUnderlayIngress), d.programs[progNodeIngress], ifindex, ingress); err != nil {
		return fmt.Errorf("attaching node_ingress to the underlay NIC: %w", err)
	}
	if err := ensureAttached(d.linkPin(linkUnderlayEgress), d.programs[progNodeEgress], ifindex, egress); err != nil {
		return fmt.Errorf("attaching node_egress to the underlay NIC: %w", err)
	}
	return nil
}

// AttachOverlayDevice attaches overlay_ingress and overlay_egress to the collect_md VXLAN device.
func (d *Datapath) AttachOverlayDevice(ifindex int) error {
	if err := ensureAttached(d.linkPin(linkOverlayIngress), d.programs[progOverlayIngress], ifindex, ingress); err != nil {
		return fmt.Errorf("attaching overlay_ingress to the vxlan device: %w", err)
	}
	if err := ensureAttached(d.linkPin(linkOverlayEgress), d.programs[progOverlayEgress], ifindex, egress); err != nil {
		return fmt.Errorf("attaching overlay_egress to the vxlan device: %w", err)
	}
	return nil
}

// UpdatePodLinks moves every pod attachment to this Datapath's pod program, in place. Pins whose
// interface has disappeared are removed.
func (d *Datapath) UpdatePodLinks() error {
	names, err := PodLinks(d.root)
	if err != nil {
		return err
	}
	var errs []error
	for _, hostIfName := range names {
		if err := updatePodLink(podLinkPin(d.root, hostIfName), hostIfName, d.programs[progPodEgress]); err != nil {
			errs = append(errs, fmt.Errorf("updating pod link of %s: %w", hostIfName, err))
		}
	}
	return errors.Join(errs...)
}

func updatePodLink(pin, hostIfName string, prog *ebpf.Program) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if isProgramPin(pin) {
			ifindex, err := ifindexByName(hostIfName)
			if err != nil {
				return err
			}
			if ifindex == 0 {
				return os.Remove(pin)
			}
			return attachNetlinkTC(pin, prog, ifindex, ingress)
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil // deleted concurrently (CNI DEL)
		}
		return fmt.Errorf("opening %s: %w", pin, err)
	}
	defer l.Close()
	if ifindex, _, ok := tcxTarget(l); ok && ifindex == 0 {
		return l.Unpin() // the veth is gone; the kernel detached the link already
	}
	if err := l.Update(prog); err != nil {
		return fmt.Errorf("updating %s: %w", pin, err)
	}
	return nil
}

// AttachPod attaches the pinned pod program to the TC ingress of a pod's host-side veth and pins
// the link at <root>/links/pod-<hostIfName>. Calling it again converges: same interface -> update
// to the currently pinned program; another interface (the name was reused) -> replace.
func AttachPod(root, hostIfName string, hostIfindex int) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(root, PodProgram), nil)
	if err != nil {
		return fmt.Errorf("opening the pod program (is the agent running?): %w", err)
	}
	defer prog.Close()
	if err := ensureAttached(podLinkPin(root, hostIfName), prog, hostIfindex, ingress); err != nil {
		return fmt.Errorf("attaching pod program to %s: %w", hostIfName, err)
	}
	return nil
}

// DetachPod removes a pod's attachment. A missing pin or interface is not an error.
func DetachPod(root, hostIfName string) error {
	pin := podLinkPin(root, hostIfName)
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if isProgramPin(pin) {
			return detachNetlinkTC(pin, hostIfName, ingress)
		}
		return fmt.Errorf("opening %s: %w", pin, err)
	}
	defer l.Close() // the last reference: closing detaches
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpinning %s: %w", pin, err)
	}
	return nil
}

// CheckPod verifies that the pod program is attached to hostIfindex under its pin.
func CheckPod(root, hostIfName string, hostIfindex int) error {
	pin := podLinkPin(root, hostIfName)
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if isProgramPin(pin) {
			return checkNetlinkTC(hostIfindex, ingress)
		}
		return fmt.Errorf("opening %s: %w", pin, err)
	}
	defer l.Close()
	ifindex, typ, ok := tcxTarget(l)
	switch {
	case !ok:
		return fmt.Errorf("%s is not a tcx link", pin)
	case ifindex != hostIfindex || typ != ingress.tcx:
		return fmt.Errorf("%s is attached to ifindex %d (%v), want %d (%v)", pin, ifindex, typ, hostIfindex, ingress.tcx)
	}
	return nil
}

// PodLinks lists the host veth names that have a pod attachment pinned under root.
func PodLinks(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, linksDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing pod links: %w", err)
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutPrefix(e.Name(), podLinkPrefix); ok {
			names = append(names, name)
		}
	}
	return names, nil
}

func podLinkPin(root, hostIfName string) string {
	return filepath.Join(root, linksDir, podLinkPrefix+hostIfName)
}

func (d *Datapath) linkPin(name string) string { return filepath.Join(d.root, linksDir, name) }

// tcxTarget returns the interface and hook a tcx link is attached to; ifindex 0 means the
// interface is gone.
func tcxTarget(l link.Link) (int, ebpf.AttachType, bool) {
	info, err := l.Info()
	if err != nil {
		return 0, 0, false
	}
	tcx := info.TCX()
	if tcx == nil {
		return 0, 0, false
	}
	return int(tcx.Ifindex), ebpf.AttachType(tcx.AttachType), true
}

// ensureAttached converges the attachment pinned at pin to prog on (ifindex, dir): update in
// place when the pinned link already targets that hook, replace it otherwise, and fall back to
// netlink TC when the kernel has no tcx.
func ensureAttached(pin string, prog *ebpf.Program, ifindex int, dir direction) error {
	if prog == nil {
		return errors.New("program not loaded")
	}
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		target, typ, ok := tcxTarget(l)
		if ok && target == ifindex && typ == dir.tcx {
			err := l.Update(prog)
			l.Close()
			if err != nil {
				return fmt.Errorf("updating %s: %w", pin, err)
			}
			return nil
		}
		// Another interface (a reused name, a replaced NIC): drop the old attachment.
		uerr := l.Unpin()
		l.Close()
		if uerr != nil {
			return fmt.Errorf("replacing %s: %w", pin, uerr)
		}
	case errors.Is(err, os.ErrNotExist):
	case isProgramPin(pin):
		return attachNetlinkTC(pin, prog, ifindex, dir)
	default:
		return fmt.Errorf("opening %s: %w", pin, err)
	}

	l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: dir.tcx})
	if errors.Is(err, ebpf.ErrNotSupported) {
		return attachNetlinkTC(pin, prog, ifindex, dir)
	}
	if err != nil {
		return fmt.Errorf("attaching tcx %s to ifindex %d: %w", dir.name, ifindex, err)
	}
	defer l.Close() // the pin keeps the link; this handle is only ours
	return pinLink(l, pin)
}

// pinLink pins l at pin, replacing what was there in one rename.
func pinLink(l link.Link, pin string) error {
	tmp := tmpPin(pin)
	_ = os.Remove(tmp)
	if err := l.Pin(tmp); err != nil {
		return fmt.Errorf("pinning link at %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, pin); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("pinning link at %s: %w", pin, err)
	}
	return nil
}

// isProgramPin tells whether pin records a netlink-TC attachment (a pinned program, not a link).
func isProgramPin(pin string) bool {
	p, err := ebpf.LoadPinnedProgram(pin, nil)
	if err != nil {
		return false
	}
	p.Close()
	return true
}
