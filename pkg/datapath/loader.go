// Package datapath loads edgeplane's BPF objects, pins what must outlive the agent and attaches the
// programs to interfaces.
//
// How it works: Load reads the four committed objects (pod, overlay, node, xdp), walks every map they
// define and creates each one once, pinned by name under <root>/maps, so that all programs share one
// instance of each map. A pin that already exists is adopted, which keeps endpoints, routes and
// counters across agent restarts and upgrades; a pin whose type, key or value size, capacity or
// flags no longer match the object is replaced (atomically: new pin beside, rename over) and
// logged. An array whose values only grew (fields appended, as node_cfg's) keeps its entries,
// zero-extended. The programs are then loaded against those maps. The pod programs are pinned at
// <root>/progs/pod_egress and <root>/progs/pod_ingress for the CNI plugin, which attaches them to
// each pod's host veth (TC ingress and egress).
//
// Attachments are tcx links pinned under <root>/links: pinned, they survive the process that made
// them, and an upgrade Updates them to the new program in place, which loses no packet. Where the
// kernel has no tcx (before 6.6) the same calls fall back to a clsact qdisc with a direct-action
// bpf filter; the program itself is then pinned at the link's path as the record of the attachment.
// The underlay NIC also gets an XDP link (xdp.go) where its driver runs XDP natively, pinned and
// updated the same way; elsewhere node_ingress (tc) takes the XDP program's one decision.
//
// Nothing here assumes /sys/fs/bpf: the lab runs one agent per network namespace, each with its own
// bpffs root.
package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	gomaps "maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/maps"
)

// Directories and pins under a bpffs root.
const (
	progsDir = "progs"
	linksDir = "links"

	// PodProgram is the pod program's pin, relative to the root; AttachPod attaches it to the
	// host veth's TC ingress (what the pod sends).
	PodProgram = progsDir + "/pod_egress"
	// PodIngressProgram is the pin of the program AttachPod puts on the host veth's TC egress
	// (what the host stack sends into the pod: bpf/pod.c, pod_ingress).
	PodIngressProgram = progsDir + "/pod_ingress"
)

// HostHairpinIP is the source overlay_egress gives the node's own connections to a Service
// backend on one of the node's own addresses before handing them to the host stack (bpf/overlay.c,
// HOST_HAIRPIN_IP): the agent routes it into the VXLAN device, so that the host's answers come
// back through overlay_egress, which undoes the translation.
var HostHairpinIP = netip.AddrFrom4([4]byte{169, 254, 42, 2})

// Program names in the objects (bpf/*.c entry points).
const (
	progPodEgress      = "pod_egress"
	progPodIngress     = "pod_ingress"
	progOverlayIngress = "overlay_ingress"
	progOverlayEgress  = "overlay_egress"
	progNodeIngress    = "node_ingress"
	progNodeEgress     = "node_egress"
	progNodeXDP        = "node_xdp"
)

// Datapath is the loaded programs and the shared maps. It owns them: Close releases the process's
// references, while the pins (maps, pod program, links) keep the datapath running.
type Datapath struct {
	root        string
	maps        map[string]*ebpf.Map
	collections []*ebpf.Collection
	programs    map[string]*ebpf.Program // borrowed from collections
	replaced    []string
	xdpState    string // the underlay NIC's XDP mode last logged (xdp.go)
}

// objectSpecs returns the committed objects' specs, in load order.
func objectSpecs() (map[string]*ebpf.CollectionSpec, []string, error) {
	loaders := []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
	}{{"pod", loadPod}, {"overlay", loadOverlay}, {"node", loadNode}, {"xdp", loadXdp}}
	specs := make(map[string]*ebpf.CollectionSpec, len(loaders))
	var order []string
	for _, l := range loaders {
		spec, err := l.load()
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s object: %w", l.name, err)
		}
		specs[l.name] = spec
		order = append(order, l.name)
	}
	return specs, order, nil
}

// MapSpecs returns the spec of every map the objects define, by name, for layout tests and the CLI.
// Internal maps (.rodata, .bss, ...) are per object and not included.
func MapSpecs() (map[string]*ebpf.MapSpec, error) {
	specs, order, err := objectSpecs()
	if err != nil {
		return nil, err
	}
	out := make(map[string]*ebpf.MapSpec)
	for _, obj := range order {
		for name, ms := range specs[obj].Maps {
			if isInternalMap(name) {
				continue
			}
			if prev, ok := out[name]; ok {
				if err := sameMap(prev, ms); err != nil {
					return nil, fmt.Errorf("map %s in the %s object: %w", name, obj, err)
				}
				continue
			}
			out[name] = ms
		}
	}
	return out, nil
}

