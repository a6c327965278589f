package controller

import (
	"net/netip"
	"slices"

	"github.com/edgeplane/edgeplane/pkg/internal/ipmap"
)

// peerIndex answers the NodeReconciler's questions about the peer set as a whole (does another
// node's pod CIDR overlap this one, is this address another node's tunnel endpoint, does any node
// still key this address in nodes_map, which nodes carry the gateway label) without walking every
// peer: a Node's event costs what that Node costs, and the start-up pass over n Nodes is linear in
// n rather than quadratic. setPeer and deletePeer are the only writers of NodeReconciler.peers and
// keep the index equal to it.
type peerIndex struct {
	// byMasked holds, per prefix length, the peers by masked pod CIDR: the overlap check looks up
	// the few lengths in use, and a route is still used while a peer has its exact pod CIDR.
	byMasked map[int]*ipmap.Map[names] // the pod CIDRs' masked addresses by prefix length
	// byEndpoint holds, per address keyed in nodes_map, the non-local peers whose tunnel
	// endpoint it is and how many peers key it (as endpoint or as alias).
	byEndpoint ipmap.Map[endpointUse]
	// gateways holds the names of the peers that carry the cloud gateway label.
	gateways map[string]struct{}
	// domains counts the peers per domain name.
	domains map[string]int
}

// names is a small set of node names: almost always one, held without a slice, in 24 bytes (40
// with a slice header beside the name: two maps of 5,000 entries hold it).
type names struct {
	first string
	more  *[]string // the others, nil when none; replaced, never changed in place
}

type endpointUse struct {
	primaries names // peers whose tunnel endpoint it is
	refs      int   // peers keying it: as tunnel endpoint (non-local peers) or as alias
}

func (n names) empty() bool { return n.first == "" && n.more == nil }

// others is the names beside first.
func (n names) others() []string {
	if n.more == nil {
		return nil
	}
	return *n.more
}

func (n names) with(name string) names {
	if n.first == "" {
		n.first = name
		return n
	}
	more := append(slices.Clip(n.others()), name)
	n.more = &more
	return n
}

func (n names) without(name string) names {
	others := n.others()
	if n.first == name {
		if len(others) == 0 {
			return names{}
		}
		return names{first: others[0]}.withAll(others[1:])
	}
	if i := slices.Index(others, name); i >= 0 {
		return names{first: n.first}.withAll(slices.Delete(slices.Clone(others), i, i+1))
	}
	return n
}

// withAll is n with others as its names beside first (none: nil).
func (n names) withAll(others []string) names {
	if len(others) == 0 {
		n.more = nil
		return n
	}
	more := slices.Clone(others)
	n.more = &more
	return n
}

// otherThan returns a name of the set that is not name.
func (n names) otherThan(name string) (string, bool) {
	if n.first != "" && n.first != name {
		return n.first, true
	}
	for _, m := range n.others() {
		if m != name {
			return m, true
		}
	}
	return "", false
}

func (n names) all(yield func(string) bool) {
	if n.first != "" && !yield(n.first) {
		return
	}
	for _, m := range n.others() {
		if !yield(m) {
			return
		}
	}
}

func newPeerIndex() peerIndex {
	return peerIndex{
		byMasked: map[int]*ipmap.Map[names]{},
		gateways: map[string]struct{}{}, domains: map[string]int{},
	}
}

// setPeer records p as the state of the node named name.
func (r *NodeReconciler) setPeer(name string, p peer) {
	if old, had := r.peers[name]; had {
		r.index.remove(name, old)
	}
	r.peers[name] = p
	r.index.add(name, p)
}

// deletePeer forgets the node named name.
func (r *NodeReconciler) deletePeer(name string) {
	if old, had := r.peers[name]; had {
		r.index.remove(name, old)
		delete(r.peers, name)
	}
}

// routeUsed reports whether a peer has exactly cidr as its pod CIDR (routes_map's key).
func (r *NodeReconciler) routeUsed(cidr netip.Prefix) bool {
	masked := cidr.Masked()
	byLen := r.index.byMasked[masked.Bits()]
	if byLen == nil {
		return false
	}
	set, _ := byLen.Get(masked.Addr())
	for name := range set.all {
		if r.peers[name].podCIDR == cidr {
			return true
		}
	}
	return false
}

