/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A peer's answer from across a domain change: the one packet let in from a node of a domain this
 * node cannot reach.
 *
 * Two nodes apply a domain change (a pool move, a ConfigMap edit) a few milliseconds apart. The
 * node that applies it first answers the other's senders with ICMP "host unreachable" from its
 * own address through the tunnel (lib/tunnel_unreach.h). When the other node applies the change
 * while that answer is on the wire, the answer arrives from a node it now takes for unreachable;
 * dropped, it would leave the sender waiting for a retransmission where the change promises a
 * fast failure. It is let through when it is exactly that answer: ICMP host unreachable (first
 * fragment-less, option-less IPv4) whose source is the sending node's own address, to a sender
 * behind this node: a local pod, this node's overlay address (its own connections), or a host
 * outside the cluster CIDR (a cloud host this node carries as the cloud gateway). Never to a
 * remote pod: that would go back into the overlay. An error about the sender's own packet, from
 * a known node, not pod traffic. node_ingress (native decapsulation) and overlay_ingress (the
 * kernel's VXLAN device) both check it. */
#ifndef EDGEPLANE_PEER_ANSWER_H
#define EDGEPLANE_PEER_ANSWER_H

#include "common.h"
#include "config.h"
#include "endpoints.h"
#include "fwd.h"

static __always_inline int peer_answer(const struct node_cfg *cfg, const struct iphdr *ip,
				       const struct icmphdr *icmp, __be32 peer_ip)
{
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_ICMP ||
	    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return 0;
	if (ip->saddr != peer_ip || icmp->type != ICMP_DEST_UNREACH || icmp->code != ICMP_HOST_UNREACH)
		return 0;
	if (!in_cidr(ip->daddr, cfg->cluster_cidr, cfg->cluster_mask) || ip->daddr == cfg->pod_cidr)
		return 1;
	return endpoint_lookup(ip->daddr) != NULL;
}

#endif /* EDGEPLANE_PEER_ANSWER_H */
