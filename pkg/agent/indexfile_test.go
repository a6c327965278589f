package agent

import (
	"os"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// TestNodeIndexIntact: the node name index says it is intact after its write, and not once its
// file is removed or rewritten by someone else.
func TestNodeIndexIntact(t *testing.T) {
	x := &nodeIndex{runDir: t.TempDir()}
	if x.Intact() {
		t.Fatal("intact before any write")
	}
	if err := x.Sync([]controller.NodeName{{Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	if !x.Intact() {
		t.Fatal("not intact after its write")
	}
	path := nameindex.NodesPath(x.runDir)
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if x.Intact() {
		t.Error("intact after the file changed")
	}
	if err := x.Sync([]controller.NodeName{{Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if x.Intact() {
		t.Error("intact after the file was removed")
	}
}
