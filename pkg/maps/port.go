package maps

import (
	"encoding/binary"
	"strconv"
)

// Port is a port (or ICMP echo identifier) as the datapath stores it (C __be16): its bytes in
// network order, converted only through PortFrom and Uint16.
type Port [2]byte

// PortFrom converts a port number.
func PortFrom(p uint16) Port { return Port{byte(p >> 8), byte(p)} }

// Uint16 converts back.
func (p Port) Uint16() uint16 { return binary.BigEndian.Uint16(p[:]) }

func (p Port) String() string { return strconv.Itoa(int(p.Uint16())) }
