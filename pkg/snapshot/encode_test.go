package snapshot

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"testing"
)

// The streamed encoding is json.Marshal's, byte for byte: with every field of State set (a field
// added to State and not to encode fails here), with empty and with nil lists.
func TestEncodeIsJSONMarshal(t *testing.T) {
	full := state(3)
	full.Version = Version
	full.Node.Gateway, full.Node.IsGateway, full.Node.RouteMode = netip.MustParseAddr("172.31.0.1"), true, true
	full.Nodes[0].NextHopMAC = "02:00:00:00:00:fe"
	full.PodBackends[0].Name = "web-<0>&" // escaped as json.Marshal escapes it
	v := reflect.ValueOf(*full)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("the fixture leaves State.%s unset", v.Type().Field(i).Name)
		}
	}
	empty := &State{Version: Version, Routes: []Route{}, Backends: []Backend{}}
	for _, s := range []*State{full, empty, {}} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := encode(&got, s); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("encode:\n%s\njson.Marshal:\n%s", got.Bytes(), want)
		}
	}
}

// Writing a snapshot of issue 18's scale allocates a small part of the file's size: the encoding
// goes to the file as it is made (json.Marshal held the whole file, ~17 MiB, and the buffers it
// grew through), and the backends, most of the entries, encode themselves into one reused buffer
// (through encoding/json each cost its address's text, ~5 MiB in all). What is left is the
// frontends' and routes' encoding/json garbage: ~0.4 MiB.
func TestWriteStreamsTheEncoding(t *testing.T) {
	s := scaleState()
	dir := t.TempDir()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := Write(dir, s, DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	info, err := os.Stat(Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d backends: file %.1f MiB, %.2f MiB allocated writing it", len(s.Backends), float64(info.Size())/(1<<20), float64(allocated)/(1<<20))
	if allocated > uint64(info.Size())/16 {
		t.Errorf("writing a %d-byte snapshot allocated %d bytes: more than a sixteenth of it", info.Size(), allocated)
	}
}
