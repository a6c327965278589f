// Package endpoints reads and writes endpoints_map (bpf/lib/endpoints.h): for each local pod IPv4,
// the host-side veth the programs redirect to and the MACs they write. The CNI plugin adds an entry
// on ADD and removes it on DEL; the agent garbage-collects entries whose veth is gone.
package endpoints

import (
	"fmt"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
)

// MapName is the map's name in the objects and under <root>/maps.
const MapName = "endpoints_map"

// Endpoint mirrors struct endpoint.
type Endpoint struct {
	Ifindex uint32  // host-side veth (redirect_peer target)
	PodMAC  [6]byte // eth0 inside the pod
	HostMAC [6]byte // the host-side veth: the pod's gateway
	Flags   uint32
}

func (e Endpoint) String() string {
	return fmt.Sprintf("ifindex=%d pod-mac=%s host-mac=%s flags=%#x", e.Ifindex, maps.MAC(e.PodMAC), maps.MAC(e.HostMAC), e.Flags)
}

// Map is an open endpoints_map; its owner closes it.
type Map struct {
	m *typed.Keyed[netip.Addr, maps.IPv4, Endpoint]
}

// Open opens the map pinned under root.
func Open(root string) (*Map, error) {
	m, err := typed.OpenAddr[Endpoint](root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map) Close() error { return m.m.Close() }

// Upsert creates or replaces ip's entry.
func (m *Map) Upsert(ip netip.Addr, ep Endpoint) error { return m.m.Upsert(ip, ep) }

// Lookup returns ip's entry; a missing one is reported with ebpf.ErrKeyNotExist wrapped.
func (m *Map) Lookup(ip netip.Addr) (Endpoint, error) { return m.m.Lookup(ip) }

// Delete removes ip's entry; a missing entry is not an error (DEL runs more than once).
func (m *Map) Delete(ip netip.Addr) error { return m.m.Delete(ip) }

// Iterate calls fn for each entry until fn returns false.
func (m *Map) Iterate(fn func(netip.Addr, Endpoint) bool) error { return m.m.Iterate(fn) }
