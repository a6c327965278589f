package datapath

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

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
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		t.Fatalf("kernel release %q: %v", release, err)
	}
	atLeast := func(ma, mi int) bool { return major > ma || major == ma && minor >= mi }
	want := Features{TCX: atLeast(6, 6), CheckMTU: atLeast(5, 12), EncapL2Eth: atLeast(5, 12)}
	if f != want {
		t.Errorf("kernel %s: probed %+v, want %+v", release, f, want)
	}
}
