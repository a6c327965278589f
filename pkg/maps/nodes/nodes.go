// Package nodes reads and writes nodes_map (bpf/lib/nodes.h): every cluster node by its tunnel
// endpoint (underlay) IPv4, with the MACs encapsulation writes and the node's network domain.
// overlay ingress accepts VXLAN only from addresses in this map. The agent writes it from the Node
// objects' Flannel annotations.
package nodes

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/maps"
)

// MapName is the map's name in the objects and under <root>/maps.
const MapName = "nodes_map"

// Flags (enum node_flags).
const (
	FlagNexthopValid uint32 = 1 << 0 // NexthopMAC is resolved; otherwise the kernel resolves it
)

// Node mirrors struct node.
type Node struct {
	VtepMAC    [6]byte // inner destination MAC
	NexthopMAC [6]byte // outer destination MAC: the node itself or the underlay gateway
	Domain     uint32
	Flags      uint32
}

func (n Node) String() string {
	return fmt.Sprintf("vtep-mac=%s nexthop-mac=%s domain=%d flags=%#x", maps.MAC(n.VtepMAC), maps.MAC(n.NexthopMAC), n.Domain, n.Flags)
}

// Map is an open nodes_map; its owner closes it.
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

// Upsert creates or replaces the node at tunnel endpoint ip.
func (m *Map) Upsert(ip netip.Addr, n Node) error {
	key, err := maps.IPv4From(ip)
	if err != nil {
		return fmt.Errorf("node key: %w", err)
	}
	if err := m.m.Update(key, n, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("updating node %s: %w", ip, err)
	}
	return nil
}

// Lookup returns the node at ip; a missing one wraps ebpf.ErrKeyNotExist.
func (m *Map) Lookup(ip netip.Addr) (Node, error) {
	var n Node
	key, err := maps.IPv4From(ip)
	if err != nil {
		return n, fmt.Errorf("node key: %w", err)
	}
	if err := m.m.Lookup(key, &n); err != nil {
		return n, fmt.Errorf("looking up node %s: %w", ip, err)
	}
	return n, nil
}

// Delete removes the node at ip; a missing node is not an error.
func (m *Map) Delete(ip netip.Addr) error {
	key, err := maps.IPv4From(ip)
	if err != nil {
		return fmt.Errorf("node key: %w", err)
	}
	if err := m.m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting node %s: %w", ip, err)
	}
	return nil
}

// Iterate calls fn for each node until fn returns false.
func (m *Map) Iterate(fn func(netip.Addr, Node) bool) error {
	var key maps.IPv4
	var n Node
	it := m.m.Iterate()
	for it.Next(&key, &n) {
		if !fn(key.Addr(), n) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterating %s: %w", MapName, err)
	}
	return nil
}
