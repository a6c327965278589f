// Package nat reads and writes the masquerade state of bpf/lib/nat.h. node_egress creates the two
// halves of a flow's mapping together when its first packet leaves the node to the outside:
// nat_fwd_map takes the pod's flow to the node port it was given, and nat_rev_map takes that node
// port, per remote, back to the pod (its key is also what makes a node port taken). node_ingress
// reads nat_rev_map to translate replies and ICMP errors back. Entries expire only by LRU
// eviction, one half at a time, so either can be missing: node_egress re-claims a lost reverse
// half on the flow's next packet. The agent does not write these maps; edgeplanectl reads them.
//
// Ports (and ICMP echo identifiers, which stand in for the pod port with a remote port of 0) are
// C __be16: Port keeps them in network byte order and converts only through PortFrom and Uint16.
package nat

import (
	"fmt"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
)

// Map names in the objects and under <root>/maps.
const (
	FwdMapName = "nat_fwd_map"
	RevMapName = "nat_rev_map"
)

// Proto is an IP protocol number (pkg/maps.Proto, shared with pkg/maps/lb).
type Proto = maps.Proto

// The protocols the datapath masquerades (ICMP: echo).
const (
	ProtoICMP = maps.ProtoICMP
	ProtoTCP  = maps.ProtoTCP
	ProtoUDP  = maps.ProtoUDP
)

// Port is a port as the datapath stores it (C __be16; pkg/maps.Port).
type Port = maps.Port

// PortFrom converts a port number.
func PortFrom(p uint16) Port { return maps.PortFrom(p) }

// FwdKey mirrors struct nat_fwd_key: a masqueraded flow as the pod sent it.
type FwdKey struct {
	PodIP      maps.IPv4
	RemoteIP   maps.IPv4
	PodPort    Port
	RemotePort Port // ICMP echo: 0
	Proto      Proto
	Pad        [3]uint8
}

func (k FwdKey) String() string {
	return fmt.Sprintf("%s %s:%s -> %s:%s", k.Proto, k.PodIP, k.PodPort, k.RemoteIP, k.RemotePort)
}

// RevKey is the nat_rev_map key that the flow k claimed with node port v (nat_snat_port).
func (k FwdKey) RevKey(v FwdValue) RevKey {
	return RevKey{RemoteIP: k.RemoteIP, RemotePort: k.RemotePort, NodePort: v.NodePort, Proto: k.Proto}
}

// FwdValue mirrors struct nat_fwd_val.
type FwdValue struct {
	NodePort Port // the source port (ICMP: identifier) after masquerade
	Pad      uint16
}

func (v FwdValue) String() string { return "node-port=" + v.NodePort.String() }

// RevKey mirrors struct nat_rev_key: a reply's remote end and the node port it is addressed to.
type RevKey struct {
	RemoteIP   maps.IPv4
	RemotePort Port
	NodePort   Port
	Proto      Proto
	Pad        [3]uint8
}

func (k RevKey) String() string {
	return fmt.Sprintf("%s %s:%s -> node-port %s", k.Proto, k.RemoteIP, k.RemotePort, k.NodePort)
}

// RevValue mirrors struct nat_rev_val: the pod end the node port translates back to.
type RevValue struct {
	PodIP   maps.IPv4
	PodPort Port
	Pad     uint16
}

func (v RevValue) String() string { return fmt.Sprintf("pod=%s:%s", v.PodIP, v.PodPort) }

// Map is an open nat_fwd_map (FwdMap) or nat_rev_map (RevMap); its owner closes it.
type Map[K, V any] struct {
	m *typed.Map[K, V]
}

// FwdMap is an open nat_fwd_map.
type FwdMap = Map[FwdKey, FwdValue]

// RevMap is an open nat_rev_map.
type RevMap = Map[RevKey, RevValue]

// OpenFwd opens nat_fwd_map pinned under root.
func OpenFwd(root string) (*FwdMap, error) {
	return wrap(typed.Open[FwdKey, FwdValue](root, FwdMapName))
}

// OpenRev opens nat_rev_map pinned under root.
func OpenRev(root string) (*RevMap, error) {
	return wrap(typed.Open[RevKey, RevValue](root, RevMapName))
}

// OpenFwdReadOnly opens nat_fwd_map for reading only, as edgeplanectl does: writes fail.
func OpenFwdReadOnly(root string) (*FwdMap, error) {
	return wrap(typed.OpenReadOnly[FwdKey, FwdValue](root, FwdMapName))
}

// OpenRevReadOnly opens nat_rev_map for reading only: writes fail.
func OpenRevReadOnly(root string) (*RevMap, error) {
	return wrap(typed.OpenReadOnly[RevKey, RevValue](root, RevMapName))
}

func wrap[K, V any](m *typed.Map[K, V], err error) (*Map[K, V], error) {
	if err != nil {
		return nil, err
	}
	return &Map[K, V]{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map[K, V]) Close() error { return m.m.Close() }

// Upsert creates or replaces k's entry (node_egress creates entries; tests and repairs use this).
func (m *Map[K, V]) Upsert(k K, v V) error { return m.m.Put(k, v) }

// Lookup returns k's entry; a missing one (never created, or evicted) wraps ebpf.ErrKeyNotExist.
func (m *Map[K, V]) Lookup(k K) (V, error) { return m.m.Get(k) }

// Delete removes k's entry; a missing entry is not an error.
func (m *Map[K, V]) Delete(k K) error { return m.m.Delete(k) }

// Iterate calls fn for each entry until fn returns false.
func (m *Map[K, V]) Iterate(fn func(K, V) bool) error { return m.m.Iterate(fn) }
