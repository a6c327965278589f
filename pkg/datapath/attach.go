package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Link pins under <root>/links.
const (
	linkUnderlayIngress  = "underlay-ingress"
	linkUnderlayEgress   = "underlay-egress"
	linkOverlayIngress   = "overlay-ingress"
	linkOverlayEgress    = "overlay-egress"
	podLinkPrefix        = "pod-"   // pod_egress on a host veth's TC ingress
	podIngressLinkPrefix = "podin-" // pod_ingress on its TC egress
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

// UpdatePodLinks moves every pod attachment to this Datapath's pod programs, in place, and
// attaches pod_ingress where it is missing (pods created under an agent that predates it, or by a
// plugin that found no pin). Pins whose interface has disappeared are removed.
func (d *Datapath) UpdatePodLinks() error {
	names, err := PodLinks(d.root)
	if err != nil {
		return err
	}
	var errs []error
	for _, hostIfName := range names {
		ifindex, err := updatePodLink(podLinkPin(d.root, hostIfName), hostIfName, d.programs[progPodEgress])
		if err != nil {
			errs = append(errs, fmt.Errorf("updating pod link of %s: %w", hostIfName, err))
			continue
		}
		if ifindex == 0 { // the pod is gone (or going): its egress attachment goes too
			errs = append(errs, detachPodLink(podIngressLinkPin(d.root, hostIfName), hostIfName, egress))
			continue
		}
		if err := ensureAttached(podIngressLinkPin(d.root, hostIfName), d.programs[progPodIngress], ifindex, egress); err != nil {
			errs = append(errs, fmt.Errorf("attaching pod_ingress to %s: %w", hostIfName, err))
		}
	}
	return errors.Join(errs...)
}

// updatePodLink updates the pod_egress attachment pinned at pin to prog and returns the host veth's
// ifindex, 0 when the attachment or the veth is gone (its pin then removed).
func updatePodLink(pin, hostIfName string, prog *ebpf.Program) (int, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if isProgramPin(pin) {
			ifindex, err := ifindexByName(hostIfName)
			if err != nil {
				return 0, err
			}
			if ifindex == 0 {
				return 0, os.Remove(pin)
			}
			return ifindex, attachNetlinkTC(pin, prog, ifindex, ingress)
		}
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil // deleted concurrently (CNI DEL)
		}
		return 0, fmt.Errorf("opening %s: %w", pin, err)
	}
	defer l.Close()
	ifindex, _, ok := tcxTarget(l)
	if ok && ifindex == 0 {
		return 0, l.Unpin() // the veth is gone; the kernel detached the link already
	}
	if err := l.Update(prog); err != nil {
		return 0, fmt.Errorf("updating %s: %w", pin, err)
	}
	if !ok {
		return 0, fmt.Errorf("%s is not a tcx link", pin)
	}
	return ifindex, nil
}

// AttachPod attaches the pinned pod programs to a pod's host-side veth: pod_egress to its TC
// ingress (what the pod sends), pinned at <root>/links/pod-<hostIfName>, and pod_ingress to its TC
// egress (what the host stack sends into the pod), pinned at <root>/links/podin-<hostIfName>.
// Calling it again converges: same interface -> update to the currently pinned programs; another
// interface (the name was reused) -> replace. Without a pinned pod_ingress (an agent older than
// this plugin) only pod_egress is attached; the agent adds the other when it starts
// (UpdatePodLinks).
func AttachPod(root, hostIfName string, hostIfindex int) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(root, PodProgram), nil)
	if err != nil {
		return fmt.Errorf("opening the pod program (is the agent running?): %w", err)
	}
	defer prog.Close()
	if err := ensureAttached(podLinkPin(root, hostIfName), prog, hostIfindex, ingress); err != nil {
		return fmt.Errorf("attaching pod program to %s: %w", hostIfName, err)
	}
	in, err := ebpf.LoadPinnedProgram(filepath.Join(root, PodIngressProgram), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening the pod_ingress program: %w", err)
	}
	defer in.Close()
	if err := ensureAttached(podIngressLinkPin(root, hostIfName), in, hostIfindex, egress); err != nil {
		return fmt.Errorf("attaching pod_ingress to %s: %w", hostIfName, err)
	}
	return nil
}

// DetachPod removes a pod's attachments. A missing pin or interface is not an error.
func DetachPod(root, hostIfName string) error {
	return errors.Join(
		detachPodLink(podIngressLinkPin(root, hostIfName), hostIfName, egress),
		detachPodLink(podLinkPin(root, hostIfName), hostIfName, ingress))
}

func detachPodLink(pin, hostIfName string, dir direction) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if isProgramPin(pin) {
			return detachNetlinkTC(pin, hostIfName, dir)
		}
		return fmt.Errorf("opening %s: %w", pin, err)
	}
	defer l.Close()
	return releaseLink(l, pin)
}

// CheckPod verifies that the pod programs are attached to hostIfindex under their pins
// (pod_ingress only where the agent pinned it).
func CheckPod(root, hostIfName string, hostIfindex int) error {
	if err := checkPodLink(podLinkPin(root, hostIfName), hostIfindex, ingress); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, PodIngressProgram)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return checkPodLink(podIngressLinkPin(root, hostIfName), hostIfindex, egress)
}

func checkPodLink(pin string, hostIfindex int, dir direction) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if isProgramPin(pin) {
			return checkNetlinkTCRuns(pin, hostIfindex, dir)
		}
		return fmt.Errorf("opening %s: %w", pin, err)
	}
	defer l.Close()
	ifindex, typ, ok := tcxTarget(l)
	switch {
	case !ok:
		return fmt.Errorf("%s is not a tcx link", pin)
	case ifindex != hostIfindex || typ != dir.tcx:
		return fmt.Errorf("%s is attached to ifindex %d (%v), want %d (%v)", pin, ifindex, typ, hostIfindex, dir.tcx)
	}
	return nil
}

// PodLinks lists the host veth names that have a pod attachment (either program) pinned under
// root, sorted.
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
		for _, prefix := range []string{podLinkPrefix, podIngressLinkPrefix} {
			if name, ok := strings.CutPrefix(e.Name(), prefix); ok && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

func podLinkPin(root, hostIfName string) string {
	return filepath.Join(root, linksDir, podLinkPrefix+hostIfName)
}

func podIngressLinkPin(root, hostIfName string) string {
	return filepath.Join(root, linksDir, podIngressLinkPrefix+hostIfName)
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
		rerr := releaseLink(l, pin)
		l.Close()
		if rerr != nil {
			return fmt.Errorf("replacing %s: %w", pin, rerr)
		}
	case errors.Is(err, os.ErrNotExist):
	case isProgramPin(pin):
		if _, _, pod := podPin(filepath.Base(pin)); !pod {
			// The NIC or the device may have changed: the old one's filter goes.
			if err := detachNetlinkTCProgram(pin, ifindex, dir); err != nil {
				return err
			}
		}
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

// releaseLink detaches the pinned link l and removes its pin. Detaching first makes it take
// effect now: the pin's reference is dropped only after an RCU grace period on older kernels (5.10
// kept a moved XDP link's program on the old NIC, and refused a new link there with EEXIST), and
// another process may still hold the link. Kernels whose link type has no detach (before 5.9, or
// tcx before 6.6) just lose the pin.
func releaseLink(l link.Link, pin string) error {
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("detaching %s: %w", pin, err)
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpinning %s: %w", pin, err)
	}
	return nil
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
