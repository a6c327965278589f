package agent

import (
	"os"
	"sync"
)

// writtenFile remembers a file as the agent last wrote it (its identity, size and modification
// time), so that a periodic pass can tell that the file is still in place without reading or
// rewriting it (controller.Intact): the name index's nodes.json and services.json hold
// thousands of entries at scale.
type writtenFile struct {
	mu   sync.Mutex
	info os.FileInfo // nil: unknown, rewrite
}

// wrote records path after a successful write; err from the write forgets it.
func (w *writtenFile) wrote(path string, err error) error {
	var info os.FileInfo
	if err == nil {
		info, _ = os.Stat(path)
	}
	w.mu.Lock()
	w.info = info
	w.mu.Unlock()
	return err
}

// intact reports whether path is still the file last written.
func (w *writtenFile) intact(path string) bool {
	w.mu.Lock()
	last := w.info
	w.mu.Unlock()
	if last == nil {
		return false
	}
	now, err := os.Stat(path)
	return err == nil && os.SameFile(now, last) && now.Size() == last.Size() && now.ModTime().Equal(last.ModTime())
}
