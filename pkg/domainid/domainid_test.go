package domainid

import "testing"

// TestOf pins the IDs: every agent, of any version, and edgeplanectl must compute the same ID for
// a name (FNV-1a 32, the values checked against a separate implementation), so a change of the
// hash fails here.
func TestOf(t *testing.T) {
	for name, want := range map[string]uint32{
		"":        Default,
		"cloud":   0x1ac6a97e,
		"site-a":  0xc43bc0a8,
		"site-b":  0xc73bc561,
		"default": 0x933b5bde, // only pkg/domain maps its default domain's name to Default
		// FNV-1a hashes this name to 0, Default's ID: it gets 1 instead.
		"pool-141990604v": 1,
	} {
		if got := Of(name); got != want {
			t.Errorf("Of(%q) = %#x, want %#x", name, got, want)
		}
	}
}
