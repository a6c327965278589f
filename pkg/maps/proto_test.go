package maps

import "testing"

func TestProtoString(t *testing.T) {
	for p, want := range map[Proto]string{ProtoICMP: "icmp", ProtoTCP: "tcp", ProtoUDP: "udp", ProtoSCTP: "sctp", 47: "proto(47)"} {
		if got := p.String(); got != want {
			t.Errorf("Proto(%d) = %q, want %q", uint8(p), got, want)
		}
	}
}
