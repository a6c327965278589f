package snapshot

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func state(backends int) *State {
	s := &State{
		Written: "2026-12-06T09:00:00Z",
		Node: Node{Name: "a1", NodeIP: netip.MustParseAddr("172.31.0.11"), PodCIDR: netip.MustParsePrefix("10.244.1.0/24"),
			VTEPMAC: "02:00:00:00:00:01", Domain: "site-a", DomainID: 7, ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")},
		Routes:  []Route{{PodCIDR: netip.MustParsePrefix("10.244.2.0/24"), NodeIP: netip.MustParseAddr("172.31.0.12"), Domain: 7}},
		Nodes:   []Peer{{NodeIP: netip.MustParseAddr("172.31.0.12"), VTEPMAC: "02:00:00:00:00:02", Domain: 7}},
		Domains: []Domain{{ID: 7, Name: "site-a", Reachable: true, Local: true}},
		Frontends: []Frontend{{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: 17, ID: 1, Count: 1},
			{VIP: netip.IPv4Unspecified(), Port: 30080, Proto: 6, Scope: 1, ID: 2, Count: 1}},
		PodBackends: []PodBackend{{IP: netip.MustParseAddr("10.244.1.5"), Namespace: "default", Name: "web-0"}},
	}
	for i := range backends {
		s.Backends = append(s.Backends, Backend{ID: 1, Slot: uint32(i), IP: IPv4{10, 244, 1, 5}, Port: 8080})
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := state(3)
	if err := Write(dir, want, DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir, DefaultMaxBytes)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != Version || got.Node != want.Node || len(got.Backends) != 3 || got.Frontends[1] != want.Frontends[1] ||
		got.PodBackends[0] != want.PodBackends[0] || got.Routes[0] != want.Routes[0] || got.Nodes[0] != want.Nodes[0] || got.Domains[0] != want.Domains[0] {
		t.Fatalf("read back %+v, wrote %+v", got, want)
	}
	if want.Version != 0 {
		t.Error("Write changed the caller's State")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left beside the snapshot: %v", entries)
	}
}

func TestMissing(t *testing.T) {
	if _, err := Read(t.TempDir(), DefaultMaxBytes); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of no file: %v, want fs.ErrNotExist", err)
	}
}

// A snapshot past the bound is refused and the previous file stays; a file past the bound is
// not read.
func TestSizeBound(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, state(1), DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	err := Write(dir, state(10_000), 64<<10)
	if !errors.Is(err, ErrTooBig) {
		t.Fatalf("Write past the bound: %v, want ErrTooBig", err)
	}
	got, err := Read(dir, DefaultMaxBytes)
	if err != nil || len(got.Backends) != 1 {
		t.Fatalf("after a refused write: %v, %d backends; want the previous snapshot", err, len(got.Backends))
	}
	if err := Write(dir, state(10_000), DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir, 64<<10); !errors.Is(err, ErrTooBig) {
		t.Fatalf("Read past the bound: %v, want ErrTooBig", err)
	}
}

func TestVersion(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, state(1), DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	future := strings.Replace(string(data), `"version":1`, `"version":2`, 1)
	if future == string(data) {
		t.Fatal("no version field in the file")
	}
	if err := os.WriteFile(Path(dir), []byte(future), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir, DefaultMaxBytes); !errors.Is(err, ErrVersion) {
		t.Fatalf("Read of version 2: %v, want ErrVersion", err)
	}
}

func TestCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, state(100), DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"truncated":       string(whole[:len(whole)/2]),
		"empty":           "",
		"not JSON":        "\x00\x01garbage",
		"no version":      `{"node":{}}`,
		"wrong type":      `{"version":1,"routes":"x"}`,
		"no node address": `{"version":1,"node":{"name":"a1"}}`,
		"IPv6 backend": `{"version":1,"node":{"nodeIP":"172.31.0.2","podCIDR":"10.244.1.0/24"},` +
			`"backends":[{"id":1,"slot":0,"ip":"fd00::5","port":80}]}`,
		"backend not an address": `{"version":1,"node":{"nodeIP":"172.31.0.2","podCIDR":"10.244.1.0/24"},` +
			`"backends":[{"id":1,"slot":0,"ip":"10.244.1","port":80}]}`,
	} {
		if err := os.WriteFile(Path(dir), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(dir, DefaultMaxBytes); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Read: %v, want ErrCorrupt", name, err)
		}
	}
}

// Readers racing a writer only ever see a whole snapshot, never a partial one, and a failed
// write leaves no temporary file.
func TestAtomicReplace(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, state(2000), DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := Write(dir, state(1000+i%2*1000), DefaultMaxBytes); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 300 {
		s, err := Read(dir, DefaultMaxBytes)
		if err != nil {
			t.Fatalf("a reader saw: %v", err)
		}
		if n := len(s.Backends); n != 1000 && n != 2000 {
			t.Fatalf("a reader saw %d backends", n)
		}
	}
	close(stop)
	wg.Wait()

	// A write that fails at the rename (the target is a non-empty directory, as for root too)
	// removes its temporary file.
	failing := t.TempDir()
	if err := os.MkdirAll(filepath.Join(Path(failing), "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(failing, state(1), DefaultMaxBytes); err == nil {
		t.Fatal("Write over a directory succeeded")
	}
	tmps, _ := filepath.Glob(filepath.Join(failing, ".*.tmp"))
	if len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
}

// Issue 18's scale (10,000 Services, 150,000 endpoints, each Service with a ClusterIP and a node
// port frontend, so two backend sets) fits the default bound, with room.
func TestScaleFitsTheDefaultBound(t *testing.T) {
	s := scaleState()
	dir := t.TempDir()
	if err := Write(dir, s, DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d frontends, %d backends: %.1f MiB (bound %d MiB)", len(s.Frontends), len(s.Backends), float64(info.Size())/(1<<20), DefaultMaxBytes>>20)
	if info.Size() > DefaultMaxBytes/2 {
		t.Fatalf("%d bytes: more than half the default bound", info.Size())
	}
}

// scaleState is issue 18's scale: 10,000 Services, 150,000 endpoints, each Service with a
// ClusterIP and a node port frontend, so two backend sets.
func scaleState() *State {
	s := state(0)
	for svc := range 10_000 {
		for f := range 2 {
			id := uint32(svc*2 + f)
			s.Frontends = append(s.Frontends, Frontend{VIP: netip.AddrFrom4([4]byte{10, 96, byte(svc >> 8), byte(svc)}), Port: 80 + uint16(f), Proto: 6, ID: id, Count: 15})
			for slot := range 15 {
				s.Backends = append(s.Backends, Backend{ID: id, Slot: uint32(slot), IP: IPv4{10, byte(100 + slot), byte(svc >> 8), byte(svc)}, Port: 8080})
			}
		}
	}
	return s
}
