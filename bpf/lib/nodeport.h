/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Which service frontend a packet arriving on the underlay NIC is for (lb.h, scope EXTERNAL), and
 * whether it is addressed to this node. Shared by the underlay's XDP program (xdp.c: NodePort
 * isolation, dropping what this node does not listen on) and its tc ingress (node.c), so that
 * both hooks take the same decision; the callers pass their context (an xdp_md or an __sk_buff)
 * for the FIB helper.
 *
 * Precedence is kube-proxy's: a frontend of the destination address itself (an externalIP or a
 * LoadBalancer ingress IP) before the NodePort of the destination port, which only applies when
 * the destination is one of this node's addresses (iptables' "-m addrtype --dst-type LOCAL").
 *
 * "One of this node's addresses" without a map to keep in sync: the node IP (node_cfg_map) is
 * compared first, which is where NodePort traffic goes; any other address is asked of the kernel's
 * FIB as the receive path would (bpf_fib_lookup, input lookup on the NIC, policy rules applied):
 * local addresses resolve to RTN_LOCAL, which the helper reports as BPF_FIB_LKUP_RET_NOT_FWDED.
 * That answer also covers subnet broadcasts and unroutable destinations, which the kernel would
 * not forward either (multicast and the limited broadcast are excluded before asking). Only
 * packets to a NodePort's port get that far, so other traffic never pays for the lookup. A NIC
 * with forwarding disabled (BPF_FIB_LKUP_RET_FWD_DISABLED, never on a node that routes pods)
 * leaves the node IP as the only address known. */
#ifndef EDGEPLANE_NODEPORT_H
#define EDGEPLANE_NODEPORT_H

#include "common.h"
#include "config.h"
#include "lb.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* The FIB's answer for a packet to ip->daddr arriving on ifindex: 1 when that is a local address.
 * Out of line (a BPF subprogram): the 64-byte lookup gets a frame of its own instead of growing
 * its callers', so node_ingress -> node_lb -> lb_rewrite stays within the 512 bytes of stack that
 * kernels before 6.x count with each frame rounded up to 32 bytes (5.10 and 6.1 refused it at
 * 544). */
static __noinline int nodeport_fib_local(void *ctx, const struct iphdr *ip, __be16 sport, __be16 dport,
					 __u32 ifindex)
{
	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.sport = sport;
	fib.dport = dport;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = ifindex;
	return bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) == BPF_FIB_LKUP_RET_NOT_FWDED;
}

/* Whether daddr is an address of this node, for a packet that arrived on ifindex. */
static __always_inline int nodeport_local_addr(void *ctx, const struct node_cfg *cfg, const struct iphdr *ip,
					       __be16 sport, __be16 dport, __u32 ifindex)
{
	if (ip->daddr == cfg->node_ip)
		return 1;
	if (ipv4_is_mcast_or_bcast(ip->daddr))
		return 0;
	return nodeport_fib_local(ctx, ip, sport, dport, ifindex);
}

/* The EXTERNAL frontend for ip's destination and dport (network order), or NULL when the packet
 * is for no service: the frontend of the destination address (externalIP, LoadBalancer IP), else
 * the NodePort frontend of dport when the destination is this node's. */
static __always_inline struct lb_svc *nodeport_lookup(void *ctx, const struct node_cfg *cfg, const struct iphdr *ip,
						      __be16 sport, __be16 dport, __u32 ifindex)
{
	struct lb_svc_key key = {
		.vip = ip->daddr,
		.port = dport,
		.proto = ip->protocol,
		.scope = LB_SCOPE_EXTERNAL,
	};
	struct lb_svc *svc = bpf_map_lookup_elem(&lb_svc_map, &key);

	if (svc)
		return svc;
	key.vip = 0;
	svc = bpf_map_lookup_elem(&lb_svc_map, &key); /* vip 0: a NodePort (LB_SVC_NODEPORT) */
	if (!svc)
		return 0;
	if (!nodeport_local_addr(ctx, cfg, ip, sport, dport, ifindex))
		return 0;
	return svc;
}

#endif
