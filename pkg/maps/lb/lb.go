// Package lb reads and writes the service load-balancing maps of bpf/lib/lb.h:
//
//	lb_svc_map       {vip, port, proto, scope} -> Svc: one entry per service frontend
//	lb_backend_map   {svc id, slot} -> Backend: slots 0..count-1 of a frontend's backend set
//	lb_ct_map        LRU {saddr, daddr, sport, dport, proto, dir} -> CT (written by the programs)
//	lb_affinity_map  LRU {svc id, client} -> Affinity (sessionAffinity: ClientIP)
//
// The agent (pkg/controller's ServiceReconciler) decides, per node, which backends each frontend
// may use and writes the first two; a new backend set always goes under a fresh id before the
// frontend points at it, and the old id's slots are deleted after, so a lookup never sees a half
// written set. The programs create the connection tracking and affinity entries; the agent's
// garbage collector deletes those whose last packet is older than their timeout (CTTimeout).
//
// Addresses are maps.IPv4 (C __be32) and ports Port (C __be16), both in network byte order.
package lb

import (
	"fmt"
	"math"
	"time"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
)

// Map names in the objects and under <root>/maps.
const (
	SvcMapName      = "lb_svc_map"
	BackendMapName  = "lb_backend_map"
	CTMapName       = "lb_ct_map"
	AffinityMapName = "lb_affinity_map"
)

// Sizes (LB_*_MAX).
const (
	SvcMax      = 65536
	BackendMax  = 524288
	CTMax       = 262144
	AffinityMax = 65536
)

// MaxBackends is the most backends one frontend can have: struct lb_svc's count is a __u16.
const MaxBackends = math.MaxUint16

// Connection tracking timeouts in seconds (LB_CT_TIMEOUT_*). A test reads them from lb.h: the
// programs and the garbage collector must agree on when an entry is dead. The three TCP close
// timeouts are defaults, which node_cfg (pkg/maps/nodecfg) overrides: see CTCloseTimeouts.
const (
	CTTimeoutTCP          = 21600 // established TCP
	CTTimeoutTCPSyn       = 60    // TCP before the backend answered
	CTTimeoutTCPCloseWait = 3600  // after a FIN from one side only (half-closed): kube-proxy's CLOSE_WAIT
	CTTimeoutTCPTimeWait  = 120   // after FINs from both sides: Linux conntrack's TIME_WAIT
	CTTimeoutTCPClose     = 10    // after an RST: Linux conntrack's CLOSE
	CTTimeoutOther        = 60    // UDP, SCTP: since the last packet
)

// Proto is an IP protocol number (pkg/maps.Proto, shared with pkg/maps/nat).
type Proto = maps.Proto

// The protocols a service frontend translates.
const (
	ProtoTCP  = maps.ProtoTCP
	ProtoUDP  = maps.ProtoUDP
	ProtoSCTP = maps.ProtoSCTP
)

// Scope says where the traffic of a frontend comes from (enum lb_scope).
type Scope uint8

const (
	ScopeInternal Scope = 0 // from pods and from the node itself
	ScopeExternal Scope = 1 // arriving on the underlay NIC
)

func (s Scope) String() string {
	switch s {
	case ScopeInternal:
		return "internal"
	case ScopeExternal:
		return "external"
	}
	return fmt.Sprintf("scope(%d)", uint8(s))
}

// Frontend flags (enum lb_svc_flags).
const (
	FlagAffinity   uint16 = 1 << 0 // sessionAffinity: ClientIP, AffinityTimeout seconds
	FlagNodePort   uint16 = 1 << 1 // a NodePort frontend (vip 0: every node address)
	FlagClosed     uint16 = 1 << 2 // this node does not listen (NodePort isolation): drop
	FlagLocal      uint16 = 1 << 3 // externalTrafficPolicy Local: backends are local, source kept
	FlagExternalIP uint16 = 1 << 4 // an externalIP or LoadBalancer ingress IP frontend
)

// FlagNames names the frontend flags, lowest bit first.
var FlagNames = []string{"affinity", "nodeport", "closed", "local", "external-ip"}

