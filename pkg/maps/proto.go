package maps

import "fmt"

// Proto is an IP protocol number as the maps' keys hold it (a __u8: struct lb_svc_key,
// lb_ct_key, nat_fwd_key, nat_rev_key). One type for every map package: pkg/maps/lb and
// pkg/maps/nat name it (and the protocols they translate) by aliases.
type Proto uint8

// The protocols the datapath translates: services TCP, UDP and SCTP; masquerade TCP, UDP and
// ICMP echo.
const (
	ProtoICMP Proto = 1
	ProtoTCP  Proto = 6
	ProtoUDP  Proto = 17
	ProtoSCTP Proto = 132
)

func (p Proto) String() string {
	switch p {
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}
