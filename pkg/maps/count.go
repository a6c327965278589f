package maps

import (
	"errors"

	"github.com/cilium/ebpf"
)

// Countable tells whether a map of type t holds a countable set of entries. Arrays always hold
// max_entries slots, and ring buffers and perf arrays have no keys to walk.
func Countable(t ebpf.MapType) bool {
	switch t {
	case ebpf.Hash, ebpf.PerCPUHash, ebpf.LRUHash, ebpf.LRUCPUHash, ebpf.LPMTrie:
		return true
	}
	return false
}

// CountKeys counts m's entries by walking its keys only (the values of a per-CPU map would cost a
// copy per CPU). A key deleted under the walk restarts it in the kernel, so the walk is bounded.
func CountKeys(m *ebpf.Map) (int, error) {
	var key any // nil: the first key
	n := 0
	for limit := 2*int(m.MaxEntries()) + 1; n < limit; n++ {
		next, err := m.NextKeyBytes(key)
		if err != nil {
			return 0, err
		}
		if next == nil {
			return n, nil
		}
		key = next
	}
	return 0, errors.New("entries changed faster than they could be counted")
}
