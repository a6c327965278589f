/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The one table of drop reasons, shared with Go (pkg/datapath/dropreason; a test compares them).
 * Numbers are only ever appended. Helpers return -reason; the entry program's exit records it. */
#ifndef EDGEPLANE_DROP_REASONS_H
#define EDGEPLANE_DROP_REASONS_H

enum drop_reason {
	REASON_FORWARDED = 0,           /* not a drop: the forward counter */
	DROP_INVALID = 1,               /* truncated or malformed packet */
	DROP_UNSUPPORTED_L3 = 2,        /* not IPv4 (and not ARP) */
	DROP_SPOOFED_SOURCE = 3,        /* a pod sent with a source address that is not its own */
	DROP_UNKNOWN_ENDPOINT = 4,      /* destination in this node's pod CIDR but no such pod */
	DROP_NO_ROUTE = 5,              /* destination in the cluster CIDR but no node owns it */
	DROP_UNKNOWN_TUNNEL_SOURCE = 6, /* VXLAN from an address that is not a known node */
	DROP_VNI_MISMATCH = 7,          /* VXLAN with a VNI other than ours, or without the I flag */
	DROP_DOMAIN_UNREACHABLE = 8,    /* destination in a network domain this one cannot reach */
	DROP_PKT_TOO_BIG = 9,           /* larger than the pod MTU (or GSO segments that are) with DF set */
	DROP_NOT_READY = 10,            /* the agent has not configured the datapath yet */
	DROP_ENCAP_FAILED = 11,         /* a kernel helper failed while encapsulating or decapsulating */
	DROP_NAT_NO_PORT = 12,          /* masquerade found no free port */
	DROP_UNKNOWN_NODE = 13,         /* a route names a node that has no entry in nodes_map */
	DROP_NODEPORT_CLOSED = 14,      /* NodePort not listening on this node (pool isolation) */
	DROP_NAT_FAILED = 15,           /* a kernel helper failed while masquerading or reversing it */
	REASON_ICMP_SENT = 16,          /* not a drop: an ICMP error sent back to the sender of a packet
					 * that is counted under its own drop reason */
	DROP_NO_SERVICE_BACKEND = 17,   /* a service frontend without a backend this node may use */
	DROP_VXLAN_NOT_UNICAST = 18,    /* VXLAN to a multicast or broadcast outer destination */
	DROP_BAD_CHECKSUM = 19,         /* VXLAN whose outer IPv4 header checksum is wrong */
	DROP_TTL_EXCEEDED = 20,         /* a routed packet whose TTL would reach 0 at this hop */
	DROP_REASON_MAX,                /* keep last */
};

/* Never called: its prototype puts enum drop_reason into each object's BTF, where Go reads the
 * table back to check pkg/datapath/dropreason against it (types used only as constants are
 * not emitted). A global function in .text that no program calls is not loaded. */
__attribute__((noinline, used)) int edgeplane_drop_reason_btf(enum drop_reason reason)
{
	return reason;
}

#endif
