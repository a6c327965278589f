package lab

import (
	"os"
	"testing"
)

// TestReferenced: smaps' Referenced summed over the executable's mappings and the anonymous
// ones; other files and the kernel's special mappings left out.
func TestReferenced(t *testing.T) {
	const smaps = `00400000-00c00000 r-xp 00000000 fd:01 123 /usr/bin/edgeplane-agent
Size:               8192 kB
Rss:                7000 kB
Referenced:          900 kB
Anonymous:             0 kB
00c00000-01800000 r--p 00800000 fd:01 123 /usr/bin/edgeplane-agent
Referenced:          300 kB
c000000000-c004000000 rw-p 00000000 00:00 0 
Referenced:        20000 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0                          [anon: Go: heap]
Referenced:           40 kB
7f0000100000-7f0000200000 r--p 00000000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Referenced:          500 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Referenced:           12 kB
7ffd00030000-7ffd00032000 r-xp 00000000 00:00 0                          [vdso]
Referenced:            8 kB
`
	exe, anon, err := referenced([]byte(smaps), "/usr/bin/edgeplane-agent")
	if err != nil {
		t.Fatal(err)
	}
	if exe != 1200<<10 || anon != (20000+40+12)<<10 {
		t.Errorf("exe %d, anon %d bytes; want %d, %d", exe, anon, 1200<<10, (20000+40+12)<<10)
	}
	if _, _, err := referenced([]byte("00400000-00c00000 r-xp 00000000 fd:01 123 /x\nReferenced: many kB\n"), "/x"); err == nil {
		t.Error("a Referenced line that is not a number read without an error")
	}

	// This test's own process: it has run code from its executable and touched its heap.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	buf, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	exe, anon, err = referenced(buf, self)
	if err != nil || exe == 0 || anon == 0 {
		t.Errorf("own process: exe %d, anon %d bytes referenced (%v); want both above 0", exe, anon, err)
	}
}