func isInternalMap(name string) bool { return strings.HasPrefix(name, ".") }

// sameMap checks that two objects' definitions of one map describe the same kernel map.
func sameMap(a, b *ebpf.MapSpec) error {
	if a.Type != b.Type || a.KeySize != b.KeySize || a.ValueSize != b.ValueSize ||
		a.MaxEntries != b.MaxEntries || a.Flags != b.Flags || a.Pinning != b.Pinning {
		return fmt.Errorf("defined differently in two objects (%v/%d/%d/%d/%#x vs %v/%d/%d/%d/%#x)",
			a.Type, a.KeySize, a.ValueSize, a.MaxEntries, a.Flags,
			b.Type, b.KeySize, b.ValueSize, b.MaxEntries, b.Flags)
	}
	return nil
}

// Load loads the objects with their maps pinned under root/maps, pins the pod program and returns
// the Datapath, which the caller closes. root must be on a bpf filesystem. The kernel's features
// (KernelFeatures) choose the objects' variants; they are logged at the first Load.
func Load(root string) (_ *Datapath, err error) {
	if err := ensureRoot(root); err != nil {
		return nil, err
	}
	features, err := KernelFeatures()
	if err != nil {
		return nil, err
	}
	logFeatures(features)
	specs, order, err := objectSpecs()
	if err != nil {
		return nil, err
	}
	for _, obj := range order {
		if err := setKernelVariables(specs[obj], features); err != nil {
			return nil, fmt.Errorf("the %s object: %w", obj, err)
		}
	}
	d := &Datapath{root: root, maps: make(map[string]*ebpf.Map), programs: make(map[string]*ebpf.Program)}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	for _, obj := range order {
		names := slices.Sorted(gomaps.Keys(specs[obj].Maps))
		for _, name := range names {
			ms := specs[obj].Maps[name]
			if isInternalMap(name) {
				continue
			}
			if m, ok := d.maps[name]; ok {
				if err := ms.Compatible(m); err != nil {
					return nil, fmt.Errorf("map %s in the %s object: %w", name, obj, err)
				}
				continue
			}
			m, err := d.openMap(ms)
			if err != nil {
				return nil, err
			}
			d.maps[name] = m
		}
	}

	for _, obj := range order {
		spec := specs[obj]
		replacements := make(map[string]*ebpf.Map)
		for name := range spec.Maps {
			if m, ok := d.maps[name]; ok {
				replacements[name] = m
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
			MapReplacements: replacements,
			Maps:            ebpf.MapOptions{PinPath: filepath.Join(root, maps.Dir)},
		})
		if err != nil {
			var ve *ebpf.VerifierError
			if errors.As(err, &ve) {
				return nil, fmt.Errorf("loading %s programs: %w\n%+v", obj, err, ve)
			}
			return nil, fmt.Errorf("loading %s programs: %w", obj, err)
		}
		d.collections = append(d.collections, coll)
		for name, p := range coll.Programs {
			d.programs[name] = p
		}
	}

	for _, name := range []string{progPodEgress, progPodIngress, progOverlayIngress, progOverlayEgress, progNodeIngress, progNodeEgress, progNodeXDP} {
		if d.programs[name] == nil {
			return nil, fmt.Errorf("objects define no program %s", name)
		}
	}
	if err := pinProgram(d.programs[progPodEgress], filepath.Join(root, PodProgram)); err != nil {
		return nil, err
	}
	if err := pinProgram(d.programs[progPodIngress], filepath.Join(root, PodIngressProgram)); err != nil {
		return nil, err
	}
	return d, nil
}

// openMap adopts the map pinned under root/maps when it is compatible with ms and creates (and
// pins) it otherwise. Maps the objects do not ask to pin are created fresh and shared unpinned.
func (d *Datapath) openMap(ms *ebpf.MapSpec) (*ebpf.Map, error) {
	if ms.Pinning != ebpf.PinByName {
		m, err := ebpf.NewMap(ms)
		if err != nil {
			return nil, fmt.Errorf("creating map %s: %w", ms.Name, err)
		}
		return m, nil
	}
	pin := maps.PinPath(d.root, ms.Name)
	m, err := ebpf.LoadPinnedMap(pin, nil)
	var grown *ebpf.Map // the pinned array, when only its values grew: its entries are carried over
	switch {
	case err == nil:
		cerr := ms.Compatible(m)
		if cerr == nil {
			return m, nil
		}
		if valuesGrew(ms, m) {
			grown = m
			defer grown.Close()
			slog.Info("replacing pinned array whose values grew; its entries are kept, the new fields zero", "map", ms.Name, "pin", pin,
				"from", m.ValueSize(), "to", ms.ValueSize)
			break
		}
		m.Close()
		slog.Warn("replacing incompatible pinned map; its entries are lost", "map", ms.Name, "pin", pin, "reason", cerr)
		d.replaced = append(d.replaced, ms.Name)
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("opening pinned map %s: %w", pin, err)
	}

	unpinned := ms.Copy()
	unpinned.Pinning = ebpf.PinNone
	m, err = ebpf.NewMap(unpinned)
	if err != nil {
		return nil, fmt.Errorf("creating map %s: %w", ms.Name, err)
	}
	if grown != nil {
		if err := copyGrown(grown, m); err != nil {
			m.Close()
			return nil, fmt.Errorf("carrying the entries of map %s over: %w", ms.Name, err)
		}
	}
	tmp := tmpPin(pin)
	_ = os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		m.Close()
		return nil, fmt.Errorf("pinning map %s: %w", ms.Name, err)
	}
	if err := os.Rename(tmp, pin); err != nil {
		_ = os.Remove(tmp)
		m.Close()
		return nil, fmt.Errorf("installing pin of map %s: %w", ms.Name, err)
	}
	return m, nil
}

