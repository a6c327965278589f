/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors the datapath sends itself, built in place from the packet that caused them, the way
 * a router answers (RFC 792, RFC 1191, RFC 1812 4.3.2.3):
 *
 *   Ethernet  the offending frame's MACs swapped (to the sender, from the gateway it sent to)
 *   IPv4      from `saddr`, to the offending source, TOS precedence "internetwork control", no DF
 *   ICMP      type, code and the 32-bit word after the checksum
 *   quote     the offending packet from its IP header on: ICMP_ERR_QUOTE bytes, which is what
 *             Linux's icmp_send() quotes (the whole error fits in 576 bytes)
 *
 * Why quote 548 bytes and not just the header + 8 (RFC 792's minimum): bpf_skb_change_tail refuses
 * to cut a CHECKSUM_PARTIAL packet before csum_start + csum_offset + 2, which for TCP is 18 bytes
 * into its header, and pods hand the veth exactly such packets. A longer quote also serves
 * receivers that match errors on more than the ports (tunnels, IPsec).
 *
 * Trimming with bpf_skb_change_tail also resets the GSO state, so an oversized GSO packet turns
 * into one plain 590-byte frame. The skb keeps its ip_summed: with CHECKSUM_PARTIAL the receiving
 * stack treats the ICMP checksum as verified, and we compute it in full anyway. */
#ifndef EDGEPLANE_ICMP_H
#define EDGEPLANE_ICMP_H

#include "common.h"
#include "csum.h"
#include "metrics.h"
#include "parse.h"

#define ICMP_ERR_MAX 576 /* IPv4 length of the errors we send */
#define ICMP_ERR_HLEN (sizeof(struct iphdr) + sizeof(struct icmphdr))
#define ICMP_ERR_QUOTE (ICMP_ERR_MAX - ICMP_ERR_HLEN)
#define ICMP_ERR_TTL 64
/* bpf_csum_diff sums at most 512 bytes per call */
#define CSUM_DIFF_MAX 512

/* Rewrites the Ethernet + IPv4 frame at the start of skb into "destination unreachable,
 * fragmentation needed" with next-hop MTU mtu, from saddr. Returns 0, or -1 when the packet cannot
 * be turned into one (then the caller just drops it). */
static __always_inline int icmp_frag_needed(struct __sk_buff *skb, __be32 saddr, __u16 mtu)
{
	__u8 to_mac[ETH_ALEN], from_mac[ETH_ALEN];
	struct icmphdr *icmp;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 daddr;
	__s64 sum;
	__u8 tos;

	/* Only packets longer than a pod MTU (>= 576) get here, so the quote is always full. */
	if (skb->len < ETH_HLEN + ICMP_ERR_QUOTE)
		return -1;
	if (pkt_pull(skb, ETH_HLEN + sizeof(*ip)) < 0)
		return -1;
	eth = pkt_data(skb);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > pkt_end(skb))
		return -1;
	__builtin_memcpy(to_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(from_mac, eth->h_dest, ETH_ALEN);
	daddr = ip->saddr;
	tos = (ip->tos & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL; /* as icmp_send() */

	/* [eth][quote] then [eth][new IPv4 + ICMP, zeroed][quote] */
	if (bpf_skb_change_tail(skb, ETH_HLEN + ICMP_ERR_QUOTE, 0) < 0)
		return -1;
	if (bpf_skb_adjust_room(skb, ICMP_ERR_HLEN, BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;
	if (pkt_pull(skb, ETH_HLEN + ICMP_ERR_MAX) < 0)
		return -1;
	eth = pkt_data(skb);
	ip = (void *)(eth + 1);
	icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) + ICMP_ERR_QUOTE > pkt_end(skb))
		return -1;

	eth_set_macs(eth, to_mac, from_mac);
	eth->h_proto = bpf_htons(ETH_P_IP);

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = bpf_htons(ICMP_ERR_MAX);
	ip->id = (__be16)bpf_get_prandom_u32();
	ip->frag_off = 0;
	ip->ttl = ICMP_ERR_TTL;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = ipv4_hdr_csum(ip);

	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->un.frag.__unused = 0;
	icmp->un.frag.mtu = bpf_htons(mtu);
	sum = bpf_csum_diff(0, 0, (__be32 *)icmp, CSUM_DIFF_MAX, 0);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(0, 0, (__be32 *)((void *)icmp + CSUM_DIFF_MAX),
			    sizeof(*icmp) + ICMP_ERR_QUOTE - CSUM_DIFF_MAX, sum);
	if (sum < 0)
		return -1;
	icmp->checksum = csum_fold32((__u32)sum);
	return 0;
}

/* The exit of a TC program for a packet dropped as too big whose sender is to be told: counted
 * under DROP_PKT_TOO_BIG like any drop (with its own length), then rewritten into the ICMP error,
 * counted as REASON_ICMP_SENT, and handed back to the sender. The packet came in on the tc ingress
 * of a pod's host-side veth, so the peer redirect to that same veth puts the error straight into
 * the pod's eth0 ingress: no qdisc, no checksum offload step that could touch the quote. When the
 * rewrite fails the drop stands. */
static __always_inline int tc_exit_frag_needed(struct __sk_buff *skb, __u32 dir, __be32 saddr, __u16 mtu)
{
	metric_count(dir, DROP_PKT_TOO_BIG, skb->len);
	event_emit(skb, dir, DROP_PKT_TOO_BIG, TC_ACT_SHOT); /* before the rewrite: the offending tuple */
	if (icmp_frag_needed(skb, saddr, mtu) < 0)
		return TC_ACT_SHOT;
	metric_count(dir, REASON_ICMP_SENT, skb->len);
	return bpf_redirect_peer(skb->ifindex, 0);
}

#endif
