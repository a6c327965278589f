/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* VXLAN encapsulation in BPF (native mode), through the collect_md device (device mode), and
 * decapsulation on the underlay NIC. The wire format is Flannel's: UDP 8472, VNI cfg->vni, inner
 * MACs = the two nodes' VTEP MACs, outer UDP checksum 0.
 *
 * Why bpf_skb_adjust_room and not store_bytes into a bigger buffer: with the ENCAP_* flags the
 * kernel records the inner headers and marks GSO packets SKB_GSO_UDP_TUNNEL, so a 64 KiB TSO
 * packet from a pod stays one skb down to the NIC (or software GSO) instead of being segmented
 * here. */
#ifndef EDGEPLANE_VXLAN_H
#define EDGEPLANE_VXLAN_H

#include "common.h"
#include "config.h"
#include "nodes.h"
#include "routes.h"
#include "parse.h"
#include "csum.h"

/* Added after the build host's 6.1 UAPI headers. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif
/* bpf-next (after 6.18): also clears skb->encapsulation and the SKB_GSO_UDP_TUNNEL bits on decap,
 * which is what makes decapsulating GRO aggregates safe. Older kernels reject the unknown flag with
 * -EINVAL before touching the packet, so it doubles as a feature probe. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L4_UDP
#define BPF_F_ADJ_ROOM_DECAP_L4_UDP (1ULL << 10)
#endif

#define VXLAN_TTL 64
/* The kernel vxlan driver's default source port range (the local port range). */
#define VXLAN_SPORT_MIN 32768
#define VXLAN_SPORT_MAX 61000
/* Offsets in a VXLAN frame with an option-less outer IPv4 header. */
#define VXLAN_OUTER_IP_OFF ETH_HLEN
#define VXLAN_UDP_OFF (VXLAN_OUTER_IP_OFF + sizeof(struct iphdr))
#define VXLAN_HDR_OFF (VXLAN_UDP_OFF + sizeof(struct udphdr))
#define VXLAN_INNER_ETH_OFF (VXLAN_HDR_OFF + VXLAN_HLEN)
#define VXLAN_INNER_IP_OFF (VXLAN_INNER_ETH_OFF + ETH_HLEN)

#define INET_ECN_MASK 3
#define INET_ECN_ECT_0 2
#define INET_ECN_CE 3

/* Spreads flows over the underlay's ECMP/RSS like udp_flow_src_port() does: the flow hash,
 * its halves mixed, scaled into [min, max). */
static __always_inline __be16 vxlan_src_port(__u32 hash)
{
	hash ^= hash << 16;
	return bpf_htons((__u16)((((__u64)hash * (VXLAN_SPORT_MAX - VXLAN_SPORT_MIN)) >> 32) +
				 VXLAN_SPORT_MIN));
}

/* RFC 6040 normal mode, as INET_ECN_encapsulate(): copy ECT bits, map CE to ECT(0). */
static __always_inline __u8 vxlan_outer_tos(__u8 inner_tos)
{
	__u8 ecn = inner_tos & INET_ECN_MASK;

	return ecn == INET_ECN_CE ? INET_ECN_ECT_0 : ecn;
}

/* A GSO packet whose segments plus our headers still fit the underlay keeps its gso_size
 * (BPF_F_ADJ_ROOM_FIXED_GSO): the pod MTU already leaves room for VXLAN, and shrinking the MSS
 * would cost 50 bytes per segment. It is also the only way the kernel accepts UDP GSO. pod_egress
 * only encapsulates segments that fit (bigger ones get ICMP or go to the host stack); shrinking
 * is the fallback should another caller not check. */
static __always_inline __u64 vxlan_gso_flag(const struct __sk_buff *skb, const struct node_cfg *cfg,
					    __u32 l3l4_hlen)
{
	if (skb->gso_size && skb->gso_size + l3l4_hlen <= cfg->mtu)
		return BPF_F_ADJ_ROOM_FIXED_GSO;
	return 0;
}

/* Native mode: push outer Ethernet/IPv4/UDP/VXLAN/inner Ethernet in front of the pod's IPv4
 * packet and redirect to the underlay NIC. l3l4_hlen is the inner IP + L4 header length, for the
 * GSO decision above. */
