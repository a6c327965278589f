// Package endpoints reads and writes endpoints_map (bpf/lib/endpoints.h): for each local pod IPv4,
// the host-side veth the programs redirect to and the MACs they write. The CNI plugin adds an entry
// on ADD and removes it on DEL; the agent garbage-collects entries whose veth is gone.
package endpoints

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/maps"
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
type Map struct{ m *ebpf.Map }

// Open opens the map pinned under root.
func Open(root string) (*Map, error) {
	m, err := maps.OpenPinned(root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map) Close() error { return m.m.Close() }

// Upsert creates or replaces ip's entry.
func (m *Map) Upsert(ip netip.Addr, ep Endpoint) error {
	key, err := maps.IPv4From(ip)
	if err != nil {
		return fmt.Errorf("endpoint key: %w", err)
	}
	if err := m.m.Update(key, ep, ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.E2BIG) { // the kernel's answer for a full hash map
			return fmt.Errorf("updating endpoint %s: %s is full (%d entries): %w", ip, MapName, m.m.MaxEntries(), err)
		}
		return fmt.Errorf("updating endpoint %s: %w", ip, err)
	}
	return nil
}

// Lookup returns ip's entry; a missing one is reported with ebpf.ErrKeyNotExist wrapped.
func (m *Map) Lookup(ip netip.Addr) (Endpoint, error) {
	var ep Endpoint
	key, err := maps.IPv4From(ip)
	if err != nil {
		return ep, fmt.Errorf("endpoint key: %w", err)
	}
	if err := m.m.Lookup(key, &ep); err != nil {
		return ep, fmt.Errorf("looking up endpoint %s: %w", ip, err)
	}
	return ep, nil
}

// Delete removes ip's entry; a missing entry is not an error (DEL runs more than once).
func (m *Map) Delete(ip netip.Addr) error {
	key, err := maps.IPv4From(ip)
	if err != nil {
		return fmt.Errorf("endpoint key: %w", err)
	}
	if err := m.m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting endpoint %s: %w", ip, err)
	}
	return nil
}

// Iterate calls fn for each entry until fn returns false.
func (m *Map) Iterate(fn func(netip.Addr, Endpoint) bool) error {
	var key maps.IPv4
	var ep Endpoint
	it := m.m.Iterate()
	for it.Next(&key, &ep) {
		if !fn(key.Addr(), ep) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterating %s: %w", MapName, err)
	}
	return nil
}
