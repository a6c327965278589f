// Package layout checks, in tests, that a Go mirror of a map's key or value has the size and field
// offsets of the C type the committed objects declare (their BTF), so that a change on one side
// only fails loudly. The tests pass in the objects' specs (pkg/datapath's MapSpecs and
// TypeByName): the map packages sit below the datapath and only their tests read its objects.
package layout

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Check compares key and value (zero values of the Go mirrors) with the BTF of map name among
// the specs mapSpecs returns (datapath.MapSpecs).
func Check(t *testing.T, mapSpecs func() (map[string]*ebpf.MapSpec, error), name string, key, value any) {
	t.Helper()
	specs, err := mapSpecs()
	if err != nil {
		t.Fatalf("reading map specs: %v", err)
	}
	ms, ok := specs[name]
	if !ok {
		t.Fatalf("the objects define no map %s", name)
	}
	if got, want := reflect.TypeOf(key).Size(), uintptr(ms.KeySize); got != want {
		t.Errorf("%s key: Go %T is %d bytes, C is %d", name, key, got, want)
	}
	if got, want := reflect.TypeOf(value).Size(), uintptr(ms.ValueSize); got != want {
		t.Errorf("%s value: Go %T is %d bytes, C is %d", name, value, got, want)
	}
	if err := compare(reflect.TypeOf(key), ms.Key); err != nil {
		t.Errorf("%s key: %v", name, err)
	}
	if err := compare(reflect.TypeOf(value), ms.Value); err != nil {
		t.Errorf("%s value: %v", name, err)
	}
}

// CheckType compares value (the zero value of a Go mirror) with the C type called name, as
// typeByName finds it in the objects' BTF (datapath.TypeByName): for types that are no map's key
// or value, such as ring buffer records.
func CheckType(t *testing.T, typeByName func(string) (btf.Type, error), name string, value any) {
	t.Helper()
	cType, err := typeByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := compare(reflect.TypeOf(value), cType); err != nil {
		t.Errorf("%s: %v", name, err)
	}
}

func compare(goType reflect.Type, cType btf.Type) error {
	if cType == nil {
		return fmt.Errorf("no BTF for %v", goType)
	}
	cType = btf.UnderlyingType(cType)
	size, err := btf.Sizeof(cType)
	if err != nil {
		return err
	}
	if uintptr(size) != goType.Size() {
		return fmt.Errorf("Go %v is %d bytes, C %s is %d", goType, goType.Size(), cType, size)
	}
	st, ok := cType.(*btf.Struct)
	if !ok {
		return nil // a scalar or array: the size is the layout
	}
	if goType.Kind() != reflect.Struct {
		return fmt.Errorf("Go %v is not a struct like C %s", goType, st.Name)
	}
	var fields []reflect.StructField
	for i := range goType.NumField() {
		if f := goType.Field(i); f.Name != "_" {
			fields = append(fields, f)
		}
	}
	if len(fields) != len(st.Members) {
		return fmt.Errorf("Go %v has %d fields, C struct %s has %d", goType, len(fields), st.Name, len(st.Members))
	}
	for i, m := range st.Members {
		f := fields[i]
		if normalize(f.Name) != normalize(m.Name) {
			return fmt.Errorf("field %d: Go %s, C %s", i, f.Name, m.Name)
		}
		if uintptr(m.Offset.Bytes()) != f.Offset {
			return fmt.Errorf("field %s: Go offset %d, C offset %d", f.Name, f.Offset, m.Offset.Bytes())
		}
		msize, err := btf.Sizeof(m.Type)
		if err != nil {
			return err
		}
		if uintptr(msize) != f.Type.Size() {
			return fmt.Errorf("field %s: Go %d bytes, C %d bytes", f.Name, f.Type.Size(), msize)
		}
	}
	return nil
}

func normalize(name string) string { return strings.ToLower(strings.ReplaceAll(name, "_", "")) }
