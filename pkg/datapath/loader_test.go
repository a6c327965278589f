package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/maps"
)

// testNetns creates a netns holding veth pairs a0/a1 and b0/b1 (up), deleted when the test ends.
func testNetns(t *testing.T) ns.NetNS {
	t.Helper()
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		netns.Close()
		testutils.UnmountNS(netns)
	})
	err = netns.Do(func(ns.NetNS) error {
		for _, pair := range [][2]string{{"a0", "a1"}, {"b0", "b1"}} {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair[0]}, PeerName: pair[1]}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			for _, name := range pair {
				l, err := netlink.LinkByName(name)
				if err != nil {
					return err
				}
				if err := netlink.LinkSetUp(l); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("creating veths: %v", err)
	}
	return netns
}

func ifindexIn(t *testing.T, netns ns.NetNS, name string) int {
	t.Helper()
	var idx int
	if err := netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		idx = l.Attrs().Index
		return nil
	}); err != nil {
		t.Fatalf("looking up %s: %v", name, err)
	}
	return idx
}

// pinnedAttachment checks the attachment pinned at pin for the attach method the loader chose on
// this kernel (Features.TCX) and returns its program and, for a tcx link, the link's ID. With tcx
// the pin must be a link on (ifindex, dir). Without it (netlink TC, kernels before 6.6) the pin is
// the program, and the one edgeplane filter on ifindex's dir hook (in netns) must run it; there
// is no link, so the ID is 0 and an in-place update shows as the same filter running the new
// program.
func pinnedAttachment(t *testing.T, netns ns.NetNS, pin string, ifindex int, dir direction) (ebpf.ProgramID, link.ID) {
	t.Helper()
	f, err := KernelFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if f.TCX {
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			t.Fatalf("tcx kernel: loading pinned link %s: %v", pin, err)
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			t.Fatalf("link info %s: %v", pin, err)
		}
		if tcx := info.TCX(); tcx == nil || int(tcx.Ifindex) != ifindex || ebpf.AttachType(tcx.AttachType) != dir.tcx {
			t.Errorf("%s: link %+v, want tcx %s on ifindex %d", pin, info.TCX(), dir.name, ifindex)
		}
		return info.Program, info.ID
	}
	p, err := ebpf.LoadPinnedProgram(pin, nil)
	if err != nil {
		t.Fatalf("no tcx: loading the program pinned at %s: %v", pin, err)
	}
	defer p.Close()
	prog := programID(t, p)
	var filters []netlink.Filter
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		filters, err = netlink.FilterList(l, dir.parent)
		return err
	})
	if err != nil {
		t.Fatalf("listing tc %s filters of ifindex %d: %v", dir.name, ifindex, err)
	}
	if len(filters) != 1 {
		t.Fatalf("%s: %d tc %s filters on ifindex %d, want 1: %+v", pin, len(filters), dir.name, ifindex, filters)
	}
	bf, ok := filters[0].(*netlink.BpfFilter)
	if !ok || bf.Priority != tcFilterPriority || bf.Handle != tcFilterHandle || !bf.DirectAction || ebpf.ProgramID(bf.Id) != prog {
		t.Errorf("%s: tc %s filter on ifindex %d is %+v, want edgeplane's running program %d", pin, dir.name, ifindex, filters[0], prog)
	}
	return prog, 0
}

func programID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func mustLoad(t *testing.T, root string) *Datapath {
	t.Helper()
	d, err := Load(root)
	if err != nil {
		t.Fatalf("Load: %+v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestLoadRequiresBPFFS(t *testing.T) {
	bpffstest.RequireRoot(t)
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "edgeplane"))
	if err == nil || !strings.Contains(err.Error(), "is not on a bpf filesystem: mount -t bpf bpf") {
		t.Fatalf("Load on tmpfs: got %v", err)
	}
}