// Connection tracking flags (enum lb_ct_flags). CTFlagClosing comes with each of FinFwd, FinRev
// and RST; alone, it is what programs before the per-direction close wrote (direction unknown).
const (
	CTFlagSeenReply uint16 = 1 << 0 // the backend answered (TCP: the established timeout applies)
	CTFlagClosing   uint16 = 1 << 1 // FIN or RST seen
	CTFlagHairpin   uint16 = 1 << 2 // the client is its own backend: source translated too
	CTFlagExternal  uint16 = 1 << 3 // from outside the cluster through the underlay NIC (lb_ct.h)
	CTFlagFinFwd    uint16 = 1 << 4 // the client sent a FIN
	CTFlagFinRev    uint16 = 1 << 5 // the backend sent a FIN
	CTFlagRST       uint16 = 1 << 6 // an RST from either side
)

// ctCloseFlags are the flags that put a TCP entry under a close timeout.
const ctCloseFlags = CTFlagClosing | CTFlagFinFwd | CTFlagFinRev | CTFlagRST

// Dir is the direction of a connection tracking entry (enum lb_ct_dir).
type Dir uint8

const (
	DirFwd Dir = 0 // client -> frontend, as the client sent it
	DirRev Dir = 1 // backend -> client, as the backend answers
)

func (d Dir) String() string {
	switch d {
	case DirFwd:
		return "fwd"
	case DirRev:
		return "rev"
	}
	return fmt.Sprintf("dir(%d)", uint8(d))
}

// Port is a port as the datapath stores it (C __be16; pkg/maps.Port).
type Port = maps.Port

// PortFrom converts a port number.
func PortFrom(p uint16) Port { return maps.PortFrom(p) }

// SvcKey mirrors struct lb_svc_key.
type SvcKey struct {
	VIP   maps.IPv4 // 0.0.0.0 for NodePort
	Port  Port
	Proto Proto
	Scope Scope
}

func (k SvcKey) String() string {
	return fmt.Sprintf("%s %s:%s %s", k.Proto, k.VIP, k.Port, k.Scope)
}

// Svc mirrors struct lb_svc.
type Svc struct {
	ID              uint32 // backend set: lb_backend_map {ID, 0..Count-1}
	Count           uint16 // 0: no backend (the packet is dropped)
	Flags           uint16
	AffinityTimeout uint32 // seconds, with FlagAffinity
	// Unreachable counts the backends the agent left out because this node cannot reach their
	// node's network domain; the programs do not read it.
	Unreachable uint16
	Pad         uint16
}

func (v Svc) String() string {
	s := fmt.Sprintf("id=%d count=%d flags=%s", v.ID, v.Count, FlagString(v.Flags))
	if v.Flags&FlagAffinity != 0 {
		s += fmt.Sprintf(" affinity-timeout=%ds", v.AffinityTimeout)
	}
	if v.Unreachable > 0 {
		s += fmt.Sprintf(" unreachable=%d", v.Unreachable)
	}
	return s
}

// FlagString names the frontend flags set in f, "-" when none.
func FlagString(f uint16) string {
	s := ""
	for i, name := range FlagNames {
		if f&(1<<i) != 0 {
			if s != "" {
				s += ","
			}
			s += name
		}
	}
	if rest := f &^ (1<<len(FlagNames) - 1); rest != 0 {
		if s != "" {
			s += ","
		}
		s += fmt.Sprintf("%#x", rest)
	}
	if s == "" {
		return "-"
	}
	return s
}

// BackendKey mirrors struct lb_backend_key.
type BackendKey struct {
	SvcID uint32
	Slot  uint32
}

func (k BackendKey) String() string { return fmt.Sprintf("%d/%d", k.SvcID, k.Slot) }

// Backend mirrors struct lb_backend.
type Backend struct {
	IP    maps.IPv4
	Port  Port
	Flags uint16
}

func (b Backend) String() string { return fmt.Sprintf("%s:%s", b.IP, b.Port) }

// CTKey mirrors struct lb_ct_key.
type CTKey struct {
	Saddr maps.IPv4
	Daddr maps.IPv4
	Sport Port
	Dport Port
	Proto Proto
	Dir   Dir
	Pad   uint16
}

func (k CTKey) String() string {
	return fmt.Sprintf("%s %s %s:%s -> %s:%s", k.Dir, k.Proto, k.Saddr, k.Sport, k.Daddr, k.Dport)
}

// CT mirrors struct lb_ct.
type CT struct {
	Addr     maps.IPv4 // FWD: the backend's address; REV: the frontend's
	Port     Port
	Flags    uint16
	SvcID    uint32
	Pad      uint32
	LastSeen uint64 // bpf_ktime_get_boot_ns() of the last packet
}

