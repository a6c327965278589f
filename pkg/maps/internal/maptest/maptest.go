// Package maptest is the scaffolding the pkg/maps tests share: the committed datapath loaded into
// a private bpffs (it needs root, and skips the test otherwise), and one of its maps opened
// through the package under test, all released when the test ends.
package maptest

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
)

// Load loads the datapath under a fresh bpffs and returns its root; the Datapath gives tests the
// raw maps, to check what the typed API wrote byte for byte.
func Load(t *testing.T) (root string, d *datapath.Datapath) {
	t.Helper()
	root = filepath.Join(bpffstest.Mount(t), "edgeplane")
	d, err := datapath.Load(root)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	t.Cleanup(func() { d.Close() })
	return root, d
}

// Open loads the datapath and opens a map of it with open (a pkg/maps package's Open).
func Open[M io.Closer](t *testing.T, open func(root string) (M, error)) (M, *datapath.Datapath) {
	t.Helper()
	root, d := Load(t)
	m, err := open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, d
}
