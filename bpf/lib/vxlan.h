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

/* Writes the outer Ethernet/IPv4/UDP/VXLAN and inner Ethernet headers into the room
 * bpf_skb_adjust_room made in front of an IPv4 packet, and sends the frame out of the underlay NIC
 * toward remote. tos and df go to the outer IPv4 header; hash picks the UDP source port. Shared by
 * native encapsulation and the tunnel answers of lib/tunnel_unreach.h. */
static __always_inline int vxlan_push_headers(struct __sk_buff *skb, const struct node_cfg *cfg,
					      __be32 remote, const struct node *node, __u8 tos,
					      __be16 df, __u32 hash)
{
	struct ethhdr *eth, *inner_eth;
	struct iphdr *outer;
	struct udphdr *udp;
	struct vxlanhdr *vx;
	__u32 len;

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
	udp->check = 0; /* allowed for IPv4 */

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

/* Whether bpf_skb_adjust_room takes BPF_F_ADJ_ROOM_ENCAP_L2_ETH (Linux 5.12): the loader sets it
 * from its probe (pkg/datapath, Features.EncapL2Eth). Older kernels reject the flag (-EINVAL).
 * Without it the encapsulated packet's inner protocol is recorded as IPv4 instead of Ethernet
 * (ETH_P_TEB); the kernel's software segmentation of a UDP tunnel GSO packet handles both the
 * same (the inner MAC length comes from ENCAP_L2(ETH_HLEN)), but NIC drivers that offload VXLAN
 * segmentation only for ETH_P_TEB leave such packets to software segmentation. */
volatile const __u8 HAVE_ENCAP_L2_ETH = 1;

/* Whether native encapsulation can carry the packet: a GSO packet longer than the outer IPv4 and
 * UDP length fields allow (BIG TCP: up to 192 KiB from a pod or from GRO on the NIC, the agent's
 * --ipv4-big-tcp) cannot be written as one VXLAN packet; the collect_md device takes it instead
 * (vxlan_set_tunnel + a redirect to it), whose transmit segments it first, as for any GSO packet
 * larger than the device's GSO size (64 KiB; validate_xmit_skb). */
static __always_inline int vxlan_native_fits(const struct __sk_buff *skb)
{
	return skb->len - ETH_HLEN + ENCAP_OVERHEAD <= 0xffff;
}

/* Native mode: push outer Ethernet/IPv4/UDP/VXLAN/inner Ethernet in front of the pod's IPv4
 * packet and redirect to the underlay NIC. l3l4_hlen is the inner IP + L4 header length, for the
 * GSO decision above. */
static __always_inline int vxlan_encap_native(struct __sk_buff *skb, const struct node_cfg *cfg,
					      __be32 remote, const struct node *node, __u32 l3l4_hlen)
{
	const __u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
			    (HAVE_ENCAP_L2_ETH ? BPF_F_ADJ_ROOM_ENCAP_L2_ETH : 0) |
			    BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 df;
	__u8 tos;
	__u32 hash;

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

	return vxlan_push_headers(skb, cfg, remote, node, tos, df, hash);
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
	__u64 flags = BPF_F_ZERO_CSUM_TX; /* no outer UDP checksum, as the native encap path */

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
	if (bpf_skb_set_tunnel_key(skb, &key, TUNNEL_KEY_SIZE, flags) < 0)
		return -DROP_ENCAP_FAILED;
	return 0;
}

/* ---- Receiving: what the kernel checks before its VXLAN device sees a frame ----
 *
 * node_ingress decapsulates VXLAN to local pods itself, ahead of the kernel's receive path, so it
 * makes that path's checks of the outer packet first (ip_rcv_core, __udp4_lib_rcv, vxlan_rcv):
 *   destination  multicast or broadcast: no peer sends that (Flannel and edgeplane send unicast
 *                to the node) -> VXLAN_NOT_UNICAST. Another unicast address is not decapsulated
 *                here at all (node.c: the kernel forwards it, or its device takes it)
 *   IPv4 header  its checksum (20 bytes: the header has no options here) -> BAD_CHECKSUM; the total
 *                length reaches the inner Ethernet header -> else INVALID. What follows the
 *                datagram in the frame is Ethernet padding, which the kernel trims and which is
 *                never read as part of the packet here
 *   UDP length   equal to the IPv4 payload -> else INVALID (the kernel trims to a shorter one; no
 *                VXLAN sender makes one, and an inner packet read past it would be the padding's)
 *   UDP checksum 0 is allowed over IPv4 (and what edgeplane sends). A non-zero one (a kernel VXLAN
 *                device, Flannel's included, checksums its IPv4 frames by default) is trusted when
 *                the skb says it was verified: CHECKSUM_UNNECESSARY
 *                (bpf_csum_level(BPF_CSUM_LEVEL_QUERY) >= 0) means the NIC verified the first L4
 *                checksum of the packet, the outer UDP's, or GRO did (udp4_gro_receive validates
 *                the checksum of every frame to a UDP tunnel port, edgeplane.1's included, and
 *                marks it so), which is what the kernel's UDP receive trusts too. Other frames are
 *                summed here (bpf_skb_load_bytes + bpf_csum_diff in 256-byte pieces) and
 *                decapsulated when the sum holds. When it does not, the frame is not decapsulated
 *                here but left whole to the kernel: BPF cannot tell a bad checksum from one that
 *                is not final yet (CHECKSUM_PARTIAL, a sender on the same host through a veth or
 *                virtio: the outer field partial, or the outer final but an inner TCP/UDP
 *                checksum partial under local checksum offload), which the kernel trusts. The
 *                kernel drops a bad one (UDP InCsumErrors) and gives the rest to edgeplane.1,
 *                whose overlay_ingress checks it. (CHECKSUM_COMPLETE could be used through
 *                bpf_csum_update, but its sum also covers Ethernet padding.)
 *   VXLAN header the I flag and our VNI (node.c: VNI_MISMATCH); reserved bits set -> INVALID, as
 *                vxlan_rcv drops "unprocessed flags" (the device has neither GBP nor GPE)
 * GRO aggregates (gso_size set) skip the length and checksum checks: GRO built them from frames
 * whose IPv4 header checksum (inet_gro_receive) and UDP checksum it verified and rewrote their
 * lengths (inet_gro_complete, udp_gro_complete). Outer IPv4 options and fragments are left to the
 * kernel device whole (node.c). */

#define VXLAN_CSUM_PIECE 256
/* Pieces for the largest UDP datagram in an IPv4 packet. */
#define VXLAN_CSUM_PIECES ((0xffff - sizeof(struct iphdr) + VXLAN_CSUM_PIECE - 1) / VXLAN_CSUM_PIECE)

/* The IPv4 pseudo header as the UDP checksum covers it. */
struct vxlan_pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

/* A header whose checksum field is right sums (with it) to 0. */
static __always_inline int vxlan_ip_csum_ok(const struct iphdr *ip)
{
	return ipv4_hdr_csum(ip) == 0;
}

/* Whether the UDP datagram of ulen bytes at VXLAN_UDP_OFF sums with its pseudo header to the
 * checksum it carries. Kept out of line (a BPF subprogram): only frames with a checksum that
 * nothing verified call it, and its loop is verified once for node.c's one call. */
static __noinline int vxlan_udp_csum_ok(struct __sk_buff *skb, __be32 saddr, __be32 daddr, __u32 ulen)
{
	struct vxlan_pseudo_hdr ph = {
		.saddr = saddr,
		.daddr = daddr,
		.proto = IPPROTO_UDP,
		.len = bpf_htons(ulen),
	};
	__u8 piece[VXLAN_CSUM_PIECE];
	__u32 off = 0, n;
	__s64 sum;

	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	for (int i = 0; i < (int)VXLAN_CSUM_PIECES; i++) {
		if (sum < 0)
			return 0;
		n = ulen - off; /* off <= ulen: it only grows by whole pieces that fit */
		if (n == 0)
			break;
		if (n < VXLAN_CSUM_PIECE) {
			/* the last piece, zero-padded: the zeros add nothing, and an odd last
			 * byte is summed as UDP says (padded with a zero byte). n is 1..255;
			 * written so that the verifier sees it too. */
			barrier_var(n);
			n = ((n - 1) & (VXLAN_CSUM_PIECE - 1)) + 1;
			__builtin_memset(piece, 0, sizeof(piece));
			if (bpf_skb_load_bytes(skb, VXLAN_UDP_OFF + off, piece, n) < 0)
				return 0;
			sum = bpf_csum_diff(0, 0, (__be32 *)piece, VXLAN_CSUM_PIECE, (__u32)sum);
			break;
		}
		if (bpf_skb_load_bytes(skb, VXLAN_UDP_OFF + off, piece, VXLAN_CSUM_PIECE) < 0)
			return 0;
		sum = bpf_csum_diff(0, 0, (__be32 *)piece, VXLAN_CSUM_PIECE, (__u32)sum);
		off += VXLAN_CSUM_PIECE;
	}
	return sum >= 0 && csum_fold32((__u32)sum) == 0;
}

/* The outer checks above for a VXLAN frame to the node IP with an option-less outer IPv4 header
 * (parse_ipv4 has checked its total length against the frame). Returns 0, 1 for a frame to leave
 * to the kernel (a UDP checksum the sum here does not confirm) or -reason. */
static __always_inline int vxlan_outer_check(struct __sk_buff *skb)
{
	struct iphdr *ip;
	struct udphdr *udp;
	struct vxlanhdr *vx;
	__be32 saddr, daddr, reserved;
	__u32 tot, ulen;

	if (pkt_pull(skb, VXLAN_INNER_ETH_OFF) < 0)
		return -DROP_INVALID;
	ip = pkt_data(skb) + VXLAN_OUTER_IP_OFF;
	udp = pkt_data(skb) + VXLAN_UDP_OFF;
	vx = pkt_data(skb) + VXLAN_HDR_OFF;
	if ((void *)(vx + 1) > pkt_end(skb))
		return -DROP_INVALID;
	reserved = (vx->flags & ~VXLAN_FLAG_VNI) | (vx->vni & bpf_htonl(0xff));
	if (!skb->gso_size) {
		if (!vxlan_ip_csum_ok(ip))
			return -DROP_BAD_CHECKSUM;
		tot = bpf_ntohs(ip->tot_len);
		ulen = bpf_ntohs(udp->len);
		if (tot < ENCAP_OVERHEAD || ulen != tot - sizeof(struct iphdr))
			return -DROP_INVALID;
		if (udp->check && bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY) < 0) {
			saddr = ip->saddr;
			daddr = ip->daddr;
			if (!vxlan_udp_csum_ok(skb, saddr, daddr, ulen))
				return 1; /* the kernel's to judge: see above */
		}
	}
	return reserved ? -DROP_INVALID : 0;
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
