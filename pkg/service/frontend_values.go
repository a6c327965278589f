package service

import (
	"fmt"
	"math"
)

// The values a frontend is described with: the model's own, so that it never learns the BPF
// layout. Each has the number the datapath uses for it (enum lb_scope, enum lb_svc_flags,
// IPPROTO_* in bpf/lib/lb.h); pkg/controller/maptables converts them into the lb map package's
// and tests every one against them (the map package's own test checks those against lb.h).

// Proto is the IP protocol of a Service port.
type Proto uint8

const (
	ProtoTCP  Proto = 6
	ProtoUDP  Proto = 17
	ProtoSCTP Proto = 132
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Protos are the protocols a Service port may have.
var Protos = []Proto{ProtoTCP, ProtoUDP, ProtoSCTP}

// Scope says where the traffic of a frontend comes from.
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

// Flags say how a frontend is used.
type Flags uint16

const (
	FlagAffinity   Flags = 1 << 0 // sessionAffinity: ClientIP, AffinityTimeout seconds
	FlagNodePort   Flags = 1 << 1 // a NodePort frontend (vip 0: every node address)
	FlagClosed     Flags = 1 << 2 // this node does not listen (NodePort isolation): drop
	FlagLocal      Flags = 1 << 3 // externalTrafficPolicy Local: backends are local, source kept
	FlagExternalIP Flags = 1 << 4 // an externalIP or LoadBalancer ingress IP frontend
)

// FlagNames names the flags, lowest bit first.
var FlagNames = []string{"affinity", "nodeport", "closed", "local", "external-ip"}

// String names the flags set, "-" when none; bits without a name in hex.
func (f Flags) String() string {
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
		s += fmt.Sprintf("%#x", uint16(rest))
	}
	if s == "" {
		return "-"
	}
	return s
}

// MaxBackends is the most backends one frontend can have (the datapath counts them in 16 bits).
const MaxBackends = math.MaxUint16
