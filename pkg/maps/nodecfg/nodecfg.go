// Package nodecfg reads and writes node_cfg_map (bpf/lib/config.h): a one-entry array holding this
// node's datapath configuration. Programs fail closed (DROP_NOT_READY) until the agent has Put an
// entry with FlagReady set, so the agent fills in everything first and sets the flag in the same
// write.
package nodecfg

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

// MapName is the map's name in the objects and under <root>/maps.
const MapName = "node_cfg_map"

// Flags (enum node_cfg_flags).
const (
	FlagReady      uint16 = 1 << 0 // the agent has written this entry
	FlagMasquerade uint16 = 1 << 1 // masquerade pod traffic leaving the cluster to NodeIP
	FlagGateway    uint16 = 1 << 2 // this node is its domain's cloud gateway
)

// Encapsulation modes (enum encap_mode).
const (
	EncapNative uint8 = 0 // encapsulate in BPF and redirect to the underlay NIC
	EncapDevice uint8 = 1 // set a tunnel key and redirect to the collect_md VXLAN device
)

// NodeCfg mirrors struct node_cfg.
type NodeCfg struct {
	NodeIP          maps.IPv4 // underlay IPv4: outer source, masquerade address
	PodCIDR         maps.IPv4 // this node's pod CIDR (network address)
	PodMask         maps.IPv4 // its netmask
	ClusterCIDR     maps.IPv4
	ClusterMask     maps.IPv4
	UnderlayIfindex uint32 // the NIC that carries VXLAN
	VxlanIfindex    uint32 // the collect_md VXLAN device
	VNI             uint32
	MTU             uint16 // pod MTU
	Flags           uint16 // FlagReady, FlagMasquerade
	VtepMAC         [6]byte
	UnderlayMAC     [6]byte
	EncapMode       uint8 // EncapNative or EncapDevice
	Pad             [3]byte
	Domain          uint32    // this node's network domain (pkg/maps/domainsmap)
	GatewayIP       maps.IPv4 // its domain's cloud gateway when that is another node, else zero
	// Service connection tracking's TCP close timeouts in seconds, 0 for lb.h's default
	// (SetCTCloseTimeouts).
	CTTCPCloseWait uint32 // after a FIN from one side only
	CTTCPTimeWait  uint32 // after FINs from both sides
	CTTCPClose     uint32 // after an RST
}

// SetCTCloseTimeouts stores t in whole seconds, rounded up (a zero field keeps lb.h's default).
func (c *NodeCfg) SetCTCloseTimeouts(t lb.CTCloseTimeouts) error {
	set := *c
	for _, f := range []struct {
		name string
		d    time.Duration
		dst  *uint32
	}{{"close-wait", t.CloseWait, &set.CTTCPCloseWait}, {"time-wait", t.TimeWait, &set.CTTCPTimeWait}, {"close", t.Close, &set.CTTCPClose}} {
		s := (f.d + time.Second - 1) / time.Second
		if f.d < 0 || s > math.MaxUint32 {
			return fmt.Errorf("conntrack TCP %s timeout %s: out of range 0-%ds", f.name, f.d, uint32(math.MaxUint32))
		}
		*f.dst = uint32(s)
	}
	*c = set
	return nil
}

// CTCloseTimeouts are the TCP close timeouts the programs use (zero fields: lb.h's defaults).
func (c NodeCfg) CTCloseTimeouts() lb.CTCloseTimeouts {
	return lb.CTCloseTimeouts{CloseWait: time.Duration(c.CTTCPCloseWait) * time.Second,
		TimeWait: time.Duration(c.CTTCPTimeWait) * time.Second, Close: time.Duration(c.CTTCPClose) * time.Second}
}

// SetPodCIDR stores p's network address and mask.
func (c *NodeCfg) SetPodCIDR(p netip.Prefix) error {
	return setPrefix(p, &c.PodCIDR, &c.PodMask)
}

// PodPrefix is the pod CIDR as a prefix (invalid when the mask is not contiguous).
func (c *NodeCfg) PodPrefix() netip.Prefix { return toPrefix(c.PodCIDR, c.PodMask) }

// SetClusterCIDR stores p's network address and mask.
func (c *NodeCfg) SetClusterCIDR(p netip.Prefix) error {
	return setPrefix(p, &c.ClusterCIDR, &c.ClusterMask)
}

// ClusterPrefix is the cluster CIDR as a prefix.
func (c *NodeCfg) ClusterPrefix() netip.Prefix { return toPrefix(c.ClusterCIDR, c.ClusterMask) }

func setPrefix(p netip.Prefix, addr, mask *maps.IPv4) error {
	a, err := maps.IPv4From(p.Masked().Addr())
	if err != nil {
		return err
	}
	*addr, *mask = a, maps.IPv4Mask(p.Bits())
	return nil
}

func toPrefix(addr, mask maps.IPv4) netip.Prefix {
	bits := mask.MaskBits()
	if bits < 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(addr.Addr(), bits)
}

func (c NodeCfg) String() string {
	encap := "native"
	if c.EncapMode == EncapDevice {
		encap = "device"
	}
	return fmt.Sprintf("node-ip=%s pod-cidr=%s cluster-cidr=%s underlay-ifindex=%d vxlan-ifindex=%d vni=%d mtu=%d flags=%#x vtep-mac=%s underlay-mac=%s encap=%s ct-tcp %s",
		c.NodeIP, c.PodPrefix(), c.ClusterPrefix(), c.UnderlayIfindex, c.VxlanIfindex, c.VNI, c.MTU, c.Flags,
		maps.MAC(c.VtepMAC), maps.MAC(c.UnderlayMAC), encap, c.CTCloseTimeouts())
}

// Map is an open node_cfg_map; its owner closes it.
type Map struct {
	m *typed.Map[uint32, NodeCfg]
}

// Open opens the map pinned under root.
func Open(root string) (*Map, error) {
	m, err := typed.Open[uint32, NodeCfg](root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map) Close() error { return m.m.Close() }

// Get returns the entry (all zero, without FlagReady, before the agent's first Put).
func (m *Map) Get() (NodeCfg, error) { return m.m.Get(0) }

// Put replaces the entry in one write.
func (m *Map) Put(c NodeCfg) error { return m.m.Put(0, c) }