func TestLoadAttachReload(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	netns := testNetns(t)
	a0, b0, b1 := ifindexIn(t, netns, "a0"), ifindexIn(t, netns, "b0"), ifindexIn(t, netns, "b1")

	d := mustLoad(t, root)
	specs, err := MapSpecs()
	if err != nil {
		t.Fatal(err)
	}
	for name, ms := range specs {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		if _, err := os.Stat(maps.PinPath(root, name)); err != nil {
			t.Errorf("map %s not pinned: %v", name, err)
		}
	}
	for _, pin := range []string{PodProgram, PodIngressProgram} {
		if _, err := os.Stat(filepath.Join(root, pin)); err != nil {
			t.Fatalf("pod program not pinned: %v", err)
		}
	}

	key := maps.IPv4{10, 244, 1, 5}
	val := make([]byte, d.Map("endpoints_map").ValueSize())
	val[0] = 42
	if err := d.Map("endpoints_map").Put(key, val); err != nil {
		t.Fatal(err)
	}

	err = netns.Do(func(ns.NetNS) error {
		if err := d.AttachUnderlay(a0); err != nil {
			return err
		}
		if err := d.AttachOverlayDevice(b0); err != nil {
			return err
		}
		return AttachPod(root, "b1", b1)
	})
	if err != nil {
		t.Fatalf("attach: %+v", err)
	}
	type hook struct {
		ifindex int
		dir     direction
	}
	for pin, want := range map[string]hook{
		linkUnderlayIngress: {a0, ingress}, linkUnderlayEgress: {a0, egress}, linkOverlayIngress: {b0, ingress},
		linkOverlayEgress: {b0, egress}, "pod-b1": {b1, ingress}, "podin-b1": {b1, egress},
	} {
		pinnedAttachment(t, netns, filepath.Join(root, linksDir, pin), want.ifindex, want.dir)
	}
	_, underlayID := pinnedAttachment(t, netns, filepath.Join(root, linksDir, linkUnderlayIngress), a0, ingress)
	if err := netns.Do(func(ns.NetNS) error { return CheckPod(root, "b1", b1) }); err != nil {
		t.Errorf("CheckPod: %v", err)
	}
	if err := netns.Do(func(ns.NetNS) error { return CheckPod(root, "b1", b0) }); err == nil {
		t.Errorf("CheckPod with the wrong ifindex succeeded")
	}
	// A pod wired by an agent that predates pod_ingress has only the ingress attachment.
	if err := detachPodLink(podIngressLinkPin(root, "b1"), "b1", egress); err != nil {
		t.Fatal(err)
	}
	d.Close()

	// A second agent adopts the pins: same maps, entries survive, links are updated in place.
	d2 := mustLoad(t, root)
	if got := d2.ReplacedMaps(); len(got) != 0 {
		t.Errorf("reload replaced maps %v", got)
	}
	got := make([]byte, d2.Map("endpoints_map").ValueSize())
	if err := d2.Map("endpoints_map").Lookup(key, &got); err != nil || got[0] != 42 {
		t.Errorf("endpoint entry lost across reload: %v %v", got, err)
	}
	if err := netns.Do(func(ns.NetNS) error { return d2.AttachUnderlay(a0) }); err != nil {
		t.Fatalf("re-attach: %v", err)
	}
	prog, id := pinnedAttachment(t, netns, filepath.Join(root, linksDir, linkUnderlayIngress), a0, ingress)
	if id != underlayID {
		t.Errorf("underlay link was replaced (id %d -> %d), want an in-place update", underlayID, id)
	}
	if want := programID(t, d2.Program(progNodeIngress)); prog != want {
		t.Errorf("underlay link runs program %d, want %d", prog, want)
	}
	// In the pods' netns, as the agent runs in the host's: netlink TC finds the veth by name.
	if err := netns.Do(func(ns.NetNS) error { return d2.UpdatePodLinks() }); err != nil {
		t.Fatalf("UpdatePodLinks: %v", err)
	}
	if prog, _ := pinnedAttachment(t, netns, filepath.Join(root, linksDir, "pod-b1"), b1, ingress); prog != programID(t, d2.Program(progPodEgress)) {
		t.Errorf("pod link not updated to the new program")
	}
	// ... and attaches pod_ingress to the host veth's egress where it was missing.
	if prog, _ := pinnedAttachment(t, netns, filepath.Join(root, linksDir, "podin-b1"), b1, egress); prog != programID(t, d2.Program(progPodIngress)) {
		t.Errorf("pod_ingress on ifindex %d running program %d, want %d", b1, prog, programID(t, d2.Program(progPodIngress)))
	}
	if err := netns.Do(func(ns.NetNS) error { return CheckPod(root, "b1", b1) }); err != nil {
		t.Errorf("CheckPod after the upgrade: %v", err)
	}

	// Moving the underlay to another interface replaces the link.
	if err := netns.Do(func(ns.NetNS) error { return d2.AttachUnderlay(b0) }); err != nil {
		t.Fatal(err)
	}
	pinnedAttachment(t, netns, filepath.Join(root, linksDir, linkUnderlayEgress), b0, egress)

	if err := DetachPod(root, "b1"); err != nil {
		t.Fatal(err)
	}
	if err := DetachPod(root, "b1"); err != nil {
		t.Fatalf("second DetachPod: %v", err)
	}
	if names, _ := PodLinks(root); len(names) != 0 {
		t.Errorf("pod links left: %v", names)
	}
	d2.Close()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("root left after Cleanup: %v", err)
	}
}

