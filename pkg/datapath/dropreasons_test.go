package datapath

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// The Go table must be the C table: same numbers, same names, nothing missing on either side.
// Read from each object's BTF, so a reason added in C without Go (or renumbered) fails here.
func TestDropReasonsMatchBTF(t *testing.T) {
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){
		"pod": loadPod, "overlay": loadOverlay, "node": loadNode, "xdp": loadXdp,
	} {
		t.Run(name, func(t *testing.T) {
			spec, err := load()
			if err != nil {
				t.Fatal(err)
			}
			var enum *btf.Enum
			if err := spec.Types.TypeByName("drop_reason", &enum); err != nil {
				t.Fatalf("enum drop_reason not in BTF: %v", err)
			}
			seen := map[uint64]bool{}
			for _, v := range enum.Values {
				seen[v.Value] = true
				switch {
				case v.Name == "DROP_REASON_MAX":
					if v.Value != uint64(dropreason.Max) {
						t.Errorf("DROP_REASON_MAX = %d in C, %d in Go", v.Value, dropreason.Max)
					}
				case v.Value >= uint64(dropreason.Max):
					t.Errorf("%s = %d is missing in Go", v.Name, v.Value)
				default:
					want := strings.TrimPrefix(strings.TrimPrefix(v.Name, "DROP_"), "REASON_")
					if got := dropreason.Reason(v.Value).String(); got != want {
						t.Errorf("reason %d: Go says %q, C says %s", v.Value, got, v.Name)
					}
				}
			}
			for r := dropreason.Reason(0); r < dropreason.Max; r++ {
				if !seen[uint64(r)] {
					t.Errorf("Go reason %d (%v) is not in C", r, r)
				}
			}
		})
	}
}
