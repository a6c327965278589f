package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf/link"
)

// AttachPoint names one of the agent's attachments: a link pin under <root>/links.
type AttachPoint string

// The agent's attachments, in the order Attachments reports them.
const (
	AttachUnderlayIngress AttachPoint = linkUnderlayIngress
	AttachUnderlayEgress  AttachPoint = linkUnderlayEgress
	AttachOverlayIngress  AttachPoint = linkOverlayIngress
	AttachOverlayEgress   AttachPoint = linkOverlayEgress
	AttachUnderlayXDP     AttachPoint = linkUnderlayXDP
)

// AttachPoints lists the attachments the agent's datapath needs (pod attachments are counted
// apart): readiness requires each of them.
var AttachPoints = []AttachPoint{AttachUnderlayIngress, AttachUnderlayEgress, AttachOverlayIngress, AttachOverlayEgress}

// OptionalAttachPoints lists the accelerators: attached where the NIC allows, reported, never
// required. The XDP link is one because node_ingress enforces the same drop (xdp.go).
var OptionalAttachPoints = []AttachPoint{AttachUnderlayXDP}

// Attachments is what is attached under a bpffs root, read from the pins alone.
type Attachments struct {
	Attached map[AttachPoint]bool
	PodLinks int // pod attachments whose host veth still exists
}

// ReadAttachments reports which of the agent's attachments, required and optional, are in place
// under root: a pinned tcx or XDP link whose interface still exists, or (kernels without tcx) the
// program pinned as the record of a netlink-TC attachment. It only reads pins, so it is cheap enough for every readiness probe.
func ReadAttachments(root string) (Attachments, error) {
	a := Attachments{Attached: make(map[AttachPoint]bool, len(AttachPoints)+len(OptionalAttachPoints))}
	var errs []error
	for _, p := range slices.Concat(AttachPoints, OptionalAttachPoints) {
		ok, err := pinAttached(filepath.Join(root, linksDir, string(p)))
		a.Attached[p] = ok
		errs = append(errs, err)
	}
	pods, err := PodLinks(root)
	errs = append(errs, err)
	for _, name := range pods {
		ok, err := pinAttached(podLinkPin(root, name))
		if ok {
			a.PodLinks++
		}
		errs = append(errs, err)
	}
	return a, errors.Join(errs...)
}

func pinAttached(pin string) (bool, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		defer l.Close()
		ifindex, _, ok := tcxTarget(l)
		if !ok {
			ifindex, ok = xdpTarget(l)
		}
		return ok && ifindex != 0, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case isProgramPin(pin):
		return true, nil
	default:
		return false, fmt.Errorf("opening %s: %w", pin, err)
	}
}
