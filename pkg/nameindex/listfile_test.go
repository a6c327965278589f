package nameindex

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// writeList writes what json.MarshalIndent writes of the document, byte for byte: for lists of
// several items, one, and none (nil or empty), escaping included.
func TestWriteListIsMarshalIndent(t *testing.T) {
	nodes := []Node{
		{Name: "a<1>&", NodeIP: netip.MustParseAddr("192.0.2.1"), PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Pool: "p", Domain: "d", ThisNode: true},
		{Name: "b", NodeIP: netip.MustParseAddr("192.0.2.2")},
	}
	services := []Service{{Namespace: "default", Name: "web", Frontends: []Frontend{{IP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: "UDP", Scope: "cluster"}}}}
	dir := t.TempDir()
	for name, c := range map[string]struct {
		write func() error
		doc   any
	}{
		"two nodes":    {func() error { return writeList(dir, "f", "nodes", nodes) }, nodesDoc{Nodes: nodes}},
		"one node":     {func() error { return writeList(dir, "f", "nodes", nodes[:1]) }, nodesDoc{Nodes: nodes[:1]}},
		"no nodes":     {func() error { return writeList(dir, "f", "nodes", []Node(nil)) }, nodesDoc{Nodes: []Node{}}},
		"a service":    {func() error { return writeList(dir, "f", "services", services) }, servicesDoc{Services: services}},
		"empty (make)": {func() error { return writeList(dir, "f", "services", []Service{}) }, servicesDoc{Services: []Service{}}},
	} {
		if err := c.write(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "f"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.MarshalIndent(c.doc, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if want = append(want, '\n'); !bytes.Equal(got, want) {
			t.Errorf("%s: writeList wrote\n%s\njson.MarshalIndent:\n%s", name, got, want)
		}
	}
}
