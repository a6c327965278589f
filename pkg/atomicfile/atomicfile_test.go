package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWholeAndLeavesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run") // created by Write
	path := filepath.Join(dir, "report.json")
	for _, v := range []map[string]int{{"a": 1}, {"b": 2}} {
		if err := WriteJSON(path, v, 0o640); err != nil {
			t.Fatal(err)
		}
		var got map[string]int
		if err := ReadJSON(path, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got["a"]+got["b"] == 0 {
			t.Fatalf("read %v after writing %v", got, v)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("%d files in %s, want only report.json: %v", len(entries), dir, entries)
	}
}

func TestWriteFailureKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := Write(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory where the file should go cannot be replaced by a rename: the write fails.
	if err := Write(dir, []byte("new"), 0o600); err == nil {
		t.Fatal("replacing a directory succeeded")
	}
	if err := WriteJSON(path, func() {}, 0o600); err == nil {
		t.Fatal("encoding a func succeeded")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "old" {
		t.Fatalf("after failed writes: %q, %v", b, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestReadAndRemoveMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.json")
	var v any
	if err := ReadJSON(path, &v); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadJSON of a missing file: %v, want fs.ErrNotExist", err)
	}
	if err := Remove(path); err != nil {
		t.Errorf("Remove of a missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ReadJSON(path, &v); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadJSON of a truncated file: %v, want a decoding error", err)
	}
}
