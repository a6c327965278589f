package lab

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
)

// The suite reads a node's pinned maps straight from its bpffs, by the layouts in bpf/lib/*.h
// (the contract), so a test checks what the datapath sees, not what the agent believes.

// MapPath is where a pinned map of this node lives (maps/<name> under its bpffs root).
func (n *Node) MapPath(name string) string { return filepath.Join(n.BPFFS, "maps", name) }

func (n *Node) iterate(name string, fn func(k, v []byte)) error {
	m, err := ebpf.LoadPinnedMap(n.MapPath(name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("opening %s of %s: %w", name, n.Name, err)
	}
	defer m.Close()
	k := make([]byte, m.KeySize())
	v := make([]byte, m.ValueSize())
	if m.Type() == ebpf.PerCPUHash || m.Type() == ebpf.PerCPUArray {
		return fmt.Errorf("%s is per-CPU; not supported here", name)
	}
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(k, v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterating %s of %s: %w", name, n.Name, err)
	}
	return nil
}

// Endpoint is an endpoints_map entry (struct endpoint).
type Endpoint struct {
	PodIP   netip.Addr
	Ifindex uint32
}

// Endpoints lists endpoints_map: the local pods the datapath knows.
func (n *Node) Endpoints() (map[netip.Addr]Endpoint, error) {
	out := map[netip.Addr]Endpoint{}
	err := n.iterate("endpoints_map", func(k, v []byte) {
		ip := netip.AddrFrom4([4]byte(k[:4]))
		out[ip] = Endpoint{PodIP: ip, Ifindex: binary.LittleEndian.Uint32(v[:4])}
	})
	return out, err
}

// Route is a routes_map entry (struct route_key -> struct route).
type Route struct {
	CIDR   netip.Prefix
	NodeIP netip.Addr
	Domain uint32
	Encap  uint8
	Flags  uint8
}

// Routes lists routes_map by pod CIDR.
func (n *Node) Routes() (map[netip.Prefix]Route, error) {
	out := map[netip.Prefix]Route{}
	err := n.iterate("routes_map", func(k, v []byte) {
		bits := int(binary.LittleEndian.Uint32(k[:4]))
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte(k[4:8])), bits)
		out[p] = Route{
			CIDR:   p,
			NodeIP: netip.AddrFrom4([4]byte(v[:4])),
			Domain: binary.LittleEndian.Uint32(v[4:8]),
			Encap:  v[8],
			Flags:  v[9],
		}
	})
	return out, err
}

// RemoteNode is a nodes_map entry (struct node).
type RemoteNode struct {
	IP         netip.Addr
	VTEPMAC    [6]byte
	NextHopMAC [6]byte // zero: unresolved (the datapath lets the kernel resolve the neighbour)
	Domain     uint32
}

// RemoteNodes lists nodes_map by tunnel endpoint address.
func (n *Node) RemoteNodes() (map[netip.Addr]RemoteNode, error) {
	out := map[netip.Addr]RemoteNode{}
	err := n.iterate("nodes_map", func(k, v []byte) {
		ip := netip.AddrFrom4([4]byte(k[:4]))
		rn := RemoteNode{IP: ip, Domain: binary.LittleEndian.Uint32(v[12:16])}
		copy(rn.VTEPMAC[:], v[:6])
		copy(rn.NextHopMAC[:], v[6:12])
		out[ip] = rn
	})
	return out, err
}

// Counters reads metrics_map (per-CPU struct metric by dir*64+reason) through pkg/maps/metricsmap:
// every non-zero counter of the node, summed over CPUs.
func (n *Node) Counters() (map[metricsmap.Key]metricsmap.Metric, error) {
	m, err := metricsmap.Open(n.BPFFS)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", n.Name, err)
	}
	defer m.Close()
	return m.Totals()
}

// NonMasquerade lists nonmasq_map (LPM struct nonmasq_key {__u32 prefixlen; __be32 addr}): the
// destinations this node's pods reach with their own address.
func (n *Node) NonMasquerade() ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := n.iterate("nonmasq_map", func(k, _ []byte) {
		bits := int(binary.LittleEndian.Uint32(k[:4]))
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte(k[4:8])), bits))
	})
	return out, err
}
