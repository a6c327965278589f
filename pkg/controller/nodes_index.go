package controller

import (
	"net/netip"
	"slices"
)

// peerIndex answers the NodeReconciler's questions about the peer set as a whole (does another
// node's pod CIDR overlap this one, is this address another node's tunnel endpoint, does any node
// still key this address in nodes_map, which nodes carry the gateway label) without walking every
// peer: a Node's event costs what that Node costs, and the start-up pass over n Nodes is linear in
// n rather than quadratic. setPeer and deletePeer are the only writers of NodeReconciler.peers and
// keep the index equal to it.
type peerIndex struct {
	// byCIDR holds the names of the peers whose pod CIDR is exactly the key (routes_map's key).
	byCIDR map[netip.Prefix][]string
	// byMasked holds, per prefix length, the names of the peers by masked pod CIDR: the overlap
	// check looks up the few lengths in use.
	byMasked map[int]map[netip.Prefix][]string
	// byEndpoint holds the names of the non-local peers whose tunnel endpoint is the key.
	byEndpoint map[netip.Addr][]string
	// keyRefs counts the peers keying an address in nodes_map: as tunnel endpoint (non-local
	// peers) or as alias.
	keyRefs map[netip.Addr]int
	// gateways holds the names of the peers that carry the cloud gateway label.
	gateways map[string]struct{}
	// domains counts the peers per domain name.
	domains map[string]int
}

func newPeerIndex() peerIndex {
	return peerIndex{
		byCIDR: map[netip.Prefix][]string{}, byMasked: map[int]map[netip.Prefix][]string{},
		byEndpoint: map[netip.Addr][]string{}, keyRefs: map[netip.Addr]int{},
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

func (x *peerIndex) add(name string, p peer) {
	x.byCIDR[p.podCIDR] = append(x.byCIDR[p.podCIDR], name)
	masked := p.podCIDR.Masked()
	byLen := x.byMasked[masked.Bits()]
	if byLen == nil {
		byLen = map[netip.Prefix][]string{}
		x.byMasked[masked.Bits()] = byLen
	}
	byLen[masked] = append(byLen[masked], name)
	if !p.route.Local {
		x.byEndpoint[p.route.NodeIP] = append(x.byEndpoint[p.route.NodeIP], name)
		x.keyRefs[p.route.NodeIP]++
	}
	if p.alias.IsValid() {
		x.keyRefs[p.alias]++
	}
	if p.gateway {
		x.gateways[name] = struct{}{}
	}
	x.domains[p.domain]++
}

func (x *peerIndex) remove(name string, p peer) {
	dropName(x.byCIDR, p.podCIDR, name)
	masked := p.podCIDR.Masked()
	if byLen := x.byMasked[masked.Bits()]; byLen != nil {
		dropName(byLen, masked, name)
		if len(byLen) == 0 {
			delete(x.byMasked, masked.Bits())
		}
	}
	if !p.route.Local {
		dropName(x.byEndpoint, p.route.NodeIP, name)
		dropRef(x.keyRefs, p.route.NodeIP)
	}
	if p.alias.IsValid() {
		dropRef(x.keyRefs, p.alias)
	}
	delete(x.gateways, name)
	dropRef(x.domains, p.domain)
}

func dropName[K comparable](m map[K][]string, k K, name string) {
	names := m[k]
	if i := slices.Index(names, name); i >= 0 {
		names = slices.Delete(names, i, i+1)
	}
	if len(names) == 0 {
		delete(m, k)
		return
	}
	m[k] = names
}

func dropRef[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
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
			if other, ok := otherThan(byLen[key], name); ok {
				return other, key, true
			}
			continue
		}
		if shift := bits - cidr.Bits(); cidr.Addr().Is4() && shift < 16 && 1<<shift < len(byLen) {
			for sub := range subprefixes(cidr, bits) {
				if other, ok := otherThan(byLen[sub], name); ok {
					return other, sub, true
				}
			}
			continue
		}
		for p, names := range byLen {
			if cidr.Contains(p.Addr()) {
				if other, ok := otherThan(names, name); ok {
					return other, p, true
				}
			}
		}
	}
	return "", netip.Prefix{}, false
}

func otherThan(names []string, name string) (string, bool) {
	for _, n := range names {
		if n != name {
			return n, true
		}
	}
	return "", false
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
