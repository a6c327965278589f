package agentinfo

import (
	"errors"
	"io/fs"
	"reflect"
	"testing"
	"time"
)

func TestWriteReadRemove(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read before Write: %v, want fs.ErrNotExist", err)
	}
	want := &Report{
		Node: "n1", Version: "v1", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Flags: map[string]string{"encap-mode": "native", "mtu": "0"},
		Kernel: Kernel{Release: "5.10.0-46-amd64", Features: []Feature{
			{Name: "tcx", Available: false, Since: "6.6", Uses: "tcx links", Without: "netlink TC"},
		}},
	}
	if err := Write(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Read = %+v, want %+v", got, want)
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := Read(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read after Remove: %v, want fs.ErrNotExist", err)
	}
}
