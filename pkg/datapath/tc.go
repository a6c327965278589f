package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The netlink-TC fallback for kernels without tcx (before 6.6): a clsact qdisc and one
// direct-action bpf filter per hook, at a fixed priority and handle so that replacing it swaps the
// program atomically. The filter holds its program, so the attachment outlives the process like a
// pinned link; the program is pinned at the link's path to record that the hook is ours.
const (
	tcFilterPriority = 1
	tcFilterHandle   = 1
)

func tcFilter(ifindex int, dir direction) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    dir.parent,
			Handle:    tcFilterHandle,
			Priority:  tcFilterPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		DirectAction: true,
	}
}

func ensureClsact(ifindex int) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	// Add, not replace: replacing an existing clsact would drop every filter on it.
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding clsact qdisc to ifindex %d: %w", ifindex, err)
	}
	return nil
}

func attachNetlinkTC(pin string, prog *ebpf.Program, ifindex int, dir direction) error {
	if err := ensureClsact(ifindex); err != nil {
		return err
	}
	f := tcFilter(ifindex, dir)
	f.Fd = prog.FD()
	f.Name = "edgeplane"
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("attaching tc %s filter to ifindex %d: %w", dir.name, ifindex, err)
	}
	return pinProgram(prog, pin)
}

func detachNetlinkTC(pin, ifName string, dir direction) error {
	ifindex, err := ifindexByName(ifName)
	if err != nil {
		return err
	}
	if ifindex != 0 {
		if err := netlink.FilterDel(tcFilter(ifindex, dir)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("removing tc %s filter from %s: %w", dir.name, ifName, err)
		}
	}
	if err := removePin(pin); err != nil {
		return err
	}
	return nil
}

func checkNetlinkTC(ifindex int, dir direction) error {
	_, err := netlinkTCFilter(ifindex, dir)
	return err
}

// checkNetlinkTCRuns checks that edgeplane's filter on ifindex's dir hook runs the program pinned
// at pin: a filter alone says nothing of which program (the hook may be another interface's,
// the VXLAN device's, whose filter is edgeplane's too).
func checkNetlinkTCRuns(pin string, ifindex int, dir direction) error {
	f, err := netlinkTCFilter(ifindex, dir)
	if err != nil {
		return err
	}
	prog, err := ebpf.LoadPinnedProgram(pin, nil)
	if err != nil {
		return fmt.Errorf("opening %s: %w", pin, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("reading the program pinned at %s: %w", pin, err)
	}
	id, _ := info.ID()
	if ebpf.ProgramID(f.Id) != id {
		return fmt.Errorf("the tc %s filter on ifindex %d runs program %d, not %s's (%d)", dir.name, ifindex, f.Id, pin, id)
	}
	return nil
}

// detachNetlinkTCProgram removes edgeplane's filters running the program pinned at pin from every
// interface of the netns, except the hook (keepIfindex, keepDir) (keepIfindex 0: none kept). A
// NIC's or the VXLAN device's attachment is recorded by the program pinned at its link path, which
// does not name the interface: where that program runs is where it was attached (each program has
// one hook; pod programs, on many veths, are never removed this way). Without it a moved underlay
// and an uninstalled node kept their filters on kernels without tcx.
func detachNetlinkTCProgram(pin string, keepIfindex int, keepDir direction) error {
	prog, err := ebpf.LoadPinnedProgram(pin, nil)
	if err != nil {
		return fmt.Errorf("opening %s: %w", pin, err)
	}
	info, err := prog.Info()
	prog.Close()
	if err != nil {
		return fmt.Errorf("reading the program pinned at %s: %w", pin, err)
	}
	id, _ := info.ID()
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	var errs []error
	for _, l := range links {
		for _, dir := range []direction{ingress, egress} {
			if l.Attrs().Index == keepIfindex && dir == keepDir {
				continue
			}
			f, err := netlinkTCFilter(l.Attrs().Index, dir)
			if err != nil || ebpf.ProgramID(f.Id) != id {
				continue // no edgeplane filter there, or another program's
			}
			if err := netlink.FilterDel(tcFilter(l.Attrs().Index, dir)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing tc %s filter from %s: %w", dir.name, l.Attrs().Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// netlinkTCFilter returns edgeplane's filter (its priority and handle) on ifindex's dir hook.
func netlinkTCFilter(ifindex int, dir direction) (*netlink.BpfFilter, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("looking up ifindex %d: %w", ifindex, err)
	}
	filters, err := netlink.FilterList(l, dir.parent)
	if err != nil {
		return nil, fmt.Errorf("listing tc filters of %s: %w", l.Attrs().Name, err)
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Priority == tcFilterPriority && bf.Handle == tcFilterHandle {
			return bf, nil
		}
	}
	return nil, fmt.Errorf("no edgeplane tc %s filter on %s", dir.name, l.Attrs().Name)
}

// ifindexByName returns 0 without error when the interface does not exist.
func ifindexByName(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("looking up %s: %w", name, err)
	}
	return l.Attrs().Index, nil
}
