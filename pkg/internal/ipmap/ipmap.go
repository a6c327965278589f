// Package ipmap holds maps keyed by IP addresses and prefixes in the bytes an IPv4 key needs: a
// netip.Addr takes 24 and a netip.Prefix 32, most of each slot of the agent's maps of 5,000
// nodes' addresses and pod CIDRs, where 4 and 5 do. Keys of any other kind (IPv6, IPv4-mapped,
// zoned, invalid) are kept as they are, so every key comes back exactly as it was set.
//
// The zero value of a Map or a PrefixMap is empty and ready to use. They are not safe for
// concurrent use.
package ipmap

import (
	"iter"
	"net/netip"
)

// Map is a map keyed by netip.Addr.
type Map[V any] struct {
	v4    map[[4]byte]V
	other map[netip.Addr]V
}

// NewMap is an empty Map with room for about hint keys.
func NewMap[V any](hint int) Map[V] { return Map[V]{v4: make(map[[4]byte]V, hint)} }

// Get is a's value, and whether a has one.
func (m *Map[V]) Get(a netip.Addr) (V, bool) {
	if a.Is4() {
		v, ok := m.v4[a.As4()]
		return v, ok
	}
	v, ok := m.other[a]
	return v, ok
}

// Set makes v a's value.
func (m *Map[V]) Set(a netip.Addr, v V) {
	if a.Is4() {
		if m.v4 == nil {
			m.v4 = map[[4]byte]V{}
		}
		m.v4[a.As4()] = v
		return
	}
	if m.other == nil {
		m.other = map[netip.Addr]V{}
	}
	m.other[a] = v
}

// Delete removes a's value, if any.
func (m *Map[V]) Delete(a netip.Addr) {
	if a.Is4() {
		delete(m.v4, a.As4())
		return
	}
	delete(m.other, a)
}

// Len is the number of keys.
func (m *Map[V]) Len() int { return len(m.v4) + len(m.other) }

// Clear removes every key.
func (m *Map[V]) Clear() {
	clear(m.v4)
	clear(m.other)
}

// All is every key with its value, in no set order; deleting the key visited is allowed, as in
// a map's range.
func (m *Map[V]) All() iter.Seq2[netip.Addr, V] {
	return func(yield func(netip.Addr, V) bool) {
		for k, v := range m.v4 {
			if !yield(netip.AddrFrom4(k), v) {
				return
			}
		}
		for k, v := range m.other {
			if !yield(k, v) {
				return
			}
		}
	}
}

// PrefixMap is a map keyed by netip.Prefix.
type PrefixMap[V any] struct {
	v4    map[prefix4]V
	other map[netip.Prefix]V
}

// prefix4 is a valid IPv4 prefix: its address as it is (not masked) and its length.
type prefix4 struct {
	addr [4]byte
	bits uint8
}

func asPrefix4(p netip.Prefix) (prefix4, bool) {
	if !p.IsValid() || !p.Addr().Is4() {
		return prefix4{}, false
	}
	return prefix4{p.Addr().As4(), uint8(p.Bits())}, true
}

func (p prefix4) prefix() netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4(p.addr), int(p.bits)) }

// NewPrefixMap is an empty PrefixMap with room for about hint keys.
func NewPrefixMap[V any](hint int) PrefixMap[V] { return PrefixMap[V]{v4: make(map[prefix4]V, hint)} }

// Get is p's value, and whether p has one.
func (m *PrefixMap[V]) Get(p netip.Prefix) (V, bool) {
	if k, ok := asPrefix4(p); ok {
		v, ok := m.v4[k]
		return v, ok
	}
	v, ok := m.other[p]
	return v, ok
}

// Set makes v p's value.
func (m *PrefixMap[V]) Set(p netip.Prefix, v V) {
	if k, ok := asPrefix4(p); ok {
		if m.v4 == nil {
			m.v4 = map[prefix4]V{}
		}
		m.v4[k] = v
		return
	}
	if m.other == nil {
		m.other = map[netip.Prefix]V{}
	}
	m.other[p] = v
}

// Delete removes p's value, if any.
func (m *PrefixMap[V]) Delete(p netip.Prefix) {
	if k, ok := asPrefix4(p); ok {
		delete(m.v4, k)
		return
	}
	delete(m.other, p)
}

// Len is the number of keys.
func (m *PrefixMap[V]) Len() int { return len(m.v4) + len(m.other) }

// All is every key with its value, in no set order; deleting the key visited is allowed, as in
// a map's range.
func (m *PrefixMap[V]) All() iter.Seq2[netip.Prefix, V] {
	return func(yield func(netip.Prefix, V) bool) {
		for k, v := range m.v4 {
			if !yield(k.prefix(), v) {
				return
			}
		}
		for k, v := range m.other {
			if !yield(k, v) {
				return
			}
		}
	}
}
