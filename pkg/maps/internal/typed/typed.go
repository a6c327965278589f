// Package typed is the one implementation of a pinned map read and written through Go mirrors of
// its key and value. Each package under pkg/maps wraps a Map, or a Keyed map when its callers
// speak netip.Addr or netip.Prefix rather than the C key, so opening, key conversion, error
// context and the rules below are written once.
//
// Errors name the map and the key, e.g. "updating endpoints_map[10.244.1.7]: ...". A missing key
// is ebpf.ErrKeyNotExist wrapped on Get, and not an error on Delete: the CNI plugin's DEL and the
// reconcilers delete what may already be gone.
package typed

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/maps"
)

// Map is an open pinned map with key K and value V (a slice of the per-CPU value for per-CPU
// maps); its owner closes it.
type Map[K, V any] struct {
	m    *ebpf.Map
	name string
}

// Open opens the map pinned as name under root.
func Open[K, V any](root, name string) (*Map[K, V], error) {
	m, err := maps.OpenPinned(root, name)
	if err != nil {
		return nil, err
	}
	return &Map[K, V]{m: m, name: name}, nil
}

// OpenReadOnly opens the map pinned as name under root for reading: Put and Delete fail.
func OpenReadOnly[K, V any](root, name string) (*Map[K, V], error) {
	m, err := maps.OpenPinnedReadOnly(root, name)
	if err != nil {
		return nil, err
	}
	return &Map[K, V]{m: m, name: name}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map[K, V]) Close() error { return m.m.Close() }

// Put creates or replaces key's entry.
func (m *Map[K, V]) Put(key K, value V) error {
	if err := m.m.Update(key, value, ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.E2BIG) { // the kernel's answer for a full hash map
			return fmt.Errorf("updating %s[%v]: the map is full (%d entries): %w", m.name, key, m.m.MaxEntries(), err)
		}
		return fmt.Errorf("updating %s[%v]: %w", m.name, key, err)
	}
	return nil
}

// Get returns key's entry; a missing one is reported with ebpf.ErrKeyNotExist wrapped. On an LPM
// trie the kernel answers with the longest prefix that matches key.
func (m *Map[K, V]) Get(key K) (V, error) {
	var value V
	if err := m.m.Lookup(key, &value); err != nil {
		var zero V
		return zero, fmt.Errorf("looking up %s[%v]: %w", m.name, key, err)
	}
	return value, nil
}

// Delete removes key's entry; a missing entry is not an error.
func (m *Map[K, V]) Delete(key K) error {
	if err := m.m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting %s[%v]: %w", m.name, key, err)
	}
	return nil
}

// Iterate calls fn for each entry until fn returns false. Each call gets its own key and value,
// so fn may keep them (a per-CPU slice included).
func (m *Map[K, V]) Iterate(fn func(K, V) bool) error {
	it := m.m.Iterate()
	for {
		var key K
		var value V
		if !it.Next(&key, &value) {
			break
		}
		if !fn(key, value) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterating %s: %w", m.name, err)
	}
	return nil
}

// batchSize is how many entries one batch system call carries: large enough that reading
// 100,000 backend slots takes a few dozen calls, small enough to bound the buffers (and far above
// a hash bucket's length, below which the kernel refuses a batch lookup with ENOSPC).
const batchSize = 4096

// PutBatch creates or replaces keys[i] -> values[i] with BPF_MAP_UPDATE_BATCH (Linux 5.6), one
// system call per batchSize entries, or entry by entry where the kernel has no batch operations.
// On error some entries may be written: the caller deletes what it does not keep.
func (m *Map[K, V]) PutBatch(keys []K, values []V) error {
	if len(keys) != len(values) {
		return fmt.Errorf("updating %s: %d keys for %d values", m.name, len(keys), len(values))
	}
	for start := 0; start < len(keys); start += batchSize {
		end := min(start+batchSize, len(keys))
		if _, err := m.m.BatchUpdate(keys[start:end], values[start:end], nil); errors.Is(err, ebpf.ErrNotSupported) {
			for i := start; i < len(keys); i++ {
				if err := m.Put(keys[i], values[i]); err != nil {
					return err
				}
			}
			return nil
		} else if errors.Is(err, unix.E2BIG) {
			return fmt.Errorf("updating %s (%d entries at once): the map is full (%d entries): %w", m.name, end-start, m.m.MaxEntries(), err)
		} else if err != nil {
			return fmt.Errorf("updating %s (%d entries at once): %w", m.name, end-start, err)
		}
	}
	return nil
}