func (v CT) String() string {
	return fmt.Sprintf("%s:%s svc=%d flags=%#x last-seen=%d", v.Addr, v.Port, v.SvcID, v.Flags, v.LastSeen)
}

// CTCloseTimeouts are the TCP close timeouts node_cfg gives the programs (the agent's
// --ct-tcp-*-timeout flags); a zero field is lb.h's default, as in the programs.
type CTCloseTimeouts struct {
	CloseWait time.Duration // after a FIN from one side only
	TimeWait  time.Duration // after FINs from both sides, or an older program's CLOSING
	Close     time.Duration // after an RST
}

// DefaultCTCloseTimeouts are lb.h's.
func DefaultCTCloseTimeouts() CTCloseTimeouts {
	return CTCloseTimeouts{CloseWait: CTTimeoutTCPCloseWait * time.Second,
		TimeWait: CTTimeoutTCPTimeWait * time.Second, Close: CTTimeoutTCPClose * time.Second}
}

func (c CTCloseTimeouts) String() string {
	c = c.withDefaults()
	return fmt.Sprintf("close-wait=%s time-wait=%s close=%s", c.CloseWait, c.TimeWait, c.Close)
}

func (c CTCloseTimeouts) withDefaults() CTCloseTimeouts {
	d := DefaultCTCloseTimeouts()
	if c.CloseWait == 0 {
		c.CloseWait = d.CloseWait
	}
	if c.TimeWait == 0 {
		c.TimeWait = d.TimeWait
	}
	if c.Close == 0 {
		c.Close = d.Close
	}
	return c
}

// Timeout is how long after its last packet an entry of protocol proto with flags is dead, as
// bpf/lib/lb_ct.h's lb_ct_timeout says: an RST closes, FINs from both sides (or an older
// program's CLOSING alone) are the time-wait, one FIN is a half-close.
func (c CTCloseTimeouts) Timeout(proto Proto, flags uint16) time.Duration {
	if proto != ProtoTCP {
		return CTTimeoutOther * time.Second
	}
	c = c.withDefaults()
	fins := flags & (CTFlagFinFwd | CTFlagFinRev)
	switch {
	case flags&CTFlagRST != 0:
		return c.Close
	case flags&ctCloseFlags != 0 && (fins == CTFlagFinFwd|CTFlagFinRev || fins == 0):
		return c.TimeWait
	case fins != 0:
		return c.CloseWait
	case flags&CTFlagSeenReply != 0:
		return CTTimeoutTCP * time.Second
	}
	return CTTimeoutTCPSyn * time.Second
}

// Expired says whether v, an entry of protocol proto, is dead at now (CLOCK_BOOTTIME nanoseconds,
// the clock of bpf_ktime_get_boot_ns).
func (c CTCloseTimeouts) Expired(v CT, proto Proto, now uint64) bool {
	return expired(v.LastSeen, c.Timeout(proto, v.Flags), now)
}

// CTTimeout is Timeout with lb.h's default close timeouts.
func CTTimeout(proto Proto, flags uint16) time.Duration {
	return CTCloseTimeouts{}.Timeout(proto, flags)
}

// Expired says whether the entry is dead at now with lb.h's default close timeouts
// (CTCloseTimeouts.Expired with the node's).
func (v CT) Expired(proto Proto, now uint64) bool {
	return CTCloseTimeouts{}.Expired(v, proto, now)
}

// AffinityKey mirrors struct lb_affinity_key.
type AffinityKey struct {
	SvcID  uint32
	Client maps.IPv4
}

func (k AffinityKey) String() string { return fmt.Sprintf("%d %s", k.SvcID, k.Client) }

// Affinity mirrors struct lb_affinity.
type Affinity struct {
	IP       maps.IPv4 // the backend this client sticks to
	Port     Port
	Pad      uint16
	LastSeen uint64 // bpf_ktime_get_boot_ns()
}

func (v Affinity) String() string {
	return fmt.Sprintf("%s:%s last-seen=%d", v.IP, v.Port, v.LastSeen)
}

// Expired says whether the entry is older than timeout at now (CLOCK_BOOTTIME nanoseconds).
func (v Affinity) Expired(timeout time.Duration, now uint64) bool {
	return expired(v.LastSeen, timeout, now)
}

