/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Route mode (docs/domains.md): a pod's packet crosses the underlay as it is, without
 * encapsulation, to the next hop toward the node that owns its destination: that node itself when
 * it shares the L2 segment, else the gateway that routes toward it (which learned the pod CIDRs
 * over BGP). The next hop is the one the VXLAN path sends the node's tunnel packets to, so both
 * modes share nodes_map's nexthop_mac, which the agent resolves from the kernel's routes and
 * neighbours. Before it has (a new node, a changed gateway), the kernel's FIB is asked for the next
 * hop toward the node (bpf_fib_lookup, as the host would route to the node IP) and
 * bpf_redirect_neigh resolves its neighbour: asking the neighbour table for the node IP itself, as
 * a direct redirect_neigh would, finds nothing when the node is behind a router. */
#ifndef EDGEPLANE_DIRECT_H
#define EDGEPLANE_DIRECT_H

#include "common.h"
#include "config.h"
#include "nodes.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Sends the Ethernet + IPv4 frame out of the underlay NIC toward node_ip through the kernel's
 * FIB. Out of line (a BPF subprogram): the 64-byte lookup gets a frame of its own. */
static __noinline int direct_redirect_fib(struct __sk_buff *skb, __u32 ifindex, __be32 node_ip)
{
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = node_ip };
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth;
	int ret;

	fib.family = AF_INET;
	fib.ipv4_dst = node_ip;
	fib.ifindex = ifindex;
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (ret == BPF_FIB_LKUP_RET_SUCCESS) {
		eth = pkt_data(skb);
		if ((void *)(eth + 1) > pkt_end(skb))
			return -DROP_INVALID;
		eth_set_macs(eth, fib.dmac, fib.smac);
		return bpf_redirect(fib.ifindex, 0);
	}
	if (ret == BPF_FIB_LKUP_RET_NO_NEIGH)
		nh.ipv4_nh = fib.ipv4_dst; /* the next hop: node_ip or the gateway toward it */
	return bpf_redirect_neigh(ifindex, &nh, sizeof(nh), 0);
}

/* Sends the frame out of the underlay NIC toward the node that owns its destination (node_ip,
 * its nodes_map entry node): to the resolved next hop's MAC, else through the FIB. */
static __always_inline int direct_redirect(struct __sk_buff *skb, const struct node_cfg *cfg, __be32 node_ip,
					   const struct node *node)
{
	struct ethhdr *eth;

	if (!(node->flags & NODE_NEXTHOP_VALID))
		return direct_redirect_fib(skb, cfg->underlay_ifindex, node_ip);
	eth = pkt_data(skb);
	if ((void *)(eth + 1) > pkt_end(skb))
		return -DROP_INVALID;
	eth_set_macs(eth, node->nexthop_mac, cfg->underlay_mac);
	return bpf_redirect(cfg->underlay_ifindex, 0);
}

#endif