func TestLoadReplacesIncompatibleMap(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	if err := os.MkdirAll(filepath.Join(root, maps.Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(maps.PinPath(root, "nodes_map")); err != nil {
		t.Fatal(err)
	}
	d := mustLoad(t, root)
	if got := d.ReplacedMaps(); len(got) != 1 || got[0] != "nodes_map" {
		t.Fatalf("ReplacedMaps = %v, want [nodes_map]", got)
	}
	m, err := ebpf.LoadPinnedMap(maps.PinPath(root, "nodes_map"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.ValueSize() == 8 {
		t.Errorf("pinned nodes_map still has the old layout")
	}
}

// node_cfg_map pinned by an older agent, whose entry lacks the fields appended since: the entry is
// carried over (zero-extended), so the new agent starts from the node's remembered config.
func TestLoadKeepsGrownArray(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	if err := os.MkdirAll(filepath.Join(root, maps.Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	const oldSize = 60 // struct node_cfg before the conntrack close timeouts
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: oldSize, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	entry := bytes.Repeat([]byte{0xab}, oldSize)
	if err := old.Put(uint32(0), entry); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(maps.PinPath(root, "node_cfg_map")); err != nil {
		t.Fatal(err)
	}
	d := mustLoad(t, root)
	if got := d.ReplacedMaps(); len(got) != 0 {
		t.Fatalf("ReplacedMaps = %v, want none", got)
	}
	m, err := ebpf.LoadPinnedMap(maps.PinPath(root, "node_cfg_map"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := make([]byte, m.ValueSize())
	if err := m.Lookup(uint32(0), got); err != nil {
		t.Fatal(err)
	}
	if len(got) <= oldSize || !bytes.Equal(got[:oldSize], entry) || !bytes.Equal(got[oldSize:], make([]byte, len(got)-oldSize)) {
		t.Errorf("node_cfg_map entry after the load: %x, want the old %d bytes then zeros", got, oldSize)
	}
}

func TestNetlinkTCFallback(t *testing.T) {
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	netns := testNetns(t)
	a1, b0 := ifindexIn(t, netns, "a1"), ifindexIn(t, netns, "b0")
	d := mustLoad(t, root)

	err := netns.Do(func(ns.NetNS) error {
		if err := attachNetlinkTC(podLinkPin(root, "a1"), d.Program(progPodEgress), a1, ingress); err != nil {
			return err
		}
		if err := attachNetlinkTC(podIngressLinkPin(root, "a1"), d.Program(progPodIngress), a1, egress); err != nil {
			return err
		}
		if err := CheckPod(root, "a1", a1); err != nil {
			return err
		}
		// Hooks with edgeplane's filters running other programs (the VXLAN device's) are not the pod's.
		if err := attachNetlinkTC(d.linkPin(linkOverlayIngress), d.Program(progOverlayIngress), b0, ingress); err != nil {
			return err
		}
		if err := attachNetlinkTC(d.linkPin(linkOverlayEgress), d.Program(progOverlayEgress), b0, egress); err != nil {
			return err
		}
		if err := CheckPod(root, "a1", b0); err == nil {
			return errors.New("CheckPod accepted the filters of another interface, running other programs")
		}
		// AttachPod keeps using netlink TC for an interface recorded that way.
		if err := AttachPod(root, "a1", a1); err != nil {
			return err
		}
		if err := d.UpdatePodLinks(); err != nil {
			return err
		}
		if err := DetachPod(root, "a1"); err != nil {
			return err
		}
		if err := checkNetlinkTC(a1, ingress); err == nil {
			return errors.New("filter still attached after DetachPod")
		}
		if err := checkNetlinkTC(a1, egress); err == nil {
			return errors.New("egress filter still attached after DetachPod")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	for _, pin := range []string{podLinkPin(root, "a1"), podIngressLinkPin(root, "a1")} {
		if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("fallback pin left: %v", err)
		}
	}

	// A NIC's attachment, recorded by a program pin that names no interface, moves with the NIC
	// (the old one's filter goes), and Cleanup removes it and the VXLAN device's.
	a0, b1 := ifindexIn(t, netns, "a0"), ifindexIn(t, netns, "b1")
	err = netns.Do(func(ns.NetNS) error {
		pin := d.linkPin(linkUnderlayIngress)
		if err := attachNetlinkTC(pin, d.Program(progNodeIngress), a0, ingress); err != nil {
			return err
		}
		if err := ensureAttached(pin, d.Program(progNodeIngress), b1, ingress); err != nil {
			return err
		}
		if err := checkNetlinkTC(a0, ingress); err == nil {
			return errors.New("the old NIC kept its filter")
		}
		if err := checkNetlinkTCRuns(pin, b1, ingress); err != nil {
			return err
		}
		if err := Cleanup(root); err != nil {
			return err
		}
		for _, ifindex := range []int{a0, b0, b1} {
			for _, dir := range []direction{ingress, egress} {
				if err := checkNetlinkTC(ifindex, dir); err == nil {
					return fmt.Errorf("tc %s filter left on ifindex %d after Cleanup", dir.name, ifindex)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
