/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A packet's NAT tuple (lib/nat.h's translations): the fields parsed once, and the rewrite of one
 * address and port with their checksums. Non-first fragments carry no ports and are not parsed
 * (NAT_SKIP). */
#ifndef EDGEPLANE_NAT_TUPLE_H
#define EDGEPLANE_NAT_TUPLE_H

#include "common.h"
#include "parse.h"

/* An IPv4 packet's NAT-relevant fields, parsed once. */
struct nat_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;     /* ICMP echo: the identifier on the "local" side */
	__be16 dport;     /* ICMP echo: 0 */
	__u8 proto;
	__u8 opens_flow;  /* TCP SYN, UDP, echo request: may create a mapping */
	__u8 icmp_type;
	__u8 pad;
	__u32 l4_off;     /* from the start of the packet */
};

#define NAT_SKIP 1 /* not something we translate: leave the packet alone */

static __always_inline int nat_csum_off(__u8 proto, __u32 l4_off)
{
	switch (proto) {
	case IPPROTO_TCP:
		return l4_off + 16;
	case IPPROTO_UDP:
		return l4_off + 6;
	default:
		return l4_off + 2; /* ICMP */
	}
}

/* Offset of the port/identifier that NAT rewrites: the source side on egress, the destination
 * side on ingress (for ICMP echo both are the identifier). */
static __always_inline __u32 nat_port_off(__u8 proto, __u32 l4_off, int dest)
{
	if (proto == IPPROTO_ICMP)
		return l4_off + 4;
	return l4_off + (dest ? 2 : 0);
}

/* Reads ports (or the echo identifier) of the IPv4 packet ip. egress selects which ICMP echo
 * direction may be translated: requests going out, replies coming back. */
static __always_inline int nat_parse(struct __sk_buff *skb, const struct iphdr *ip,
				     struct nat_tuple *t, int egress)
{
	__u32 l4_off = ETH_HLEN + ip->ihl * 4;

	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	t->l4_off = l4_off;
	t->opens_flow = 0;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return NAT_SKIP;

	switch (t->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = pkt_header(skb, l4_off, sizeof(*tcp));

		if (!tcp)
			return -DROP_INVALID;
		t->sport = tcp->source;
		t->dport = tcp->dest;
		t->opens_flow = tcp->syn && !tcp->ack;
		return 0;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = pkt_header(skb, l4_off, sizeof(*udp));

		if (!udp)
			return -DROP_INVALID;
		t->sport = udp->source;
		t->dport = udp->dest;
		t->opens_flow = 1;
		return 0;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *icmp = pkt_header(skb, l4_off, sizeof(*icmp));

		if (!icmp)
			return -DROP_INVALID;
		t->icmp_type = icmp->type;
		if (icmp->type == (egress ? ICMP_ECHO : ICMP_ECHOREPLY)) {
			t->sport = icmp->un.echo.id;
			t->dport = 0;
			t->opens_flow = egress;
			return 0;
		}
		if (!egress && (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED))
			return 0; /* an error, maybe about a masqueraded packet: nat_rev_icmp_error() */
		return NAT_SKIP;
	}
	default:
		return NAT_SKIP;
	}
}

/* Rewrites one address and one port/identifier, with checksums. dest selects destination (ingress)
 * or source (egress) fields. The L4 checksum covers the addresses through the pseudo header for
 * TCP/UDP, not for ICMP; a zero UDP checksum means "none" and stays zero (MARK_MANGLED_0).
 * l4_off 0 says the packet has no L4 header (a later IPv4 fragment, lib/frag.h): the address and
 * the IPv4 checksum only; the port and the L4 checksum are the first fragment's. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, const struct nat_tuple *t, int dest,
				       __be32 old_ip, __be32 new_ip, __be16 old_port, __be16 new_port)
{
	__u32 ip_off = ETH_HLEN + (dest ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__u32 csum_off = nat_csum_off(t->proto, t->l4_off);
	__u32 port_off = nat_port_off(t->proto, t->l4_off, dest);
	__u64 l4flags = t->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (!t->l4_off)
		goto l3;
	if (t->proto != IPPROTO_ICMP &&
	    bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, l4flags | BPF_F_PSEUDO_HDR | 4) < 0)
		return -DROP_NAT_FAILED;
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4flags | 2) < 0)
			return -DROP_NAT_FAILED;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -DROP_NAT_FAILED;
	}
l3:
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_ip, new_ip, 4) < 0)
		return -DROP_NAT_FAILED;
	if (bpf_skb_store_bytes(skb, ip_off, &new_ip, sizeof(new_ip), 0) < 0)
		return -DROP_NAT_FAILED;
	return 0;
}

#endif
