// Package nodes reads and writes nodes_map (bpf/lib/nodes.h): every cluster node by its tunnel
// endpoint (underlay) IPv4, with the MACs encapsulation writes and the node's network domain.
// overlay ingress accepts VXLAN only from addresses in this map. The agent writes it from the Node
// objects' Flannel annotations.
package nodes

import (
	"fmt"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
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
type Map struct {
	m *typed.Keyed[netip.Addr, maps.IPv4, Node]
}

// Open opens the map pinned under root.
func Open(root string) (*Map, error) {
	m, err := typed.OpenAddr[Node](root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map) Close() error { return m.m.Close() }

// Upsert creates or replaces the node at tunnel endpoint ip.
func (m *Map) Upsert(ip netip.Addr, n Node) error { return m.m.Upsert(ip, n) }

// Lookup returns the node at ip; a missing one wraps ebpf.ErrKeyNotExist.
func (m *Map) Lookup(ip netip.Addr) (Node, error) { return m.m.Lookup(ip) }

// Delete removes the node at ip; a missing node is not an error.
func (m *Map) Delete(ip netip.Addr) error { return m.m.Delete(ip) }

// Iterate calls fn for each node until fn returns false.
func (m *Map) Iterate(fn func(netip.Addr, Node) bool) error { return m.m.Iterate(fn) }

// IterateBatch is Iterate reading thousands of nodes per system call where the kernel can.
func (m *Map) IterateBatch(fn func(netip.Addr, Node) bool) error { return m.m.IterateBatch(fn) }