// IterateBatch is Iterate reading batchSize entries per system call with BPF_MAP_LOOKUP_BATCH
// (Linux 5.6) instead of two calls per entry; it falls back to Iterate where the kernel has no
// batch operations. Like Iterate, under concurrent writes it may see an entry twice or miss one.
// Not for per-CPU maps.
func (m *Map[K, V]) IterateBatch(fn func(K, V) bool) error {
	var cursor ebpf.MapBatchCursor
	keys, values := make([]K, batchSize), make([]V, batchSize)
	for first := true; ; first = false {
		n, err := m.m.BatchLookup(&cursor, keys, values, nil)
		if first && errors.Is(err, ebpf.ErrNotSupported) {
			return m.Iterate(fn)
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("iterating %s in batches: %w", m.name, err)
		}
		for i := range n {
			if !fn(keys[i], values[i]) {
				return nil
			}
		}
		if err != nil { // ErrKeyNotExist: that was the last batch
			return nil
		}
	}
}

// Walk visits at most max entries in the map's key order, starting after the key *after (from
// the first key when after is nil), and returns the last key visited and whether the walk reached
// the end of the map. It is how a garbage collector spreads a sweep of a large map over several
// bounded passes: the next pass starts after the last key of this one. A key that is deleted
// between passes makes the kernel restart from the first key, so pass a key that is still there;
// for the same reason fn must not delete entries: delete after Walk returns. An entry the
// datapath deletes under the walk is skipped (or restarts the walk, which max bounds).
func (m *Map[K, V]) Walk(after *K, max int, fn func(K, V)) (last K, done bool, err error) {
	var cur any // nil: the first key
	if after != nil {
		cur = *after
	}
	for range max {
		var key K
		if err := m.m.NextKey(cur, &key); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return last, true, nil
			}
			return last, false, fmt.Errorf("walking %s: %w", m.name, err)
		}
		cur, last = key, key
		var value V
		if err := m.m.Lookup(key, &value); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return last, false, fmt.Errorf("looking up %s[%v]: %w", m.name, key, err)
		}
		fn(key, value)
	}
	return last, false, nil
}

// Keyed is a Map that its callers address with A (netip.Addr, netip.Prefix) instead of the mirror
// K of the C key; the conversions are chosen once, by the Open function.
type Keyed[A, K, V any] struct {
	m       *Map[K, V]
	toKey   func(A) (K, error)
	fromKey func(K) A
}

// OpenAddr opens a map keyed by an IPv4 address (C __be32).
func OpenAddr[V any](root, name string) (*Keyed[netip.Addr, maps.IPv4, V], error) {
	return openKeyed[netip.Addr, maps.IPv4, V](root, name, maps.IPv4From, maps.IPv4.Addr)
}

// OpenPrefix opens an LPM trie keyed by an IPv4 prefix (maps.LPMKey); host bits are masked.
func OpenPrefix[V any](root, name string) (*Keyed[netip.Prefix, maps.LPMKey, V], error) {
	return openKeyed[netip.Prefix, maps.LPMKey, V](root, name, maps.LPMKeyFrom, maps.LPMKey.Prefix)
}

func openKeyed[A, K, V any](root, name string, toKey func(A) (K, error), fromKey func(K) A) (*Keyed[A, K, V], error) {
	m, err := Open[K, V](root, name)
	if err != nil {
		return nil, err
	}
	return &Keyed[A, K, V]{m: m, toKey: toKey, fromKey: fromKey}, nil
}

// Close releases the handle; the pinned map lives on.
func (k *Keyed[A, K, V]) Close() error { return k.m.Close() }

func (k *Keyed[A, K, V]) key(a A) (K, error) {
	key, err := k.toKey(a)
	if err != nil {
		return key, fmt.Errorf("%s key: %w", k.m.name, err)
	}
	return key, nil
}

// Upsert creates or replaces a's entry.
func (k *Keyed[A, K, V]) Upsert(a A, value V) error {
	key, err := k.key(a)
	if err != nil {
		return err
	}
	return k.m.Put(key, value)
}

// Lookup returns a's entry (on an LPM trie: the longest prefix matching a); a missing one wraps
// ebpf.ErrKeyNotExist.
func (k *Keyed[A, K, V]) Lookup(a A) (V, error) {
	key, err := k.key(a)
	if err != nil {
		var zero V
		return zero, err
	}
	return k.m.Get(key)
}

// Delete removes a's entry; a missing entry is not an error.
func (k *Keyed[A, K, V]) Delete(a A) error {
	key, err := k.key(a)
	if err != nil {
		return err
	}
	return k.m.Delete(key)
}

// Iterate calls fn for each entry until fn returns false.
func (k *Keyed[A, K, V]) Iterate(fn func(A, V) bool) error {
	return k.m.Iterate(func(key K, value V) bool { return fn(k.fromKey(key), value) })
}

// IterateBatch is Iterate with Map.IterateBatch's batch reads.
func (k *Keyed[A, K, V]) IterateBatch(fn func(A, V) bool) error {
	return k.m.IterateBatch(func(key K, value V) bool { return fn(k.fromKey(key), value) })
}
