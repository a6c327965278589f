/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The TTL of the packets the datapath routes (RFC 1812 5.3.1), as the kernel's ip_forward treats
 * them: every hop that routes a packet between two interfaces decrements its IPv4 TTL and updates
 * the header checksum; a packet whose TTL would reach 0 is dropped (DROP_TTL_EXCEEDED) and
 * answered with ICMP "time exceeded in transit" from the hop, so that traceroute shows the hops
 * and a routing loop ends.
 *
 * The hops: pod_egress for what it redirects (to a local pod, into the overlay or onto the
 * underlay in route mode: the sending node's hop), node_ingress and overlay_ingress for what they
 * deliver into a local pod (the receiving node's). What goes to the host stack is the kernel's to
 * count; packets the node itself originates or answers (ICMP errors) are not decremented. A GSO
 * packet's segments share its header, so decrementing it decrements them all. */
#ifndef EDGEPLANE_TTL_H
#define EDGEPLANE_TTL_H

#include "common.h"
#include "drop_reasons.h"
#include "parse.h"

/* Decrements the TTL of the IPv4 header at ip_off (an incremental checksum update of the 16-bit
 * word holding TTL and protocol). Returns 0, -DROP_TTL_EXCEEDED when the TTL is 1 or 0 (nothing
 * changed), or -DROP_INVALID. Packet pointers are gone afterwards. */
static __always_inline int ipv4_ttl_dec(struct __sk_buff *skb, __u32 ip_off)
{
	struct iphdr *ip = pkt_header(skb, ip_off, sizeof(*ip));
	__be16 old, new;

	if (!ip)
		return -DROP_INVALID;
	if (ip->ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	old = *(__be16 *)&ip->ttl;
	ip->ttl--;
	new = *(__be16 *)&ip->ttl;
	if (bpf_l3_csum_replace(skb, ip_off + offsetof(struct iphdr, check), old, new, sizeof(new)) < 0)
		return -DROP_INVALID;
	return 0;
}

#endif
