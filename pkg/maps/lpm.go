package maps

import (
	"fmt"
	"net/netip"
)

// LPMKey mirrors the key of the datapath's IPv4 longest-prefix-match tries (struct route_key,
// struct nonmasq_key): the prefix length first, in host order as the kernel's LPM trie wants it,
// then the address (__be32).
type LPMKey struct {
	Prefixlen uint32
	Addr      IPv4
}

// LPMKeyFrom converts an IPv4 prefix, masking host bits.
func LPMKeyFrom(p netip.Prefix) (LPMKey, error) {
	if !p.IsValid() {
		return LPMKey{}, fmt.Errorf("invalid prefix %s", p)
	}
	addr, err := IPv4From(p.Masked().Addr())
	if err != nil {
		return LPMKey{}, err
	}
	return LPMKey{Prefixlen: uint32(p.Bits()), Addr: addr}, nil
}

// Prefix converts back.
func (k LPMKey) Prefix() netip.Prefix { return netip.PrefixFrom(k.Addr.Addr(), int(k.Prefixlen)) }

func (k LPMKey) String() string { return k.Prefix().String() }
