/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* "Host unreachable" back through the tunnel: node_ingress's answer to VXLAN from a node of a
 * network domain this node cannot reach.
 *
 * Two nodes apply a domain change (a pool move, a ConfigMap edit) one after the other, a few
 * milliseconds apart. When the receiving node applies it first, the sender still tunnels its
 * pods' packets here, and dropping them silently leaves the sending pod waiting for a timeout.
 * The sending node will drop at the source and answer its pods itself (pod_egress) once it has
 * applied the change; until then this node answers for it: the inner packet becomes ICMP "host
 * unreachable" from this node's IP to the inner source (lib/icmp.h), encapsulated back to the
 * outer source, which is a known node (nodes_map: the agent keys every address a node publishes).
 * That node still takes this one for reachable (that is the window), delivers the error to its pod,
 * and the pod's connect() fails at once. An error about a packet to a service backend is
 * translated back to the frontend there (lib/lb_xlate.h, lb_xlate_rev_icmp).
 *
 * Not answered (RFC 1122 3.2.2, RFC 1812 4.3.2.7): ICMP errors, non-first fragments, non-IPv4
 * inner frames; nor GRO aggregates. The answers share one budget per node (GCRA: a burst of
 * TUNNEL_UNREACH_BURST, then TUNNEL_UNREACH_RATE a second): the outer source is an address, not
 * a proof, and a flood must not turn into one of answers. Always encapsulated here, whatever the
 * encap mode: through the VXLAN device, overlay_egress would drop the answer toward this
 * unreachable domain. Counted as ICMP_SENT (direction overlay_in) besides the drop. */
#ifndef EDGEPLANE_TUNNEL_UNREACH_H
#define EDGEPLANE_TUNNEL_UNREACH_H

#include "common.h"
#include "config.h"
#include "nodes.h"
#include "icmp.h"
#include "vxlan.h"

#define TUNNEL_UNREACH_BURST 64
#define TUNNEL_UNREACH_RATE 1000 /* a second */
#define TUNNEL_UNREACH_GAP_NS (1000000000ULL / TUNNEL_UNREACH_RATE)

/* The GCRA's theoretical arrival time (bpf_ktime_get_ns). One per node, in .bss; CPUs race on it,
 * which only blurs the budget a little. */
__u64 tunnel_unreach_tat;

static __always_inline int tunnel_unreach_allowed(void)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 tat = tunnel_unreach_tat;

	if (tat < now)
		tat = now;
	if (tat - now > TUNNEL_UNREACH_BURST * TUNNEL_UNREACH_GAP_NS)
		return 0;
	tunnel_unreach_tat = tat + TUNNEL_UNREACH_GAP_NS;
	return 1;
}

/* Whether the VXLAN frame (option-less outer IPv4, checked by node_vxlan_ingress) carries an IPv4
 * packet an error may answer; *peer_ip is its outer source. */
static __always_inline int tunnel_unreach_answerable(struct __sk_buff *skb, __be32 *peer_ip)
{
	struct ethhdr *inner_eth;
	struct icmphdr *icmp;
	struct iphdr *outer, *inner;

	if (skb->gso_size || pkt_pull(skb, VXLAN_INNER_IP_OFF + sizeof(*inner) + sizeof(*icmp)) < 0)
		return 0;
	outer = pkt_data(skb) + ETH_HLEN;
	inner_eth = pkt_data(skb) + VXLAN_INNER_ETH_OFF;
	inner = (void *)(inner_eth + 1);
	if ((void *)(inner + 1) > pkt_end(skb))
		return 0;
	if (outer->ihl != 5 || inner_eth->h_proto != bpf_htons(ETH_P_IP) || inner->version != 4 || inner->ihl != 5)
		return 0;
	if (inner->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	if (inner->protocol == IPPROTO_ICMP) {
		icmp = (void *)(inner + 1);
		if ((void *)(icmp + 1) > pkt_end(skb) || (icmp->type != ICMP_ECHO && icmp->type != ICMP_ECHOREPLY))
			return 0;
	}
	*peer_ip = outer->saddr;
	return 1;
}

/* Puts the error (Ethernet + IPv4, not GSO, ICMP checksum complete) back into VXLAN toward remote.
 * Not vxlan_encap_native: its bpf_skb_adjust_room with the ENCAP flags refuses (-EALREADY) an skb
 * still marked as encapsulated, which a frame that arrived encapsulated may be (a veth keeps the
 * mark the sender's encapsulation set, and decapsulating does not clear it before 6.19). A small
 * plain packet needs none of the offload state those flags record. */
static __always_inline int tunnel_unreach_encap(struct __sk_buff *skb, const struct node_cfg *cfg,
						__be32 remote, const struct node *node)
{
	if (bpf_skb_adjust_room(skb, ENCAP_OVERHEAD, BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;
	if (pkt_pull(skb, ETH_HLEN + ENCAP_OVERHEAD) < 0)
		return -1;
	return vxlan_push_headers(skb, cfg, remote, node, 0, 0, bpf_get_prandom_u32());
}

/* The exit of node_ingress for VXLAN dropped as DROP_DOMAIN_UNREACHABLE: counted, then answered
 * through the tunnel when the packet may be answered and the budget allows (see the top). Out of
 * line (a BPF subprogram): inlined, its stack (icmp_error's padding) would add to node_ingress's,
 * beyond the 512 bytes a call chain may use with node_lb. */
static __noinline int tc_exit_tunnel_unreach(struct __sk_buff *skb, __u32 dir, const struct node_cfg *cfg)
{
	struct node *peer;
	__be32 peer_ip;
	int ret;

	metric_count(dir, DROP_DOMAIN_UNREACHABLE, skb->len);
	event_emit(skb, dir, DROP_DOMAIN_UNREACHABLE, TC_ACT_SHOT);
	if (!tunnel_unreach_answerable(skb, &peer_ip))
		return TC_ACT_SHOT;
	peer = node_lookup(peer_ip);
	if (!peer || !tunnel_unreach_allowed())
		return TC_ACT_SHOT;
	if (vxlan_decap(skb) != 0)
		return TC_ACT_SHOT;
	if (icmp_error(skb, cfg->node_ip, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, 0, ICMP_UNREACH_QUOTE) < 0)
		return TC_ACT_SHOT;
	ret = tunnel_unreach_encap(skb, cfg, peer_ip, peer);
	if (ret < 0)
		return TC_ACT_SHOT;
	metric_count(dir, REASON_ICMP_SENT, skb->len);
	return ret;
}

#endif
