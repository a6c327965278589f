package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/agentinfo"
)

// Features is what the running kernel offers the datapath where kernels differ, probed once per
// process (KernelFeatures) and logged at the first Load (logFeatures). Every choice the
// datapath makes by kernel is one of these fields; docs/install.md's kernel table says which
// kernel brings which, and scripts/test-kernels.sh tests each choice on a kernel that makes it.
type Features struct {
	// TCX: tcx links (Linux 6.6). Without them attachments are netlink TC (clsact + a
	// direct-action bpf filter; tc.go), recorded by the program pinned at the link's path.
	TCX bool
	// CheckMTU: the bpf_check_mtu helper (Linux 5.12). Without it pod_egress checks a direct
	// route's packets against the underlay MTU the node config implies (cfg->mtu + VXLAN's 50
	// bytes) instead of asking the kernel for the NIC's (bpf/pod.c, HAVE_CHECK_MTU).
	CheckMTU bool
	// EncapL2Eth: bpf_skb_adjust_room's BPF_F_ADJ_ROOM_ENCAP_L2_ETH flag (Linux 5.12), which the
	// native VXLAN encapsulation passes to mark the inner packet as Ethernet. Without it the flag
	// is left out (bpf/lib/vxlan.h, HAVE_ENCAP_L2_ETH): the kernel segments the packets the same,
	// but NICs that offload VXLAN segmentation only for Ethernet inner packets do not get them.
	EncapL2Eth bool
}

var (
	featuresOnce sync.Once
	features_    Features
	featuresErr  error
)

// KernelFeatures probes the running kernel once and returns what it found. An error means a probe
// could not run at all (no bpf() syscall, no privileges), not that a feature is missing.
//
// It first lifts RLIMIT_MEMLOCK where the kernel charges BPF objects to it (before 5.11; memory
// cgroups account them since): the probes load programs, and Load creates the maps. Every process
// that creates maps or loads programs goes through here (Load calls it); the CNI plugin and
// edgeplanectl only open pins and attach, which are not charged.
func KernelFeatures() (Features, error) {
	featuresOnce.Do(func() { features_, featuresErr = probeFeatures() })
	return features_, featuresErr
}

func probeFeatures() (Features, error) {
	var f Features
	// A no-op where memory cgroups account BPF memory (cilium/ebpf probes which it is).
	if err := rlimit.RemoveMemlock(); err != nil {
		return f, fmt.Errorf("raising RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps and programs to (needs CAP_SYS_RESOURCE): %w", err)
	}
	if err := checkFloor(features.HaveProgramHelper); err != nil {
		return f, err
	}
	var err error
	if f.TCX, err = probeTCX(); err != nil {
		return f, fmt.Errorf("probing tcx: %w", err)
	}
	if f.CheckMTU, err = supported(features.HaveProgramHelper(ebpf.SchedCLS, asm.FnCheckMtu)); err != nil {
		return f, fmt.Errorf("probing bpf_check_mtu: %w", err)
	}
	if f.EncapL2Eth, err = probeEncapL2Eth(); err != nil {
		return f, fmt.Errorf("probing bpf_skb_adjust_room's BPF_F_ADJ_ROOM_ENCAP_L2_ETH: %w", err)
	}
	return f, nil
}

// bpf_skb_adjust_room's arguments as vxlan_encap_native passes them (include/uapi/linux/bpf.h).
const (
	adjRoomMAC          = 1      // BPF_ADJ_ROOM_MAC
	adjRoomEncapL3IPv4  = 1 << 1 // BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
	adjRoomEncapL4UDP   = 1 << 4 // BPF_F_ADJ_ROOM_ENCAP_L4_UDP
	adjRoomEncapL2Eth   = 1 << 6 // BPF_F_ADJ_ROOM_ENCAP_L2_ETH
	adjRoomEncapL2Shift = 56     // BPF_F_ADJ_ROOM_ENCAP_L2(len)
	encapOverhead       = 50     // outer IPv4 + UDP + VXLAN + inner Ethernet (bpf/lib/common.h)
)

