/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Reverse translation: undoing nat_snat.h's translations for replies to the node IP (nat_rnat) and
 * to the overlay address (nat_rnat_overlay), and for ICMP errors quoting a translated packet
 * (nat_rev_icmp_error), through nat_rev_map (lib/nat.h). */
#ifndef EDGEPLANE_NAT_REV_H
#define EDGEPLANE_NAT_REV_H

#include "common.h"
#include "config.h"
#include "parse.h"
#include "nat.h"
#include "nat_tuple.h"

/* An ICMP error (destination unreachable, e.g. fragmentation needed; time exceeded) about a
 * packet we masqueraded quotes that packet: node IP and node port as its source. Translate the
 * outer destination and the quoted source back so the pod sees an error about its own packet
 * (PMTU discovery over the internet depends on it). Changing the quoted source address together
 * with the quoted IP checksum leaves the ICMP checksum unchanged; the quoted port is compensated
 * in the ICMP checksum. The quoted L4 checksum is left alone: receivers do not check it. */
static __always_inline int nat_rev_icmp_error(struct __sk_buff *skb, const struct nat_tuple *t)
{
	__u32 in_ip_off = t->l4_off + sizeof(struct icmphdr);
	struct nat_rev_key rk = {};
	struct nat_rev_val *rev;
	struct iphdr *in_ip;
	__u32 in_l4_off, port_off;
	__be16 *ports;
	__be32 node_ip;

	in_ip = pkt_header(skb, in_ip_off, sizeof(*in_ip));
	if (!in_ip)
		return 0; /* too short to say what it is about: let the host have it */
	if (in_ip->ihl != 5 || in_ip->saddr != t->daddr)
		return 0;
	node_ip = in_ip->saddr;
	rk.remote_ip = in_ip->daddr;
	rk.proto = in_ip->protocol;
	in_l4_off = in_ip_off + sizeof(*in_ip);

	/* the quoted ports: TCP/UDP source, destination; ICMP echo type, code, csum, id */
	ports = pkt_header(skb, in_l4_off, 8);
	if (!ports)
		return 0;
	switch (rk.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		rk.node_port = ports[0];
		rk.remote_port = ports[1];
		port_off = in_l4_off;
		break;
	case IPPROTO_ICMP:
		if (*(__u8 *)ports != ICMP_ECHO)
			return 0;
		rk.node_port = ports[2];
		rk.remote_port = 0;
		port_off = in_l4_off + 4;
		break;
	default:
		return 0;
	}
	rev = bpf_map_lookup_elem(&nat_rev_map, &rk);
	if (!rev)
		return 0;

	/* the quoted header: source address with its checksum, source port with the ICMP checksum */
	if (bpf_l3_csum_replace(skb, in_ip_off + offsetof(struct iphdr, check), node_ip, rev->pod_ip, 4) < 0 ||
	    bpf_skb_store_bytes(skb, in_ip_off + offsetof(struct iphdr, saddr), &rev->pod_ip, 4, 0) < 0)
		return -DROP_NAT_FAILED;
	if (bpf_l4_csum_replace(skb, t->l4_off + 2, rk.node_port, rev->pod_port, 2) < 0 ||
	    bpf_skb_store_bytes(skb, port_off, &rev->pod_port, 2, 0) < 0)
		return -DROP_NAT_FAILED;
	/* the outer destination (not in the ICMP checksum) */
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), t->daddr, rev->pod_ip, 4) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr), &rev->pod_ip, 4, 0) < 0)
		return -DROP_NAT_FAILED;
	return 0;
}

/* Undoes the translation of replies (and ICMP errors) to nat_ip. */
static __always_inline int nat_rnat_to(struct __sk_buff *skb, const struct iphdr *ip, __be32 nat_ip)
{
	struct nat_tuple t = {};
	struct nat_rev_key rk = {};
	struct nat_rev_val *rev;
	int ret;

	if (ip->daddr != nat_ip)
		return 0;
	ret = nat_parse(skb, ip, &t, 0);
	if (ret)
		return ret < 0 ? ret : 0;
	if (t.proto == IPPROTO_ICMP && t.icmp_type != ICMP_ECHOREPLY)
		return nat_rev_icmp_error(skb, &t);

	rk.proto = t.proto;
	rk.remote_ip = t.saddr;
	if (t.proto == IPPROTO_ICMP) {
		rk.node_port = t.sport; /* the echo identifier */
		rk.remote_port = 0;
	} else {
		rk.remote_port = t.sport;
		rk.node_port = t.dport;
	}
	rev = bpf_map_lookup_elem(&nat_rev_map, &rk);
	if (!rev)
		return 0;
	return nat_rewrite(skb, &t, 1, t.daddr, rev->pod_ip, rk.node_port, rev->pod_port);
}

/* Ingress (the NIC's tc ingress): undo the masquerade of replies to the node IP. */
static __always_inline int nat_rnat(struct __sk_buff *skb, const struct node_cfg *cfg,
				    const struct iphdr *ip)
{
	if (!(cfg->flags & NODE_CFG_MASQUERADE))
		return 0;
	return nat_rnat_to(skb, ip, cfg->node_ip);
}

/* The gateway's key (nat_rev_map) for the IPv4 packet at ip_off to the overlay address: a TCP/UDP
 * packet from the remote, or an ICMP error (destination unreachable, time exceeded) quoting one
 * sent from the overlay address to the remote. Returns 1 with rk filled, 0 for anything else
 * (fragments, IP options, other protocols). Only looks. */
static __always_inline int nat_overlay_reply_key(struct __sk_buff *skb, const struct node_cfg *cfg, __u32 ip_off,
						 struct nat_rev_key *rk)
{
	struct icmphdr *icmp;
	struct iphdr *ip;
	__be16 *ports;
	__be32 remote;
	int quoted = 0;
	__u8 proto;

	ip = pkt_header(skb, ip_off, sizeof(*ip));
	if (!ip || ip->daddr != cfg->pod_cidr || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_OFFSET)))
		return 0;
	proto = ip->protocol;
	remote = ip->saddr;
	if (proto == IPPROTO_ICMP) {
		icmp = pkt_header(skb, ip_off + sizeof(*ip), sizeof(*icmp));
		if (!icmp || (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED))
			return 0;
		ip_off += sizeof(*ip) + sizeof(*icmp);
		ip = pkt_header(skb, ip_off, sizeof(*ip));
		if (!ip || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_OFFSET)) || ip->saddr != cfg->pod_cidr)
			return 0;
		proto = ip->protocol;
		remote = ip->daddr;
		quoted = 1;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	ports = pkt_header(skb, ip_off + sizeof(*ip), 2 * sizeof(__be16));
	if (!ports)
		return 0;
	rk->remote_ip = remote;
	rk->remote_port = quoted ? ports[1] : ports[0];
	rk->node_port = quoted ? ports[0] : ports[1];
	rk->proto = proto;
	rk->pad[0] = rk->pad[1] = rk->pad[2] = 0;
	return 1;
}

/* The overlay device's ingress: undo nat_snat_overlay for replies to the overlay address. */
static __always_inline int nat_rnat_overlay(struct __sk_buff *skb, const struct node_cfg *cfg,
					    const struct iphdr *ip)
{
	return nat_rnat_to(skb, ip, cfg->pod_cidr);
}

#endif