func (x *peerIndex) add(name string, p peer) {
	masked := p.podCIDR.Masked()
	byLen := x.byMasked[masked.Bits()]
	if byLen == nil {
		byLen = &ipmap.Map[names]{}
		x.byMasked[masked.Bits()] = byLen
	}
	set, _ := byLen.Get(masked.Addr())
	byLen.Set(masked.Addr(), set.with(name))
	if !p.route.Local {
		use, _ := x.byEndpoint.Get(p.route.NodeIP)
		use.primaries = use.primaries.with(name)
		use.refs++
		x.byEndpoint.Set(p.route.NodeIP, use)
	}
	if p.alias.IsValid() {
		use, _ := x.byEndpoint.Get(p.alias)
		use.refs++
		x.byEndpoint.Set(p.alias, use)
	}
	if p.gateway {
		x.gateways[name] = struct{}{}
	}
	x.domains[p.domain]++
}

func (x *peerIndex) remove(name string, p peer) {
	masked := p.podCIDR.Masked()
	if byLen := x.byMasked[masked.Bits()]; byLen != nil {
		set, _ := byLen.Get(masked.Addr())
		if n := set.without(name); n.empty() {
			byLen.Delete(masked.Addr())
		} else {
			byLen.Set(masked.Addr(), n)
		}
		if byLen.Len() == 0 {
			delete(x.byMasked, masked.Bits())
		}
	}
	if !p.route.Local {
		x.unref(p.route.NodeIP, name)
	}
	if p.alias.IsValid() {
		x.unref(p.alias, "")
	}
	delete(x.gateways, name)
	if x.domains[p.domain] <= 1 {
		delete(x.domains, p.domain)
	} else {
		x.domains[p.domain]--
	}
}

// unref drops one reference to addr, and name from its primaries unless name is "".
func (x *peerIndex) unref(addr netip.Addr, name string) {
	use, _ := x.byEndpoint.Get(addr)
	if name != "" {
		use.primaries = use.primaries.without(name)
	}
	use.refs--
	if use.refs <= 0 && use.primaries.empty() {
		x.byEndpoint.Delete(addr)
		return
	}
	x.byEndpoint.Set(addr, use)
}

// overlapping returns a node other than name whose pod CIDR overlaps cidr, and that pod CIDR. Two
// prefixes overlap when one contains the other: for each prefix length in use, the peers of that
// length are looked up by cidr truncated to it (shorter ones, which would contain it) or, for longer
// ones (which it would contain), by whichever is smaller: the peers of that length or the
// subprefixes of cidr of that length.
func (x *peerIndex) overlapping(name string, cidr netip.Prefix) (string, netip.Prefix, bool) {
	cidr = cidr.Masked()
	for bits, byLen := range x.byMasked {
		if bits <= cidr.Bits() {
			key := netip.PrefixFrom(cidr.Addr(), bits).Masked()
			set, _ := byLen.Get(key.Addr())
			if other, ok := set.otherThan(name); ok {
				return other, key, true
			}
			continue
		}
		if shift := bits - cidr.Bits(); cidr.Addr().Is4() && shift < 16 && 1<<shift < byLen.Len() {
			for sub := range subprefixes(cidr, bits) {
				set, _ := byLen.Get(sub.Addr())
				if other, ok := set.otherThan(name); ok {
					return other, sub, true
				}
			}
			continue
		}
		for a, set := range byLen.All() {
			if cidr.Contains(a) {
				if other, ok := set.otherThan(name); ok {
					return other, netip.PrefixFrom(a, bits), true
				}
			}
		}
	}
	return "", netip.Prefix{}, false
}

// subprefixes yields the prefixes of length bits inside the IPv4 prefix p (bits > p.Bits()).
func subprefixes(p netip.Prefix, bits int) func(yield func(netip.Prefix) bool) {
	return func(yield func(netip.Prefix) bool) {
		a := p.Addr().As4()
		base := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		for i := range uint32(1) << (bits - p.Bits()) {
			v := base | i<<(32-bits)
			if !yield(netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits)) {
				return
			}
		}
	}
}
