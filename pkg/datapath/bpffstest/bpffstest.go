// Package bpffstest gives tests a private bpf filesystem: each test mounts its own bpffs under a
// temporary directory, so pins never leak into /sys/fs/bpf or between tests.
package bpffstest

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRoot skips the test unless it runs as root (it needs to mount, load BPF and make netns).
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: mounts bpffs, loads BPF programs and creates network namespaces")
	}
}

// Mount mounts a fresh bpffs on a temporary directory and unmounts it when the test ends.
func Mount(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	dir := tb.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		tb.Fatalf("mounting bpffs on %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmounting bpffs %s: %v", dir, err)
		}
	})
	return dir
}
