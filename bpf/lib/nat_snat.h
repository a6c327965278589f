/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The translation out: masquerade of pod traffic leaving the cluster to the node IP (nat_snat, on
 * the NIC's egress) and the cloud gateway's translation of traffic entering the overlay from
 * outside the cluster CIDR to the overlay address (nat_snat_overlay). nat_rev.h undoes both.
 *
 * Which packets are masqueraded: IPv4 TCP, UDP and ICMP echo requests from cfg->pod_cidr to a
 * destination outside the cluster and nonmasq_map. A mapping is created by the packet that opens
 * a flow (TCP SYN, any UDP, echo request); other TCP packets without a mapping (a pod answering a
 * connection made to its own address) and echo replies leave untouched. Non-first fragments carry
 * no ports and leave untouched too. */
#ifndef EDGEPLANE_NAT_SNAT_H
#define EDGEPLANE_NAT_SNAT_H

#include "common.h"
#include "config.h"
#include "parse.h"
#include "nat.h"
#include "nat_tuple.h"
#include "nat_port.h"

static __always_inline int nat_should_masquerade(const struct node_cfg *cfg, const struct nat_tuple *t)
{
	struct nonmasq_key key = { .prefixlen = 32, .addr = t->daddr };

	if ((t->saddr & cfg->pod_mask) != cfg->pod_cidr)
		return 0;
	if ((t->daddr & cfg->cluster_mask) == cfg->cluster_cidr)
		return 0;
	return !bpf_map_lookup_elem(&nonmasq_map, &key);
}

/* Egress (the NIC's tc egress): masquerade the packet if it is pod traffic leaving the cluster. */
static __always_inline int nat_snat(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	struct nat_tuple t = {};
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 port;
	int ret;

	if (!(cfg->flags & NODE_CFG_MASQUERADE))
		return 0;
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : 0;
	if ((ip->saddr & cfg->pod_mask) != cfg->pod_cidr)
		return 0; /* the common case on a NIC: the host's own traffic and VXLAN */
	/* Pod to pod across the underlay (route mode: pod_egress redirected it here, and this hook
	 * runs on redirected frames too) is never masqueraded: no need to read its L4 header. */
	if ((ip->daddr & cfg->cluster_mask) == cfg->cluster_cidr)
		return 0;
	ret = nat_parse(skb, ip, &t, 1);
	if (ret)
		return ret < 0 ? ret : 0;
	if (!nat_should_masquerade(cfg, &t))
		return 0;
	ret = nat_snat_port(skb, cfg, cfg->node_ip, &t, &port);
	if (ret)
		return ret < 0 ? ret : 0;
	return nat_rewrite(skb, &t, 0, t.saddr, cfg->node_ip, t.sport, port);
}

/* Traffic entering the overlay from outside the cluster CIDR (the overlay device's egress): cloud
 * hosts routed to pods through this node (the cloud gateway), or host sockets bound to another
 * address. Translated to the node's overlay address, the first address of its pod CIDR, so the
 * pod's reply comes back through the tunnel to this node, which undoes it (nat_rnat_overlay). */
static __always_inline int nat_snat_overlay(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	struct nat_tuple t = {};
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 port;
	int ret;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : 0;
	if ((ip->saddr & cfg->cluster_mask) == cfg->cluster_cidr)
		return 0;
	ret = nat_parse(skb, ip, &t, 1);
	if (ret)
		return ret < 0 ? ret : 0;
	ret = nat_snat_port(skb, cfg, cfg->pod_cidr, &t, &port);
	if (ret)
		return ret < 0 ? ret : 0;
	return nat_rewrite(skb, &t, 0, t.saddr, cfg->pod_cidr, t.sport, port);
}

#endif