func expired(lastSeen uint64, timeout time.Duration, now uint64) bool {
	return now > lastSeen && now-lastSeen > uint64(timeout)
}

// Map is one of the four maps, opened; its owner closes it.
type Map[K comparable, V any] struct {
	m *typed.Map[K, V]
}

// The four maps.
type (
	SvcMap      = Map[SvcKey, Svc]
	BackendMap  = Map[BackendKey, Backend]
	CTMap       = Map[CTKey, CT]
	AffinityMap = Map[AffinityKey, Affinity]
)

// OpenSvc opens lb_svc_map pinned under root.
func OpenSvc(root string) (*SvcMap, error) { return wrap(typed.Open[SvcKey, Svc](root, SvcMapName)) }

// OpenBackend opens lb_backend_map pinned under root.
func OpenBackend(root string) (*BackendMap, error) {
	return wrap(typed.Open[BackendKey, Backend](root, BackendMapName))
}

// OpenCT opens lb_ct_map pinned under root.
func OpenCT(root string) (*CTMap, error) { return wrap(typed.Open[CTKey, CT](root, CTMapName)) }

// OpenAffinity opens lb_affinity_map pinned under root.
func OpenAffinity(root string) (*AffinityMap, error) {
	return wrap(typed.Open[AffinityKey, Affinity](root, AffinityMapName))
}

// OpenSvcReadOnly opens lb_svc_map for reading only, as edgeplanectl does.
func OpenSvcReadOnly(root string) (*SvcMap, error) {
	return wrap(typed.OpenReadOnly[SvcKey, Svc](root, SvcMapName))
}

// OpenBackendReadOnly opens lb_backend_map for reading only.
func OpenBackendReadOnly(root string) (*BackendMap, error) {
	return wrap(typed.OpenReadOnly[BackendKey, Backend](root, BackendMapName))
}

// OpenCTReadOnly opens lb_ct_map for reading only.
func OpenCTReadOnly(root string) (*CTMap, error) {
	return wrap(typed.OpenReadOnly[CTKey, CT](root, CTMapName))
}

// OpenAffinityReadOnly opens lb_affinity_map for reading only.
func OpenAffinityReadOnly(root string) (*AffinityMap, error) {
	return wrap(typed.OpenReadOnly[AffinityKey, Affinity](root, AffinityMapName))
}

func wrap[K comparable, V any](m *typed.Map[K, V], err error) (*Map[K, V], error) {
	if err != nil {
		return nil, err
	}
	return &Map[K, V]{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map[K, V]) Close() error { return m.m.Close() }

// Upsert creates or replaces k's entry.
func (m *Map[K, V]) Upsert(k K, v V) error { return m.m.Put(k, v) }

// Lookup returns k's entry; a missing one wraps ebpf.ErrKeyNotExist.
func (m *Map[K, V]) Lookup(k K) (V, error) { return m.m.Get(k) }

// Delete removes k's entry; a missing entry is not an error.
func (m *Map[K, V]) Delete(k K) error { return m.m.Delete(k) }

// UpsertBatch creates or replaces keys[i] -> values[i], thousands per system call where the
// kernel has batch operations (a backend set, or a start-up pass's 100,000 slots); on error some
// may be written.
func (m *Map[K, V]) UpsertBatch(keys []K, values []V) error { return m.m.PutBatch(keys, values) }

// Iterate calls fn for each entry until fn returns false.
func (m *Map[K, V]) Iterate(fn func(K, V) bool) error { return m.m.Iterate(fn) }

// IterateBatch is Iterate reading thousands of entries per system call where the kernel has
// batch operations: what reads a whole map of 100,000 entries at start-up should use it.
func (m *Map[K, V]) IterateBatch(fn func(K, V) bool) error { return m.m.IterateBatch(fn) }

// List returns every entry (read in batches).
func (m *Map[K, V]) List() (map[K]V, error) {
	out := map[K]V{}
	err := m.m.IterateBatch(func(k K, v V) bool {
		out[k] = v
		return true
	})
	return out, err
}

// Walk visits at most max entries after the key *after (from the first when nil); see
// typed.Map.Walk. It spreads a garbage collector's sweep over bounded passes.
func (m *Map[K, V]) Walk(after *K, max int, fn func(K, V)) (last K, done bool, err error) {
	return m.m.Walk(after, max, fn)
}
