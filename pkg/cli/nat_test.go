package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/edgeplane/edgeplane/pkg/datapath"
)

// TestNATLayout checks the CLI's mirrors of bpf/lib/nat.h against the objects' BTF: size, and
// each field's name, offset and size in order.
func TestNATLayout(t *testing.T) {
	specs, err := datapath.MapSpecs()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		key, value any
	}{
		{natFwdMapName, natFwdKey{}, natFwdVal{}},
		{natRevMapName, natRevKey{}, natRevVal{}},
	} {
		ms, ok := specs[c.name]
		if !ok {
			t.Fatalf("the objects define no map %s", c.name)
		}
		checkStruct(t, c.name+" key", reflect.TypeOf(c.key), ms.Key)
		checkStruct(t, c.name+" value", reflect.TypeOf(c.value), ms.Value)
	}
}

func checkStruct(t *testing.T, what string, goType reflect.Type, cType btf.Type) {
	t.Helper()
	st, ok := btf.UnderlyingType(cType).(*btf.Struct)
	if !ok {
		t.Fatalf("%s: C type %v is not a struct", what, cType)
	}
	if goType.Size() != uintptr(st.Size) || goType.NumField() != len(st.Members) {
		t.Fatalf("%s: Go %v is %d bytes with %d fields, C %s is %d bytes with %d", what, goType,
			goType.Size(), goType.NumField(), st.Name, st.Size, len(st.Members))
	}
	for i, m := range st.Members {
		f := goType.Field(i)
		size, err := btf.Sizeof(m.Type)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.EqualFold(f.Name, strings.ReplaceAll(m.Name, "_", "")) ||
			f.Offset != uintptr(m.Offset.Bytes()) || f.Type.Size() != uintptr(size) {
			t.Errorf("%s field %d: Go %s at %d (%d bytes), C %s at %d (%d bytes)", what, i,
				f.Name, f.Offset, f.Type.Size(), m.Name, m.Offset.Bytes(), size)
		}
	}
}
