package datapath

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
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
					if v.Value != uint64(DropReasonMax) {
						t.Errorf("DROP_REASON_MAX = %d in C, %d in Go", v.Value, DropReasonMax)
					}
				case v.Value >= uint64(DropReasonMax):
					t.Errorf("%s = %d is missing in Go", v.Name, v.Value)
				default:
					want := strings.TrimPrefix(strings.TrimPrefix(v.Name, "DROP_"), "REASON_")
					if got := DropReason(v.Value).String(); got != want {
						t.Errorf("reason %d: Go says %q, C says %s", v.Value, got, v.Name)
					}
				}
			}
			for r := DropReason(0); r < DropReasonMax; r++ {
				if !seen[uint64(r)] {
					t.Errorf("Go reason %d (%v) is not in C", r, r)
				}
			}
		})
	}
}

func TestDropReasonString(t *testing.T) {
	for r, want := range map[DropReason]string{
		ReasonForwarded:       "FORWARDED",
		DropDomainUnreachable: "DOMAIN_UNREACHABLE",
		DropNATFailed:         "NAT_FAILED",
		DropNoServiceBackend:  "NO_SERVICE_BACKEND",
		DropReasonMax:         "UNKNOWN_20",
		200:                   "UNKNOWN_200",
	} {
		if got := r.String(); got != want {
			t.Errorf("%d: %q, want %q", r, got, want)
		}
	}
}