// valuesGrew says whether pinned is an array ms describes but for values that ms makes longer:
// fields appended to a value (node_cfg's, for one), whose zero is the old behaviour by rule.
func valuesGrew(ms *ebpf.MapSpec, pinned *ebpf.Map) bool {
	return ms.Type == ebpf.Array && pinned.Type() == ebpf.Array && pinned.KeySize() == ms.KeySize &&
		pinned.ValueSize() < ms.ValueSize && pinned.MaxEntries() == ms.MaxEntries && pinned.Flags() == ms.Flags
}

// copyGrown copies every entry of the array from into the array to, whose values are longer,
// zero-extended.
func copyGrown(from, to *ebpf.Map) error {
	old := make([]byte, from.ValueSize())
	for i := range from.MaxEntries() {
		if err := from.Lookup(i, old); err != nil {
			return fmt.Errorf("reading entry %d: %w", i, err)
		}
		value := make([]byte, to.ValueSize())
		copy(value, old)
		if err := to.Update(i, value, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("writing entry %d: %w", i, err)
		}
	}
	return nil
}

// pinProgram pins prog at path, replacing what was there in one rename so that a concurrent
// reader (the CNI plugin) sees either the old program or the new one, never nothing.
func pinProgram(prog *ebpf.Program, path string) error {
	// A clone, because *ebpf.Program remembers one pin path and would skip pinning a second time.
	clone, err := prog.Clone()
	if err != nil {
		return fmt.Errorf("pinning program at %s: %w", path, err)
	}
	defer clone.Close()
	tmp := tmpPin(path)
	_ = os.Remove(tmp)
	if err := clone.Pin(tmp); err != nil {
		return fmt.Errorf("pinning program at %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("pinning program at %s: %w", path, err)
	}
	return nil
}

// ensureRoot requires root to be (or to be creatable) on a bpf filesystem and creates the pin
// directories beneath it.
func ensureRoot(root string) error {
	if root == "" {
		return errors.New("bpffs root is empty")
	}
	if err := checkBPFFS(root); err != nil {
		return err
	}
	for _, dir := range []string{maps.Dir, progsDir, linksDir} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Join(root, dir), err)
		}
	}
	return nil
}

// checkBPFFS reports whether root, or the nearest existing directory above it, is on a bpffs.
func checkBPFFS(root string) error {
	dir := filepath.Clean(root)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("%s is not on a bpf filesystem: mount -t bpf bpf %s", root, root)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("checking filesystem of %s: %w", dir, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return fmt.Errorf("%s is not on a bpf filesystem: mount -t bpf bpf %s", root, root)
		}
		dir = parent
	}
}

// Root is the bpffs directory this Datapath pins under.
func (d *Datapath) Root() string { return d.root }

// Map returns a loaded map by name, or nil. It is borrowed: the Datapath closes it.
func (d *Datapath) Map(name string) *ebpf.Map { return d.maps[name] }

// Program returns a loaded program by name, or nil. It is borrowed: the Datapath closes it.
func (d *Datapath) Program(name string) *ebpf.Program { return d.programs[name] }

// ReplacedMaps names the pinned maps Load found incompatible and replaced with empty ones.
func (d *Datapath) ReplacedMaps() []string { return slices.Clone(d.replaced) }

// Close releases the process's handles. Pins are untouched: attached programs keep running.
func (d *Datapath) Close() error {
	var errs []error
	for _, c := range d.collections {
		c.Close()
	}
	d.collections = nil
	d.programs = nil
	for name, m := range d.maps {
		if err := m.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing map %s: %w", name, err))
		}
	}
	d.maps = nil
	return errors.Join(errs...)
}
