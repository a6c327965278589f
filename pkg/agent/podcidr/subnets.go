package podcidr

import (
	"encoding/binary"
	"iter"
	"net/netip"
)

// subnets yields the /bits subnets of an IPv4 prefix in address order.
func subnets(p netip.Prefix, bits int) iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		if bits < p.Bits() || bits > 32 {
			return
		}
		a := p.Masked().Addr().As4()
		base := binary.BigEndian.Uint32(a[:])
		count := uint64(1) << (bits - p.Bits())
		step := uint64(1) << (32 - bits)
		for i := uint64(0); i < count; i++ {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], uint32(uint64(base)+i*step))
			if !yield(netip.PrefixFrom(netip.AddrFrom4(b), bits)) {
				return
			}
		}
	}
}
