/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding decisions shared by the entry programs. */
#ifndef EDGEPLANE_FWD_H
#define EDGEPLANE_FWD_H

#include "common.h"
#include "endpoints.h"
#include "parse.h"

/* Delivers the (Ethernet + IPv4) packet into a local pod: the pod sees a frame from its gateway
 * (the host-side veth) to itself, as if routed by the host, and bpf_redirect_peer hands it to the
 * pod's eth0 without a second pass through the host stack or the veth's backlog queue. */
static __always_inline int fwd_to_endpoint(struct __sk_buff *skb, const struct endpoint *ep)
{
	struct ethhdr *eth = pkt_data(skb);

	if ((void *)(eth + 1) > pkt_end(skb))
		return -DROP_INVALID;
	eth_set_macs(eth, ep->pod_mac, ep->host_mac);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* The same from a tc egress hook, where redirect_peer is not available: out of the pod's host-side
 * veth, whose peer is the pod's eth0. */
static __always_inline int fwd_to_endpoint_egress(struct __sk_buff *skb, const struct endpoint *ep)
{
	struct ethhdr *eth = pkt_data(skb);

	if ((void *)(eth + 1) > pkt_end(skb))
		return -DROP_INVALID;
	eth_set_macs(eth, ep->pod_mac, ep->host_mac);
	return bpf_redirect(ep->ifindex, 0);
}

static __always_inline int in_cidr(__be32 addr, __be32 net, __be32 mask)
{
	return (addr & mask) == net;
}

#endif
