// Package maps holds what the typed map packages share: where maps are pinned and how the datapath
// stores IPv4 addresses. Each pinned BPF map has one package under pkg/maps that mirrors its C header
// in bpf/lib (the contract) with a Go struct, explicit padding and a layout test against the BTF of
// the committed object:
//
//	endpoints  endpoints_map  bpf/lib/endpoints.h  pod IPv4 -> host veth ifindex and MACs
//	routes     routes_map     bpf/lib/routes.h     LPM pod CIDR -> owning node, domain, encapsulation
//	nodes      nodes_map      bpf/lib/nodes.h      tunnel endpoint IPv4 -> VTEP/next-hop MACs, domain
//	nodecfg    node_cfg_map   bpf/lib/config.h     the single struct node_cfg entry
//	metrics    metrics_map    bpf/lib/metrics.h    per-CPU {packets, bytes} by direction and reason
//	nonmasq    nonmasq_map    bpf/lib/nat.h        LPM destinations pod traffic reaches unmasqueraded
//	nat        nat_fwd_map    bpf/lib/nat.h        masqueraded flow -> node port (written by node_egress)
//	           nat_rev_map                         {remote, node port} -> pod IPv4 and port
//	events     events_map     bpf/lib/events.h     ring buffer of drop/trace events (Reader)
//	           monitor_cfg_map                     which events the programs emit (Subscribe)
//	           events_lost_map                     per-CPU count of events that did not fit
//	lb         lb_svc_map     bpf/lib/lb.h         service frontend {vip, port, proto, scope} -> backend set
//	           lb_backend_map                      {backend set id, slot} -> backend IPv4 and port
//	           lb_ct_map                           LRU connection tracking of service flows (programs)
//	           lb_affinity_map                     LRU sessionAffinity ClientIP choices (programs)
//
// frag_map (bpf/lib/frag.h: the ports of fragmented datagrams, for their later fragments) has no
// package: only the programs use it, and LRU eviction is all the cleaning it needs.
//
// The agent's datapath loader (pkg/datapath) creates and pins the maps under <root>/maps/<name>; the
// packages here only open those pins, so the CNI plugin, the agent's reconcilers and the CLI all see
// the one instance the programs use. Every Open returns a *Map that its caller owns and closes.
// The packages are thin: each converts its API's types (netip.Addr, netip.Prefix) to the mirrors
// and calls through internal/typed, the one implementation of open, put, get, delete and iterate.
//
// Byte order is explicit: a C __be32 is IPv4 here, the address's four bytes in network order, and
// converts to and from netip.Addr only through IPv4From and IPv4.Addr.
package maps

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// DefaultRoot is the bpffs directory the agent pins its maps, programs and links under unless
// configured otherwise (--bpffs-root).
const DefaultRoot = "/sys/fs/bpf/edgeplane"

// Dir is the directory under a bpffs root where maps are pinned by name.
const Dir = "maps"

// PinPath is where the map called name is pinned under root.
func PinPath(root, name string) string { return filepath.Join(root, Dir, name) }

// IPv4 is an IPv4 address as the datapath stores it (C __be32): its bytes in network order, so
// that the in-memory layout equals the packet's.
type IPv4 [4]byte

// ErrNotIPv4 is returned when an address or prefix given to a map is not IPv4.
var ErrNotIPv4 = errors.New("not an IPv4 address")

// IPv4From converts an IPv4 (or IPv4-mapped IPv6) address.
func IPv4From(a netip.Addr) (IPv4, error) {
	a = a.Unmap()
	if !a.Is4() {
		return IPv4{}, fmt.Errorf("%s: %w", a, ErrNotIPv4)
	}
	return IPv4(a.As4()), nil
}

// Addr converts back to a netip.Addr.
func (b IPv4) Addr() netip.Addr { return netip.AddrFrom4(b) }

func (b IPv4) String() string { return b.Addr().String() }

// IPv4Mask is a prefix length as the datapath stores a netmask (__be32, e.g. 255.255.255.0).
func IPv4Mask(bits int) IPv4 {
	var m uint32
	if bits > 0 {
		m = ^uint32(0) << (32 - bits)
	}
	return IPv4{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}
}

// MaskBits is the prefix length of a contiguous netmask, or -1 when it is not contiguous.
func (b IPv4) MaskBits() int {
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	bits := 0
	for m&(1<<31) != 0 {
		bits++
		m <<= 1
	}
	if m != 0 {
		return -1
	}
	return bits
}

// OpenPinned opens the map pinned as name under root; the caller owns the result.
func OpenPinned(root, name string) (*ebpf.Map, error) { return openPinned(root, name, nil) }

// OpenPinnedReadOnly is OpenPinned for readers such as edgeplanectl: writes through the handle fail.
func OpenPinnedReadOnly(root, name string) (*ebpf.Map, error) {
	return openPinned(root, name, &ebpf.LoadPinOptions{ReadOnly: true})
}

func openPinned(root, name string, opts *ebpf.LoadPinOptions) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(PinPath(root, name), opts)
	if err != nil {
		return nil, fmt.Errorf("opening pinned map %s (is the agent running with bpffs root %s?): %w", name, root, err)
	}
	return m, nil
}

// MAC formats a MAC address the usual way.
func MAC(b [6]byte) string { return net.HardwareAddr(b[:]).String() }
