package datapath

import "fmt"

// DropReason mirrors enum drop_reason in bpf/lib/drop_reasons.h, the one table of reasons shared
// by C and Go: the programs count packets in metrics_map under dir*64+reason, with reason 0 for
// forwarded packets and ReasonICMPSent for ICMP errors sent back in place of a dropped packet
// (which is counted under its own reason as well). Numbers are only ever appended;
// TestDropReasonsMatchBTF checks this list against the enum in each compiled object.
type DropReason uint8

const (
	ReasonForwarded         DropReason = iota // not a drop: the forward counter
	DropInvalid                               // truncated or malformed packet
	DropUnsupportedL3                         // not IPv4 (and not ARP)
	DropSpoofedSource                         // a pod sent with a source address that is not its own
	DropUnknownEndpoint                       // destination in this node's pod CIDR but no such pod
	DropNoRoute                               // destination in the cluster CIDR but no node owns it
	DropUnknownTunnelSource                   // VXLAN from an address that is not a known node
	DropVNIMismatch                           // VXLAN with a VNI other than ours, or without the I flag
	DropDomainUnreachable                     // destination in a network domain this one cannot reach
	DropPktTooBig                             // larger than the pod MTU (or GSO segments that are) with DF set
	DropNotReady                              // the agent has not configured the datapath yet
	DropEncapFailed                           // a kernel helper failed while encapsulating or decapsulating
	DropNATNoPort                             // masquerade found no free port
	DropUnknownNode                           // a route names a node that has no entry in nodes_map
	DropNodePortClosed                        // NodePort not listening on this node (pool isolation)
	DropNATFailed                             // a kernel helper failed while masquerading or reversing it
	ReasonICMPSent                            // not a drop: an ICMP error sent back to the sender of a dropped packet
	DropNoServiceBackend                      // a service frontend without a backend this node may use
	DropVXLANNotUnicast                       // VXLAN to a multicast or broadcast outer destination
	DropBadChecksum                           // VXLAN whose outer IPv4 header checksum is wrong

	// DropReasonMax is one past the last reason (DROP_REASON_MAX).
	DropReasonMax
)

// The C names without the DROP_ prefix: what the CLI and metrics show.
var dropReasonNames = [DropReasonMax]string{
	ReasonForwarded:         "FORWARDED",
	DropInvalid:             "INVALID",
	DropUnsupportedL3:       "UNSUPPORTED_L3",
	DropSpoofedSource:       "SPOOFED_SOURCE",
	DropUnknownEndpoint:     "UNKNOWN_ENDPOINT",
	DropNoRoute:             "NO_ROUTE",
	DropUnknownTunnelSource: "UNKNOWN_TUNNEL_SOURCE",
	DropVNIMismatch:         "VNI_MISMATCH",
	DropDomainUnreachable:   "DOMAIN_UNREACHABLE",
	DropPktTooBig:           "PKT_TOO_BIG",
	DropNotReady:            "NOT_READY",
	DropEncapFailed:         "ENCAP_FAILED",
	DropNATNoPort:           "NAT_NO_PORT",
	DropUnknownNode:         "UNKNOWN_NODE",
	DropNodePortClosed:      "NODEPORT_CLOSED",
	DropNATFailed:           "NAT_FAILED",
	ReasonICMPSent:          "ICMP_SENT",
	DropNoServiceBackend:    "NO_SERVICE_BACKEND",
	DropVXLANNotUnicast:     "VXLAN_NOT_UNICAST",
	DropBadChecksum:         "BAD_CHECKSUM",
}

// String returns the C name without its DROP_ prefix ("DOMAIN_UNREACHABLE"), or UNKNOWN_<n> for
// a number newer than this binary (counters written by a newer datapath).
func (r DropReason) String() string {
	if r < DropReasonMax {
		return dropReasonNames[r]
	}
	return fmt.Sprintf("UNKNOWN_%d", uint8(r))
}
