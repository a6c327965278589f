package datapath

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// A kernel below the floor gets one error naming every missing helper; the real answers pass.
func TestCheckFloor(t *testing.T) {
	old := func(_ ebpf.ProgramType, fn asm.BuiltinFunc) error {
		if fn == asm.FnRedirectPeer || fn == asm.FnRedirectNeigh {
			return fmt.Errorf("%v: %w", fn, ebpf.ErrNotSupported)
		}
		return nil
	}
	err := checkFloor(old)
	want := "kernel " + kernelRelease(t) + " is older than edgeplane's floor, Linux 5.10: it has no bpf_redirect_peer, bpf_redirect_neigh for TC programs"
	if err == nil || err.Error() != want {
		t.Errorf("below the floor: %v, want %q", err, want)
	}
	requireRoot(t)
	if _, err := KernelFeatures(); err != nil {
		t.Errorf("this kernel: %v", err)
	}
}

// The probes agree with the releases that brought each feature: tcx 6.6, bpf_check_mtu and
// BPF_F_ADJ_ROOM_ENCAP_L2_ETH 5.12. That holds on the kernels scripts/test-kernels.sh boots
// (Debian's, which backport none of them) and on this machine's; a vendor kernel with backports
// would answer more than its release says, which the probes are there for.
func TestKernelFeaturesMatchRelease(t *testing.T) {
	requireRoot(t)
	f, err := KernelFeatures()
	if err != nil {
		t.Fatal(err)
	}
	want := Features{TCX: kernelAtLeast(t, 6, 6), CheckMTU: kernelAtLeast(t, 5, 12), EncapL2Eth: kernelAtLeast(t, 5, 12)}
	if f != want {
		t.Errorf("kernel %s: probed %+v, want %+v", kernelRelease(t), f, want)
	}
}

func kernelRelease(t testing.TB) string {
	t.Helper()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(uts.Release[:])
}

// kernelAtLeast tells whether the running kernel's release is major.minor or later.
func kernelAtLeast(t testing.TB, major, minor int) bool {
	t.Helper()
	var ma, mi int
	if _, err := fmt.Sscanf(kernelRelease(t), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", kernelRelease(t), err)
	}
	return ma > major || ma == major && mi >= minor
}
