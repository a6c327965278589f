// Package maptest is the scaffolding the pkg/maps tests share: the committed datapath loaded into
// a private bpffs (it needs root, and skips the test otherwise), and one of its maps opened
// through the package under test, all released when the test ends. The tests pass in the loader
// (datapath.Load): the map packages sit below the datapath and only their tests load it.
package maptest

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
)

// Load loads the datapath with load under a fresh bpffs and returns its root and what load
// returned (a *datapath.Datapath: the raw maps and programs, to check what the typed API wrote
// byte for byte).
func Load[D io.Closer](t *testing.T, load func(root string) (D, error)) (root string, d D) {
	t.Helper()
	root = filepath.Join(bpffstest.Mount(t), "edgeplane")
	d, err := load(root)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	t.Cleanup(func() { d.Close() })
	return root, d
}

// Open loads the datapath with load and opens a map of it with open (a pkg/maps package's Open).
func Open[M, D io.Closer](t *testing.T, load func(root string) (D, error), open func(root string) (M, error)) (M, D) {
	t.Helper()
	root, d := Load(t, load)
	m, err := open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, d
}
