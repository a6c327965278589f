// Package dropreason is the Go side of enum drop_reason in bpf/lib/drop_reasons.h, the one table of
// reasons shared by C and Go. It imports nothing, so what only names reasons (edgeplanectl's
// filters and route verdicts, the metrics' labels, the lab's counters) does not link the BPF
// objects; pkg/datapath's TestDropReasonsMatchBTF checks the table against each compiled object.
package dropreason

import "fmt"

// Reason mirrors enum drop_reason: the programs count packets in metrics_map under dir*64+reason,
// with reason 0 for forwarded packets and ICMPSent for ICMP errors sent back in place of a dropped
// packet (which is counted under its own reason as well). Numbers are only ever appended;
// TestDropReasonsMatchBTF (pkg/datapath) checks this list against the enum in each compiled object.
type Reason uint8

const (
	Forwarded           Reason = iota // not a drop: the forward counter
	Invalid                           // truncated or malformed packet
	UnsupportedL3                     // not IPv4 (and not ARP)
	SpoofedSource                     // a pod sent with a source address that is not its own
	UnknownEndpoint                   // destination in this node's pod CIDR but no such pod
	NoRoute                           // destination in the cluster CIDR but no node owns it
	UnknownTunnelSource               // VXLAN from an address that is not a known node
	VNIMismatch                       // VXLAN with a VNI other than ours, or without the I flag
	DomainUnreachable                 // destination in a network domain this one cannot reach
	PktTooBig                         // larger than the pod MTU (or GSO segments that are) with DF set
	NotReady                          // the agent has not configured the datapath yet
	EncapFailed                       // a kernel helper failed while encapsulating or decapsulating
	NATNoPort                         // masquerade found no free port
	UnknownNode                       // a route names a node that has no entry in nodes_map
	NodePortClosed                    // NodePort not listening on this node (pool isolation)
	NATFailed                         // a kernel helper failed while masquerading or reversing it
	ICMPSent                          // not a drop: an ICMP error sent back to the sender of a dropped packet
	NoServiceBackend                  // a service frontend without a backend this node may use
	VXLANNotUnicast                   // VXLAN to a multicast or broadcast outer destination
	BadChecksum                       // VXLAN whose outer IPv4 header checksum is wrong
	TTLExceeded                       // a routed packet whose TTL would reach 0 at this hop

	// Max is one past the last reason (DROP_REASON_MAX).
	Max
)

// The C names without the DROP_ prefix: what the CLI and metrics show.
var names = [Max]string{
	Forwarded:           "FORWARDED",
	Invalid:             "INVALID",
	UnsupportedL3:       "UNSUPPORTED_L3",
	SpoofedSource:       "SPOOFED_SOURCE",
	UnknownEndpoint:     "UNKNOWN_ENDPOINT",
	NoRoute:             "NO_ROUTE",
	UnknownTunnelSource: "UNKNOWN_TUNNEL_SOURCE",
	VNIMismatch:         "VNI_MISMATCH",
	DomainUnreachable:   "DOMAIN_UNREACHABLE",
	PktTooBig:           "PKT_TOO_BIG",
	NotReady:            "NOT_READY",
	EncapFailed:         "ENCAP_FAILED",
	NATNoPort:           "NAT_NO_PORT",
	UnknownNode:         "UNKNOWN_NODE",
	NodePortClosed:      "NODEPORT_CLOSED",
	NATFailed:           "NAT_FAILED",
	ICMPSent:            "ICMP_SENT",
	NoServiceBackend:    "NO_SERVICE_BACKEND",
	VXLANNotUnicast:     "VXLAN_NOT_UNICAST",
	BadChecksum:         "BAD_CHECKSUM",
	TTLExceeded:         "TTL_EXCEEDED",
}

// String returns the C name without its DROP_ prefix ("DOMAIN_UNREACHABLE"), or UNKNOWN_<n> for
// a number newer than this binary (counters written by a newer datapath).
func (r Reason) String() string {
	if r < Max {
		return names[r]
	}
	return fmt.Sprintf("UNKNOWN_%d", uint8(r))
}
