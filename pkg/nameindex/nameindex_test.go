package nameindex

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

func pod(ip, name, cid string) Pod {
	return Pod{IP: netip.MustParseAddr(ip), Namespace: "default", Name: name, ContainerID: cid, Interface: "eth0", HostInterface: "ep-" + cid}
}

func TestPodsRoundTrip(t *testing.T) {
	runDir := t.TempDir()
	if _, err := ReadPods(runDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadPods without an index: %v, want ErrNotExist", err)
	}
	a, b := pod("10.244.1.5", "a", "c1"), pod("10.244.1.6", "b", "c2")
	for _, p := range []Pod{a, b} {
		if err := WritePod(runDir, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadPods(runDir)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[netip.Addr]Pod{a.IP: a, b.IP: b}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadPods = %v, want %v", got, want)
	}
	if a.FullName() != "default/a" || (Pod{}).FullName() != "" || (Pod{Name: "x"}).FullName() != "x" {
		t.Errorf("FullName: %q", a.FullName())
	}
}

// An address handed to a new pod: the old pod's DEL, late, must not remove the new pod's name.
func TestRemovePodKeepsTheAddressesNewOwner(t *testing.T) {
	runDir := t.TempDir()
	if err := WritePod(runDir, pod("10.244.1.5", "old", "c-old")); err != nil {
		t.Fatal(err)
	}
	if err := RemovePod(runDir, "c-old", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := WritePod(runDir, pod("10.244.1.5", "new", "c-new")); err != nil {
		t.Fatal(err)
	}
	if err := RemovePod(runDir, "c-old", "eth0"); err != nil { // repeated DEL
		t.Fatal(err)
	}
	if err := RemovePod(runDir, "c-new", "eth1"); err != nil { // another interface of the pod
		t.Fatal(err)
	}
	got, err := ReadPods(runDir)
	if err != nil || len(got) != 1 || got[netip.MustParseAddr("10.244.1.5")].Name != "new" {
		t.Fatalf("after the old pod's DEL: %v, %v", got, err)
	}
	if err := RemovePod(runDir, "c-new", "eth0"); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadPods(runDir); err != nil || len(got) != 0 {
		t.Fatalf("after DEL: %v, %v", got, err)
	}
	if err := RemovePod(t.TempDir(), "c", "eth0"); err != nil {
		t.Errorf("DEL without an index: %v", err)
	}
}

// Concurrent ADDs and DELs (what a runtime does when many pods start at once) leave every file
// whole and every surviving pod named.
func TestConcurrentWriters(t *testing.T) {
	runDir := t.TempDir()
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			p := pod(fmt.Sprintf("10.244.1.%d", i+1), fmt.Sprintf("pod-%d", i), fmt.Sprintf("c%d", i))
			for range 20 {
				if err := WritePod(runDir, p); err != nil {
					t.Error(err)
				}
				if i%2 == 1 {
					if err := RemovePod(runDir, p.ContainerID, "eth0"); err != nil {
						t.Error(err)
					}
				}
				if _, err := ReadPods(runDir); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got, err := ReadPods(runDir)
	if err != nil || len(got) != 32 {
		t.Fatalf("%d pods, %v; want 32", len(got), err)
	}
	entries, _ := os.ReadDir(PodsDir(runDir))
	if len(entries) != 32 {
		t.Errorf("%d files left, want 32 (no temporary files)", len(entries))
	}
}

func TestBadEntriesAndPrune(t *testing.T) {
	runDir := t.TempDir()
	good := pod("10.244.1.5", "a", "c1")
	stale := pod("10.244.1.6", "b", "c2")
	for _, p := range []Pod{good, stale} {
		if err := WritePod(runDir, p); err != nil {
			t.Fatal(err)
		}
	}
	dir := PodsDir(runDir)
	for name, content := range map[string]string{
		"10.244.1.7.json":      "{",                     // torn by hand
		"10.244.1.8.json":      `{"ip": "10.244.1.99"}`, // under the wrong name
		".10.244.1.9.json.123": "{",                     // a writer in progress
		".10.244.1.10.json.1":  "{",                     // a writer that died long ago
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, ".10.244.1.10.json.1"), old, old); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPods(runDir)
	var bad *BadEntriesError
	if !errors.As(err, &bad) || bad.Count != 2 || len(got) != 2 {
		t.Fatalf("ReadPods: %v (%d pods), want 2 pods and 2 bad entries", err, len(got))
	}
	// GC keeps the valid attachment, drops the stale one, the torn file and the dead writer's.
	if err := PrunePods(runDir, func(p Pod) bool { return p.ContainerID == "c1" }); err != nil {
		t.Fatal(err)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{".10.244.1.9.json.123", "10.244.1.5.json"}; !reflect.DeepEqual(left, want) {
		t.Errorf("after GC: %v, want %v", left, want)
	}
}

func TestNodes(t *testing.T) {
	runDir := t.TempDir()
	if _, err := ReadNodes(runDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadNodes without an index: %v", err)
	}
	nodes := []Node{
		{Name: "b", NodeIP: netip.MustParseAddr("192.168.0.2"), PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Pool: "p", Domain: "p"},
		{Name: "a", NodeIP: netip.MustParseAddr("192.168.0.1"), PodCIDR: netip.MustParsePrefix("10.244.0.0/24"), Domain: "default", ThisNode: true},
	}
	if err := WriteNodes(runDir, nodes); err != nil {
		t.Fatal(err)
	}
	got, err := ReadNodes(runDir)
	if err != nil || !reflect.DeepEqual(got, []Node{nodes[1], nodes[0]}) {
		t.Fatalf("ReadNodes = %v, %v", got, err)
	}
	if err := WriteNodes(runDir, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(NodesPath(runDir)); string(b) != "{\n  \"nodes\": []\n}\n" {
		t.Errorf("empty node file: %q", b)
	}
	if err := WritePod(runDir, pod("10.244.1.5", "a", "c1")); err != nil {
		t.Fatal(err)
	}
	if err := Remove(runDir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(runDir, Dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("index left after Remove: %v", err)
	}
	if err := Remove(runDir); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}
