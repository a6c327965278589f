// Package routes reads and writes routes_map (bpf/lib/routes.h), the longest-prefix-match table
// from pod CIDRs to the node that owns them. The agent writes one entry per node's pod CIDR (its
// own flagged FlagLocal); pod_egress looks up every destination in it.
package routes

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
)

// MapName is the map's name in the objects and under <root>/maps.
const MapName = "routes_map"

// Encapsulation (enum route_encap).
const (
	EncapVXLAN  uint8 = 0
	EncapDirect uint8 = 1 // route mode: no encapsulation
)

// Flags (enum route_flags).
const (
	FlagLocal uint8 = 1 << 0 // this node's own pod CIDR
)

// Key mirrors struct route_key: the LPM trie's key, prefix length first (host order), then the
// address (__be32).
type Key = maps.LPMKey

// KeyFrom converts an IPv4 prefix, masking host bits.
func KeyFrom(p netip.Prefix) (Key, error) { return maps.LPMKeyFrom(p) }

// Route mirrors struct route.
type Route struct {
	NodeIP maps.IPv4 // underlay address of the owning node; key of nodes_map
	Domain uint32    // network domain of the owning node
	Encap  uint8     // EncapVXLAN or EncapDirect
	Flags  uint8     // FlagLocal
	Pad    uint16
}

func (r Route) String() string {
	encap := "vxlan"
	if r.Encap == EncapDirect {
		encap = "direct"
	} else if r.Encap != EncapVXLAN {
		encap = fmt.Sprintf("encap(%d)", r.Encap)
	}
	s := fmt.Sprintf("node=%s domain=%d encap=%s", r.NodeIP, r.Domain, encap)
	if r.Flags&FlagLocal != 0 {
		s += " local"
	}
	return s
}

// Map is an open routes_map; its owner closes it.
type Map struct {
	m *typed.Keyed[netip.Prefix, maps.LPMKey, Route]
}

// Open opens the map pinned under root.
func Open(root string) (*Map, error) {
	m, err := typed.OpenPrefix[Route](root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map) Close() error { return m.m.Close() }

// Upsert creates or replaces the route for prefix.
func (m *Map) Upsert(prefix netip.Prefix, r Route) error { return m.m.Upsert(prefix, r) }

// Lookup returns the route stored for exactly prefix (the kernel's lookup on an LPM trie answers
// with the longest match instead; see Match). A missing route wraps ebpf.ErrKeyNotExist.
func (m *Map) Lookup(prefix netip.Prefix) (Route, error) {
	key, err := KeyFrom(prefix)
	if err != nil {
		return Route{}, fmt.Errorf("route key: %w", err)
	}
	var found *Route
	if err := m.Iterate(func(p netip.Prefix, r Route) bool {
		if p == key.Prefix() {
			found = &r
		}
		return found == nil
	}); err != nil {
		return Route{}, err
	}
	if found == nil {
		return Route{}, fmt.Errorf("looking up route %s: %w", prefix, ebpf.ErrKeyNotExist)
	}
	return *found, nil
}

// Match returns the longest-prefix match for addr, as pod_egress would see it.
func (m *Map) Match(addr netip.Addr) (netip.Prefix, Route, error) {
	r, err := m.m.Lookup(netip.PrefixFrom(addr, 32))
	if err != nil {
		return netip.Prefix{}, r, fmt.Errorf("matching route for %s: %w", addr, err)
	}
	var best netip.Prefix
	if err := m.Iterate(func(p netip.Prefix, _ Route) bool {
		if p.Contains(addr) && (!best.IsValid() || p.Bits() > best.Bits()) {
			best = p
		}
		return true
	}); err != nil {
		return netip.Prefix{}, r, err
	}
	return best, r, nil
}

// Delete removes the route for prefix; a missing route is not an error.
func (m *Map) Delete(prefix netip.Prefix) error { return m.m.Delete(prefix) }

// Iterate calls fn for each route until fn returns false.
func (m *Map) Iterate(fn func(netip.Prefix, Route) bool) error { return m.m.Iterate(fn) }

// IterateBatch is Iterate reading thousands of routes per system call where the kernel can.
func (m *Map) IterateBatch(fn func(netip.Prefix, Route) bool) error { return m.m.IterateBatch(fn) }
