/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors the datapath sends itself, built in place from the packet that caused them, the way
 * a router answers (RFC 792, RFC 1191, RFC 1812 4.3.2.3):
 *
 *   Ethernet  the offending frame's MACs swapped (to the sender, from the gateway it sent to)
 *   IPv4      from `saddr`, to the offending source, TOS precedence "internetwork control", no DF
 *   ICMP      type, code and the 32-bit word after the checksum
 *   quote     the offending packet from its IP header on: ICMP_ERR_QUOTE bytes, which is what
 *             Linux's icmp_send() quotes (the whole error fits in 576 bytes)
 *
 * Why quote 548 bytes and not just the header + 8 (RFC 792's minimum): bpf_skb_change_tail refuses
 * to cut a CHECKSUM_PARTIAL packet before csum_start + csum_offset + 2, which for TCP is 18 bytes
 * into its header, and pods hand the veth exactly such packets. A longer quote also serves
 * receivers that match errors on more than the ports (tunnels, IPsec).
 *
 * Trimming with bpf_skb_change_tail also resets the GSO state, so an oversized GSO packet turns
 * into one plain 590-byte frame. The skb keeps its ip_summed: with CHECKSUM_PARTIAL the receiving
 * stack treats the ICMP checksum as verified, and we compute it in full anyway. */
#ifndef EDGEPLANE_ICMP_H
#define EDGEPLANE_ICMP_H

#include "common.h"
#include "csum.h"
#include "metrics.h"
#include "parse.h"

#ifndef ICMP_EXC_TTL
#define ICMP_EXC_TTL 0 /* time exceeded: TTL count exceeded in transit */
#endif

#define ICMP_ERR_MAX 576 /* IPv4 length of the errors we send */
#define ICMP_ERR_HLEN (sizeof(struct iphdr) + sizeof(struct icmphdr))
#define ICMP_ERR_QUOTE (ICMP_ERR_MAX - ICMP_ERR_HLEN)
#define ICMP_ERR_TTL 64
/* Errors about packets to unreachable domains quote less: those are mostly small (SYNs). */
#define ICMP_UNREACH_QUOTE (sizeof(struct iphdr) + 64)
#define ICMP_ERR_PAD_MAX ICMP_UNREACH_QUOTE
/* bpf_csum_diff sums at most 512 bytes per call */
#define CSUM_DIFF_MAX 512

/* Rewrites the Ethernet + IPv4 frame at the start of skb into the ICMP error type/code with `rest`
 * as the 32-bit word after the checksum, from saddr, quoting `quote` bytes of the packet (a
 * constant: the checksum is summed in fixed-size pieces). A packet shorter than its quote is
 * padded with zeros: bpf_skb_change_tail grows a packet with whatever the buffer held, which must
 * not leave the node. Returns 0, or -1 when the packet cannot be turned into an error (then the
 * caller just drops it). */
static __always_inline int icmp_error(struct __sk_buff *skb, __be32 saddr, __u8 type, __u8 code,
				      __be32 rest, const __u32 quote)
{
	__u8 to_mac[ETH_ALEN], from_mac[ETH_ALEN];
	__u32 len = skb->len, pad;
	struct icmphdr *icmp;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 daddr;
	__s64 sum;
	__u8 tos;

	if (len < ETH_HLEN + sizeof(*ip))
		return -1;
	if (pkt_pull(skb, ETH_HLEN + sizeof(*ip)) < 0)
		return -1;
	eth = pkt_data(skb);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > pkt_end(skb))
		return -1;
	__builtin_memcpy(to_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(from_mac, eth->h_dest, ETH_ALEN);
	daddr = ip->saddr;
	tos = (ip->tos & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL; /* as icmp_send() */

	/* [eth][quote] then [eth][new IPv4 + ICMP, zeroed][quote] */
	if (bpf_skb_change_tail(skb, ETH_HLEN + quote, 0) < 0)
		return -1;
	if (len < ETH_HLEN + quote) {
		__u8 zeros[ICMP_ERR_PAD_MAX] = {};

		pad = ETH_HLEN + quote - len;
		if (pad > ICMP_ERR_PAD_MAX || pad == 0 ||
		    bpf_skb_store_bytes(skb, len, zeros, pad, 0) < 0)
			return -1;
	}
	if (bpf_skb_adjust_room(skb, ICMP_ERR_HLEN, BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;
	if (pkt_pull(skb, ETH_HLEN + ICMP_ERR_HLEN + quote) < 0)
		return -1;
	eth = pkt_data(skb);
	ip = (void *)(eth + 1);
	icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) + quote > pkt_end(skb))
		return -1;

	eth_set_macs(eth, to_mac, from_mac);
	eth->h_proto = bpf_htons(ETH_P_IP);

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = bpf_htons(ICMP_ERR_HLEN + quote);
	ip->id = (__be16)bpf_get_prandom_u32();
	ip->frag_off = 0;
	ip->ttl = ICMP_ERR_TTL;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = ipv4_hdr_csum(ip);

	icmp->type = type;
	icmp->code = code;
	icmp->checksum = 0;
	icmp->un.gateway = rest;
	if (sizeof(*icmp) + quote > CSUM_DIFF_MAX) {
		sum = bpf_csum_diff(0, 0, (__be32 *)icmp, CSUM_DIFF_MAX, 0);
		if (sum < 0)
			return -1;
		sum = bpf_csum_diff(0, 0, (__be32 *)((void *)icmp + CSUM_DIFF_MAX),
				    sizeof(*icmp) + quote - CSUM_DIFF_MAX, sum);
	} else {
		sum = bpf_csum_diff(0, 0, (__be32 *)icmp, sizeof(*icmp) + quote, 0);
	}
	if (sum < 0)
		return -1;
	icmp->checksum = csum_fold32((__u32)sum);
	return 0;
}

/* "Destination unreachable, fragmentation needed" with next-hop MTU mtu. Only packets longer than
 * a pod MTU (>= 576) get here, so the quote is always the full ICMP_ERR_QUOTE. */
static __always_inline int icmp_frag_needed(struct __sk_buff *skb, __be32 saddr, __u16 mtu)
{
	if (skb->len < ETH_HLEN + ICMP_ERR_QUOTE)
		return -1;
	return icmp_error(skb, saddr, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, bpf_htonl(mtu), ICMP_ERR_QUOTE);
}

/* Sends the error to the pod whose packet it answers: the packet came in on the tc ingress of the
 * pod's host-side veth, so the peer redirect to that same veth puts the error straight into the
 * pod's eth0 ingress: no qdisc, no checksum offload step that could touch the quote. */
static __always_inline int icmp_return_to_pod(struct __sk_buff *skb, __u32 dir)
{
	metric_count(dir, REASON_ICMP_SENT, skb->len);
	return bpf_redirect_peer(skb->ifindex, 0);
}

/* Whether an ICMP error may answer the packet (RFC 1122 3.2.2, RFC 1812 4.3.2.7): not about an
 * ICMP error, not about a non-first fragment. The packet starts with Ethernet + IPv4 (ihl checked). */
static __always_inline int icmp_may_answer(struct __sk_buff *skb, const struct iphdr *ip)
{
	struct icmphdr *icmp;

	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	if (ip->protocol != IPPROTO_ICMP)
		return 1;
	icmp = pkt_header(skb, ETH_HLEN + ip->ihl * 4, sizeof(*icmp));
	return icmp && (icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY);
}

/* overlay_egress's errors to the host's own sockets go back in through edgeplane.1's ingress with
 * this mark (icmp_return_to_host): overlay_ingress refuses packets without tunnel metadata, except
 * these. A redirect within one network namespace keeps skb->mark (skb_scrub_packet clears it only
 * across namespaces) and nothing runs between the two hooks; overlay_ingress clears it again, so
 * the host stack never sees it. */
#define ICMP_TO_HOST_MARK 0xed9e1c3bu

/* Sends an error from the tc egress of the overlay device to the host stack: redirected to the same
 * device's ingress, where the kernel receives it as the device's own (the swapped MACs make the
 * device's address the destination) and routes it to the socket or, for a forwarded sender, on. */
static __always_inline int icmp_return_to_host(struct __sk_buff *skb, __u32 dir)
{
	metric_count(dir, REASON_ICMP_SENT, skb->len);
	skb->mark = ICMP_TO_HOST_MARK;
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* Whether a packet on the overlay device's ingress is an error icmp_return_to_host turned around
 * (then the mark is cleared). One that came out of the tunnel is not, whatever its mark. */
static __always_inline int icmp_returned_to_host(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};

	if (skb->mark != ICMP_TO_HOST_MARK)
		return 0;
	if (bpf_skb_get_tunnel_key(skb, &key, TUNNEL_KEY_SIZE, 0) == 0)
		return 0;
	skb->mark = 0;
	return 1;
}

/* Counts skb as dropped with reason, then rewrites it into the ICMP error type/code from saddr.
 * The quote is the IP header plus 64 bytes, enough for any TCP header with options and for the
 * checksum rule above. Returns 0 when the error is ready to send, -1 when the drop stands. */
static __always_inline int icmp_error_for_drop(struct __sk_buff *skb, __u32 dir, __u32 reason, __u8 type,
					       __u8 code, __be32 saddr)
{
	metric_count(dir, reason, skb->len);
	event_emit(skb, dir, reason, TC_ACT_SHOT); /* before the rewrite: the offending tuple */
	return icmp_error(skb, saddr, type, code, 0, ICMP_UNREACH_QUOTE);
}

/* Sends an error about a packet that came in on the underlay NIC back out of it, to the hop it
 * came from (icmp_error swapped the frame's MACs). */
static __always_inline int icmp_return_to_nic(struct __sk_buff *skb, __u32 dir)
{
	metric_count(dir, REASON_ICMP_SENT, skb->len);
	return bpf_redirect(skb->ifindex, 0);
}

/* The exit of a TC program for a pod's packet dropped with reason and answered with "destination
 * unreachable" code from saddr, peer-redirected back into the pod. */
static __always_inline int tc_exit_unreach(struct __sk_buff *skb, __u32 dir, __u32 reason, __u8 code,
					   __be32 saddr)
{
	if (icmp_error_for_drop(skb, dir, reason, ICMP_DEST_UNREACH, code, saddr) < 0)
		return TC_ACT_SHOT;
	return icmp_return_to_pod(skb, dir);
}

/* A pod's packet to a network domain this node cannot reach: counted under
 * DROP_DOMAIN_UNREACHABLE, then answered with "host unreachable" from saddr so that the pod's
 * connect() fails at once (EHOSTUNREACH) instead of timing out. */
static __always_inline int tc_exit_host_unreach(struct __sk_buff *skb, __u32 dir, __be32 saddr)
{
	return tc_exit_unreach(skb, dir, DROP_DOMAIN_UNREACHABLE, ICMP_HOST_UNREACH, saddr);
}

/* A pod's packet to a service frontend without backends: counted under DROP_NO_SERVICE_BACKEND and
 * answered with "port unreachable" from the frontend's address, as kube-proxy's REJECT rule does,
 * so that connect() fails at once with ECONNREFUSED (TCP) and a connected UDP socket gets
 * ECONNREFUSED on its next call, instead of timing out. */
static __always_inline int tc_exit_port_unreach(struct __sk_buff *skb, __u32 dir, __be32 vip)
{
	return tc_exit_unreach(skb, dir, DROP_NO_SERVICE_BACKEND, ICMP_PORT_UNREACH, vip);
}

/* The same for the host's own packet (or a forwarded sender's) routed into the overlay device:
 * answered back into the host stack (icmp_return_to_host). */
static __always_inline int tc_exit_port_unreach_host(struct __sk_buff *skb, __u32 dir, __be32 vip)
{
	if (icmp_error_for_drop(skb, dir, DROP_NO_SERVICE_BACKEND, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, vip) < 0)
		return TC_ACT_SHOT;
	return icmp_return_to_host(skb, dir);
}

/* A routed packet whose TTL ran out at this hop (lib/ttl.h): counted under DROP_TTL_EXCEEDED,
 * rewritten into "time exceeded in transit" from saddr and peer-redirected back into the pod that
 * sent it, as the kernel's ip_forward answers. */
static __always_inline int tc_exit_time_exceeded(struct __sk_buff *skb, __u32 dir, __be32 saddr)
{
	if (icmp_error_for_drop(skb, dir, DROP_TTL_EXCEEDED, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, saddr) < 0)
		return TC_ACT_SHOT;
	return icmp_return_to_pod(skb, dir);
}

/* The same for a packet that came in on the underlay NIC (route mode, a NodePort client): the
 * error goes back out of the NIC to the hop it came from, the frame's MACs swapped. */
static __always_inline int tc_exit_time_exceeded_nic(struct __sk_buff *skb, __u32 dir, __be32 saddr)
{
	if (icmp_error_for_drop(skb, dir, DROP_TTL_EXCEEDED, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, saddr) < 0)
		return TC_ACT_SHOT;
	return icmp_return_to_nic(skb, dir);
}

/* The exit of a TC program for a packet dropped as too big whose sender is to be told: counted
 * under DROP_PKT_TOO_BIG like any drop (with its own length), then rewritten into the ICMP error,
 * counted as REASON_ICMP_SENT, and handed back to the sender. The packet came in on the tc ingress
 * of a pod's host-side veth, so the peer redirect to that same veth puts the error straight into
 * the pod's eth0 ingress: no qdisc, no checksum offload step that could touch the quote. When the
 * rewrite fails the drop stands. */
static __always_inline int tc_exit_frag_needed(struct __sk_buff *skb, __u32 dir, __be32 saddr, __u16 mtu)
{
	metric_count(dir, DROP_PKT_TOO_BIG, skb->len);
	event_emit(skb, dir, DROP_PKT_TOO_BIG, TC_ACT_SHOT); /* before the rewrite: the offending tuple */
	if (icmp_frag_needed(skb, saddr, mtu) < 0)
		return TC_ACT_SHOT;
	return icmp_return_to_pod(skb, dir);
}

/* The same as tc_exit_frag_needed for a packet that came in on the underlay NIC (an outside
 * client's to a NodePort whose remote backend's overlay it does not fit): the error goes back out
 * of the NIC to the hop it came from, the frame's MACs swapped. */
static __always_inline int tc_exit_frag_needed_nic(struct __sk_buff *skb, __u32 dir, __be32 saddr, __u16 mtu)
{
	metric_count(dir, DROP_PKT_TOO_BIG, skb->len);
	event_emit(skb, dir, DROP_PKT_TOO_BIG, TC_ACT_SHOT);
	if (icmp_frag_needed(skb, saddr, mtu) < 0)
		return TC_ACT_SHOT;
	return icmp_return_to_nic(skb, dir);
}

/* The same for a packet that came in on the underlay NIC (a cloud host's, routed to this node):
 * the error goes back out of the NIC to the hop it came from, the frame's MACs swapped. The
 * kernel would answer from its "unreachable" route too, but rate-limited per sender to a burst and
 * then one every two seconds; the datapath answers every packet, as it does for pods. */
static __always_inline int tc_exit_host_unreach_nic(struct __sk_buff *skb, __u32 dir, __be32 saddr)
{
	if (icmp_error_for_drop(skb, dir, DROP_DOMAIN_UNREACHABLE, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, saddr) < 0)
		return TC_ACT_SHOT;
	return icmp_return_to_nic(skb, dir);
}

#endif