static __always_inline int vxlan_encap_native(struct __sk_buff *skb, const struct node_cfg *cfg,
					      __be32 remote, const struct node *node, __u32 l3l4_hlen)
{
	const __u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
			    BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	struct ethhdr *eth, *inner_eth;
	struct iphdr *ip, *outer;
	struct udphdr *udp;
	struct vxlanhdr *vx;
	__be16 df;
	__u8 tos;
	__u32 hash, len;

	if (pkt_pull(skb, ETH_HLEN + sizeof(struct iphdr)) < 0)
		return -DROP_INVALID;
	eth = pkt_data(skb);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > pkt_end(skb))
		return -DROP_INVALID;
	df = ip->frag_off & bpf_htons(IP_DF);
	tos = vxlan_outer_tos(ip->tos);
	/* The inner flow's hash: computed before the outer headers exist. */
	hash = bpf_get_hash_recalc(skb);

	if (skb->len - ETH_HLEN + ENCAP_OVERHEAD > 0xffff && !skb->gso_size)
		return -DROP_PKT_TOO_BIG;
	if (bpf_skb_adjust_room(skb, ENCAP_OVERHEAD, BPF_ADJ_ROOM_MAC,
				flags | vxlan_gso_flag(skb, cfg, l3l4_hlen)) < 0)
		return -DROP_ENCAP_FAILED;

	eth = pkt_data(skb);
	outer = (void *)(eth + 1);
	udp = (void *)(outer + 1);
	vx = (void *)(udp + 1);
	inner_eth = (void *)(vx + 1);
	if ((void *)(inner_eth + 1) > pkt_end(skb))
		return -DROP_ENCAP_FAILED;

	len = skb->len - ETH_HLEN;
	/* For a GSO packet the lengths are rewritten per segment by the tunnel GSO code. */
	if (len > 0xffff)
		len = 0xffff;

	/* outer Ethernet: when the next hop is not resolved, redirect_neigh fills it in */
	if (node->flags & NODE_NEXTHOP_VALID)
		eth_set_macs(eth, node->nexthop_mac, cfg->underlay_mac);
	eth->h_proto = bpf_htons(ETH_P_IP);

	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(len);
	outer->id = (__be16)bpf_get_prandom_u32();
	outer->frag_off = df;
	outer->ttl = VXLAN_TTL;
	outer->protocol = IPPROTO_UDP;
	outer->check = 0;
	outer->saddr = cfg->node_ip;
	outer->daddr = remote;
	outer->check = ipv4_hdr_csum(outer);

	udp->source = vxlan_src_port(hash);
	udp->dest = bpf_htons(VXLAN_PORT);
	udp->len = bpf_htons(len - sizeof(struct iphdr));
	udp->check = 0; /* allowed for IPv4 and what Flannel/Linux send by default */

	vx->flags = VXLAN_FLAG_VNI;
	vx->vni = bpf_htonl(cfg->vni << 8);

	/* A Flannel peer drops frames whose destination MAC is not its VTEP MAC. */
	eth_set_macs(inner_eth, node->vtep_mac, cfg->vtep_mac);
	inner_eth->h_proto = bpf_htons(ETH_P_IP);

	if (node->flags & NODE_NEXTHOP_VALID)
		return bpf_redirect(cfg->underlay_ifindex, 0);
	/* FIB lookup + neighbour resolution of the outer destination by the kernel. */
	return bpf_redirect_neigh(cfg->underlay_ifindex, 0, 0, 0);
}

/* Device mode: leave the encapsulation to the collect_md VXLAN device. Only the tunnel key
 * (remote in host byte order!) and the inner MACs are ours. Also used by overlay_egress for host
 * traffic, where the packet is already on its way out of the device (redirect == 0). */
static __always_inline int vxlan_set_tunnel(struct __sk_buff *skb, const struct node_cfg *cfg,
					    __be32 remote, const struct node *node)
{
	struct bpf_tunnel_key key = {};
	struct ethhdr *eth;
	struct iphdr *ip;
	__u64 flags = 0;

	if (pkt_pull(skb, ETH_HLEN + sizeof(struct iphdr)) < 0)
		return -DROP_INVALID;
	eth = pkt_data(skb);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (ip->frag_off & bpf_htons(IP_DF))
		flags |= BPF_F_DONT_FRAGMENT;
	eth_set_macs(eth, node->vtep_mac, cfg->vtep_mac);

	key.remote_ipv4 = bpf_ntohl(remote);
	key.tunnel_id = cfg->vni;
	key.tunnel_ttl = VXLAN_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), flags) < 0)
		return -DROP_ENCAP_FAILED;
	return 0;
}

/* Strips outer IPv4/UDP/VXLAN/inner Ethernet, keeping the outer Ethernet header in front of the
 * inner IPv4 packet. The caller checked the frame (option-less outer IPv4, VNI, source).
 *
 * GSO (GRO aggregates built by the NIC's UDP tunnel GRO) is the delicate part: on 6.18 the decap
 * flags of bpf_skb_adjust_room are DECAP_L3_IPV4/IPV6 only, which just switch skb->protocol
 * between families (a no-op for IPv4 in IPv4). skb->encapsulation and SKB_GSO_UDP_TUNNEL stay set,
 * and a pod receiving that aggregate would mis-segment or mis-checksum it. So aggregates are tried
 * with BPF_F_ADJ_ROOM_DECAP_L4_UDP (newer kernels clear that state) and, when the kernel rejects
 * the flag, returned as 1 for the kernel VXLAN device, which resets it properly
 * (iptunnel_pull_offloads). Plain packets decapsulate on any kernel with flags 0. */
static __always_inline int vxlan_decap(struct __sk_buff *skb)
{
	__u64 flags = 0;

	if (skb->gso_size)
		flags = BPF_F_ADJ_ROOM_DECAP_L4_UDP | BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
	if (bpf_skb_adjust_room(skb, -(__s32)ENCAP_OVERHEAD, BPF_ADJ_ROOM_MAC, flags) < 0)
		return skb->gso_size ? 1 : -DROP_ENCAP_FAILED;
	return 0;
}

#endif
