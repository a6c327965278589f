/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet access. Every pointer into the packet is derived from skb->data and checked against
 * skb->data_end right here, so callers get either valid headers or a drop reason. Helpers that
 * change the packet (adjust_room, store_bytes, csum_replace, pull_data) invalidate these pointers:
 * callers parse again after them instead of reusing old pointers. */
#ifndef EDGEPLANE_PARSE_H
#define EDGEPLANE_PARSE_H

#include "common.h"
#include "drop_reasons.h"

#ifndef ETH_P_ARP
#define ETH_P_ARP 0x0806
#endif

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* What parse_ipv4() found besides IPv4 (which it returns as 0). */
enum l3_kind {
	L3_IPV4 = 0,
	L3_ARP = 1,
	L3_OTHER = 2, /* IPv6, VLAN, LLDP, ...: not ours */
};

static __always_inline void *pkt_data(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data;
}

static __always_inline void *pkt_end(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data_end;
}

/* Makes the first len bytes directly accessible. Drivers normally hand us the headers in the
 * linear area; pulling costs a copy, so it is done only when they are not. A packet shorter than
 * len is truncated: DROP_INVALID. */
static __always_inline int pkt_pull(struct __sk_buff *skb, __u32 len)
{
	if (pkt_data(skb) + len <= pkt_end(skb))
		return 0;
	if (len > skb->len || bpf_skb_pull_data(skb, len) < 0)
		return -DROP_INVALID;
	return 0;
}

static __always_inline int ipv4_is_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) != 0;
}

/* Parses Ethernet + IPv4 at offset 0. Returns L3_IPV4 with the header pointers set, L3_ARP or L3_OTHER for
 * other ethertypes, or -DROP_INVALID for a truncated or malformed IPv4 header. The IPv4 header
 * including options is guaranteed to be in the linear area. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct ethhdr **ethp, struct iphdr **ipp)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 hlen;

	if (pkt_pull(skb, ETH_HLEN) < 0)
		return -DROP_INVALID;
	eth = pkt_data(skb);
	if ((void *)(eth + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return L3_ARP;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return L3_OTHER;

	if (pkt_pull(skb, ETH_HLEN + sizeof(struct iphdr)) < 0)
		return -DROP_INVALID;
	eth = pkt_data(skb);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (ip->version != 4 || ip->ihl < 5)
		return -DROP_INVALID;
	hlen = ip->ihl * 4;
	/* GSO packets may carry 0 (BIG TCP) or an aggregate length here; only check real packets. */
	if (!skb->gso_size) {
		__u32 tot = bpf_ntohs(ip->tot_len);

		if (tot < hlen || ETH_HLEN + tot > skb->len)
			return -DROP_INVALID;
	}
	if (hlen > sizeof(struct iphdr)) {
		if (pkt_pull(skb, ETH_HLEN + hlen) < 0)
			return -DROP_INVALID;
		eth = pkt_data(skb);
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > pkt_end(skb))
			return -DROP_INVALID;
	}
	*ethp = eth;
	*ipp = ip;
	return L3_IPV4;
}

/* Whether the IPv4 datagram ip holds an L4 header of len bytes after its own header. A header read
 * from the frame past the datagram's total length is Ethernet padding: the kernel trims it
 * (ip_rcv_core) and then finds the header truncated. Callers skip GSO packets, whose total
 * length may be an aggregate's or 0 (BIG TCP). */
static __always_inline int ipv4_holds_l4(const struct iphdr *ip, __u32 len)
{
	return ip->ihl * 4 + len <= bpf_ntohs(ip->tot_len);
}

/* The L4 header at off (from the start of the packet), len bytes, made linear and bounds-checked.
 * Returns NULL when the packet is too short. */
static __always_inline void *pkt_header(struct __sk_buff *skb, __u32 off, __u32 len)
{
	void *p;

	if (off > 0xffff || len > 64)
		return 0;
	if (pkt_pull(skb, off + len) < 0)
		return 0;
	p = pkt_data(skb) + off;
	if (p + len > pkt_end(skb))
		return 0;
	return p;
}

static __always_inline void eth_set_macs(struct ethhdr *eth, const __u8 *dst, const __u8 *src)
{
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
}

/* Multicast (224.0.0.0/4) or the limited broadcast address: never a node's unicast address. */
static __always_inline int ipv4_is_mcast_or_bcast(__be32 addr)
{
	return (bpf_ntohl(addr) >> 28) == 0xe || addr == 0xffffffff;
}

#endif