// probeEncapL2Eth runs bpf_skb_adjust_room with the native encapsulation's flags on a small UDP
// packet: 0 where the kernel takes BPF_F_ADJ_ROOM_ENCAP_L2_ETH, -EINVAL where it does not know it.
func probeEncapL2Eth() (bool, error) {
	const flags = adjRoomEncapL3IPv4 | adjRoomEncapL4UDP | adjRoomEncapL2Eth | 14<<adjRoomEncapL2Shift
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R2, encapOverhead),
			asm.Mov.Imm(asm.R3, adjRoomMAC),
			asm.LoadImm(asm.R4, flags, asm.DWord),
			asm.FnSkbAdjustRoom.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		return false, fmt.Errorf("loading the probe program: %w", err)
	}
	defer prog.Close()
	// Ethernet + IPv4 (IHL 5, UDP) + UDP: test_run parses it so that the helper sees an IPv4 skb.
	pkt := make([]byte, 14+20+8+16)
	pkt[12], pkt[13] = 0x08, 0x00
	ip := pkt[14:]
	ip[0], ip[3], ip[8], ip[9] = 0x45, byte(len(pkt)-14), 64, 17
	udp := pkt[34:]
	udp[5] = byte(len(pkt) - 34)
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+2*encapOverhead)})
	if err != nil {
		return false, fmt.Errorf("running the probe program: %w", err)
	}
	switch int32(ret) {
	case 0:
		return true, nil
	case -int32(unix.EINVAL):
		return false, nil
	}
	return false, fmt.Errorf("bpf_skb_adjust_room returned %d", int32(ret))
}

// The floor, Linux 5.10: the newest helpers every program path needs (pod delivery with
// bpf_redirect_peer, the underlay's next hop with bpf_redirect_neigh). A kernel without them gets
// one error naming what is missing instead of a verifier log.
var floorHelpers = []struct {
	fn   asm.BuiltinFunc
	name string // as the kernel's documentation (bpf-helpers(7)) names it
}{{asm.FnRedirectPeer, "bpf_redirect_peer"}, {asm.FnRedirectNeigh, "bpf_redirect_neigh"}}

// checkFloor asks have about each floor helper for TC programs.
func checkFloor(have func(ebpf.ProgramType, asm.BuiltinFunc) error) error {
	var missing []string
	for _, h := range floorHelpers {
		ok, err := supported(have(ebpf.SchedCLS, h.fn))
		if err != nil {
			return fmt.Errorf("probing %s: %w", h.name, err)
		}
		if !ok {
			missing = append(missing, h.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("kernel %s is older than edgeplane's floor, Linux 5.10: it has no %s for TC programs", KernelRelease(), strings.Join(missing, ", "))
	}
	return nil
}

// supported turns a cilium/ebpf feature probe's answer into yes/no, keeping real errors.
func supported(err error) (bool, error) {
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return false, nil
	}
	return false, err
}

// probeTCX attaches a trivial program to an interface that cannot exist: a kernel with tcx says
// "no such device", one without says it does not know the attach type (ErrNotSupported).
func probeTCX() (bool, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return false, fmt.Errorf("loading the probe program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxInt32, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		l.Close()
		return true, nil
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return false, nil
	}
	return true, nil // ENODEV: the kernel knows tcx
}

// setKernelVariables sets the objects' constants that choose a variant by kernel (bpf/pod.c,
// HAVE_CHECK_MTU) for the features f; objects without them are left alone.
func setKernelVariables(spec *ebpf.CollectionSpec, f Features) error {
	for name, value := range map[string]bool{"HAVE_CHECK_MTU": f.CheckMTU, "HAVE_ENCAP_L2_ETH": f.EncapL2Eth} {
		if v, ok := spec.Variables[name]; ok {
			if err := v.Set(boolU8(value)); err != nil {
				return fmt.Errorf("setting %s: %w", name, err)
			}
		}
	}
	return nil
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Describe lists the probes' results with what the datapath does with each feature and without
// it: the agent's log line, its report (<run-dir>/agent.json, `edgeplanectl config`) and the
// edgeplane_kernel_feature metric all say this.
func (f Features) Describe() []agentinfo.Feature {
	return []agentinfo.Feature{
		{Name: "tcx", Available: f.TCX, Since: "6.6", Uses: "tcx links",
			Without: "netlink TC: clsact qdisc + direct-action bpf filters"},
		{Name: "check_mtu", Available: f.CheckMTU, Since: "5.12", Uses: "bpf_check_mtu for direct routes",
			Without: "direct routes checked against the node config's MTU + 50"},
		{Name: "encap_l2_eth", Available: f.EncapL2Eth, Since: "5.12", Uses: "native VXLAN marks the inner packet Ethernet",
			Without: "inner packet marked IPv4: NICs offloading VXLAN segmentation only for Ethernet inner packets segment in software"},
	}
}

// KernelRelease is the running kernel's release (uname -r); "" when uname fails.
func KernelRelease() string {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return ""
	}
	return unix.ByteSliceToString(uts.Release[:])
}

var logFeaturesOnce sync.Once

// logFeatures logs the probes' results, once per process, with what each absence means.
func logFeatures(f Features) {
	logFeaturesOnce.Do(func() { logFeaturesNow(f) })
}

func logFeaturesNow(f Features) {
	args := []any{"release", KernelRelease()}
	for _, d := range f.Describe() {
		if d.Available {
			args = append(args, d.Name, d.Uses)
		} else {
			args = append(args, d.Name, "missing (Linux "+d.Since+"): "+d.Without)
		}
	}
	slog.Info("kernel features", args...)
}
