// Package nonmasq reads and writes nonmasq_map (bpf/lib/nat.h), the longest-prefix-match set of
// destinations that pod traffic reaches with its own source address: node_egress masquerades a
// pod's packet to the node IP only when its destination matches nothing here (and is outside the
// cluster CIDR, which the datapath also checks itself). The agent keeps the set equal to the
// cluster CIDR plus --non-masquerade-cidrs with Sync. The value is an unused byte: membership is
// the whole of an entry.
package nonmasq

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
)

// MapName is the map's name in the objects and under <root>/maps.
const MapName = "nonmasq_map"

// Key mirrors struct nonmasq_key: the LPM trie's key, prefix length first (host order), then the
// address (__be32).
type Key = maps.LPMKey

// KeyFrom converts an IPv4 prefix, masking host bits.
func KeyFrom(p netip.Prefix) (Key, error) { return maps.LPMKeyFrom(p) }

// Value is the map's value (__u8); the datapath only asks whether an entry exists.
type Value uint8

// present is what Upsert stores.
const present Value = 1

// Map is an open nonmasq_map; its owner closes it.
type Map struct {
	m *typed.Keyed[netip.Prefix, maps.LPMKey, Value]
}

// Open opens the map pinned under root.
func Open(root string) (*Map, error) {
	m, err := typed.OpenPrefix[Value](root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map) Close() error { return m.m.Close() }

// Upsert adds prefix to the set; adding it again is not an error.
func (m *Map) Upsert(prefix netip.Prefix) error { return m.m.Upsert(prefix, present) }

// Delete removes prefix from the set; a missing prefix is not an error.
func (m *Map) Delete(prefix netip.Prefix) error { return m.m.Delete(prefix) }

// Match reports whether node_egress would leave a packet to addr unmasqueraded because of this
// map (the longest-prefix match the kernel does).
func (m *Map) Match(addr netip.Addr) (bool, error) {
	_, err := m.m.Lookup(netip.PrefixFrom(addr, 32))
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("matching %s in %s: %w", addr, MapName, err)
	}
	return true, nil
}

// Iterate calls fn for each prefix until fn returns false.
func (m *Map) Iterate(fn func(netip.Prefix) bool) error {
	return m.m.Iterate(func(p netip.Prefix, _ Value) bool { return fn(p) })
}

// Sync makes the set exactly want (host bits masked): it adds what is missing, then deletes what
// is no longer wanted, so a destination that stays wanted is never briefly masqueraded.
func (m *Map) Sync(want []netip.Prefix) error {
	keep := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		if err := m.Upsert(p); err != nil {
			return err
		}
		keep[p.Masked()] = true
	}
	var stale []netip.Prefix
	if err := m.Iterate(func(p netip.Prefix) bool {
		if !keep[p] {
			stale = append(stale, p)
		}
		return true
	}); err != nil {
		return err
	}
	for _, p := range stale {
		if err := m.Delete(p); err != nil {
			return err
		}
	}
	return nil
}
