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
 * and the pod's connect() fails at once; if it applies the change while the answer is on the wire,
 * it still delivers it (lib/peer_answer.h). An error about a packet to a service backend is
 * translated back to the frontend there (lib/lb_xlate.h, lb_xlate_rev_icmp). The frame is
 * rewritten in place (tunnel_unreach_rewrite says why not decapsulated and re-encapsulated).
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
#include "endpoints.h"
#include "routes.h"
#include "fwd.h"

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

/* The answer's inner IPv4 packet: ICMP host unreachable quoting the offending packet's first
 * ICMP_UNREACH_QUOTE bytes (zero-padded when shorter, as lib/icmp.h does). */
struct tunnel_unreach_msg {
	struct iphdr ip;
	struct icmphdr icmp;
	__u8 quote[ICMP_UNREACH_QUOTE];
};

/* Fills in msg's IPv4 header (this node's IP to daddr) and its ICMP header (type, code) around
 * the quote already in place. Returns 0, or -1. */
static __always_inline int tunnel_unreach_msg_seal(struct tunnel_unreach_msg *msg, const struct node_cfg *cfg,
						   __be32 daddr, __u8 tos, __u8 type, __u8 code)
{
	__s64 sum;

	msg->ip.version = 4;
	msg->ip.ihl = 5;
	msg->ip.tos = tos;
	msg->ip.tot_len = bpf_htons(sizeof(*msg));
	msg->ip.id = (__be16)bpf_get_prandom_u32();
	msg->ip.ttl = ICMP_ERR_TTL;
	msg->ip.protocol = IPPROTO_ICMP;
	msg->ip.saddr = cfg->node_ip;
	msg->ip.daddr = daddr;
	msg->ip.check = ipv4_hdr_csum(&msg->ip);
	msg->icmp.type = type;
	msg->icmp.code = code;
	sum = bpf_csum_diff(0, 0, (__be32 *)&msg->icmp, sizeof(msg->icmp) + sizeof(msg->quote), 0);
	if (sum < 0)
		return -1;
	msg->icmp.checksum = csum_fold32((__u32)sum);
	return 0;
}

/* Builds the error (type, code) on the stack from the frame's inner packet: from this node's IP to
 * the inner source. Returns 0, or -1. */
static __always_inline int tunnel_unreach_msg_build(struct __sk_buff *skb, const struct node_cfg *cfg,
						    struct tunnel_unreach_msg *msg, __u8 type, __u8 code)
{
	__u32 n = skb->len - VXLAN_INNER_IP_OFF; /* tunnel_unreach_answerable: more than an IPv4 header */

	if (n > sizeof(msg->quote))
		n = sizeof(msg->quote);
	if (n < sizeof(struct iphdr) || bpf_skb_load_bytes(skb, VXLAN_INNER_IP_OFF, msg->quote, n) < 0)
		return -1;
	return tunnel_unreach_msg_seal(msg, cfg, ((struct iphdr *)msg->quote)->saddr,
				       (((struct iphdr *)msg->quote)->tos & IPTOS_TOS_MASK) |
					       IPTOS_PREC_INTERNETCONTROL,
				       type, code);
}

/* Rewrites the VXLAN frame in place into VXLAN to remote carrying msg. Neither decapsulating nor
 * lib/icmp.h's icmp_error: a frame another pod's encapsulation sent over a veth still carries
 * skb->encapsulation (decapsulating does not clear it before 6.19), and bpf_skb_change_tail,
 * which icmp_error trims with, refuses such an skb (-ENOTSUPP); so do the ENCAP flags of
 * bpf_skb_adjust_room (-EALREADY). One plain bpf_skb_adjust_room at the MAC header sizes the
 * frame instead (everything after the Ethernet header is written anew), then the headers and msg
 * are written over it. A small plain packet needs none of the offload state the flags record. */
static __always_inline int tunnel_unreach_rewrite(struct __sk_buff *skb, const struct node_cfg *cfg,
						  __be32 remote, const struct node *node,
						  const struct tunnel_unreach_msg *msg)
{
	const __u32 want = VXLAN_INNER_IP_OFF + sizeof(*msg);

	if (skb->len != want && bpf_skb_adjust_room(skb, (__s32)want - (__s32)skb->len, BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;
	if (skb->len != want || pkt_pull(skb, VXLAN_INNER_IP_OFF) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, VXLAN_INNER_IP_OFF, msg, sizeof(*msg), 0) < 0)
		return -1;
	return vxlan_push_headers(skb, cfg, remote, node, 0, 0, bpf_get_prandom_u32());
}

/* The second half of a handshake caught in the window: a SYN-ACK dropped toward an unreachable
 * domain. The server's SYN got through before one of the two nodes applied the change, and the
 * answer to the server (above, or pod_egress's) does not help the client, whose connect() would
 * wait for its SYN's retransmission (1 s). So the client is told instead, as if its own SYN had
 * been answered: msg becomes "host unreachable" from this node to the client, quoting the SYN the
 * client sent (addresses and ports reversed, sequence number the SYN-ACK's acknowledgment - 1,
 * which is what the client's socket checks). Reads the IPv4 + TCP header at off; 0 when it is
 * a SYN-ACK (msg built, *client set), else -1. */
static __always_inline int tunnel_unreach_synack_msg(struct __sk_buff *skb, __u32 off, const struct node_cfg *cfg,
						     struct tunnel_unreach_msg *msg, __be32 *client)
{
	struct iphdr *qip = (void *)msg->quote;
	struct tcphdr *qtcp = (void *)(qip + 1);
	struct {
		struct iphdr ip;
		struct tcphdr tcp;
	} h;

	if (bpf_skb_load_bytes(skb, off, &h, sizeof(h)) < 0)
		return -1;
	if (h.ip.version != 4 || h.ip.ihl != 5 || h.ip.protocol != IPPROTO_TCP || (h.ip.frag_off & bpf_htons(IP_OFFSET)))
		return -1;
	if (!h.tcp.syn || !h.tcp.ack || h.tcp.rst || h.tcp.fin)
		return -1;
	qip->version = 4;
	qip->ihl = 5;
	qip->tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct tcphdr));
	qip->ttl = ICMP_ERR_TTL;
	qip->protocol = IPPROTO_TCP;
	qip->saddr = h.ip.daddr;
	qip->daddr = h.ip.saddr;
	qip->check = ipv4_hdr_csum(qip);
	qtcp->source = h.tcp.dest;
	qtcp->dest = h.tcp.source;
	qtcp->seq = bpf_htonl(bpf_ntohl(h.tcp.ack_seq) - 1);
	qtcp->doff = 5;
	qtcp->syn = 1;
	qtcp->window = h.tcp.window;
	if (tunnel_unreach_msg_seal(msg, cfg, h.ip.daddr, IPTOS_PREC_INTERNETCONTROL, ICMP_DEST_UNREACH,
				    ICMP_HOST_UNREACH) < 0)
		return -1;
	*client = h.ip.daddr;
	return 0;
}

/* Rewrites the frame in place into Ethernet + msg to the local pod ep (everything after the
 * Ethernet header written anew, as tunnel_unreach_rewrite does) and delivers it. */
static __always_inline int tunnel_unreach_deliver(struct __sk_buff *skb, const struct endpoint *ep,
						  const struct tunnel_unreach_msg *msg)
{
	const __u32 want = ETH_HLEN + sizeof(*msg);
	struct ethhdr *eth;

	if (skb->len != want && bpf_skb_adjust_room(skb, (__s32)want - (__s32)skb->len, BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;
	if (skb->len != want || bpf_skb_store_bytes(skb, ETH_HLEN, msg, sizeof(*msg), 0) < 0)
		return -1;
	if (pkt_pull(skb, ETH_HLEN) < 0)
		return -1;
	eth = pkt_data(skb);
	if ((void *)(eth + 1) > pkt_end(skb))
		return -1;
	eth->h_proto = bpf_htons(ETH_P_IP);
	return fwd_to_endpoint(skb, ep);
}

/* The answer through the tunnel: msg built as the ICMP error type/code about the frame's inner
 * packet, the frame rewritten into VXLAN to the peer node at peer_ip carrying it, counted as
 * ICMP_SENT. The caller counted the drop and checked answerable and budget. */
static __always_inline int tunnel_answer(struct __sk_buff *skb, __u32 dir, const struct node_cfg *cfg,
					 struct tunnel_unreach_msg *msg, __be32 peer_ip, const struct node *peer,
					 __u8 type, __u8 code)
{
	int ret;

	if (tunnel_unreach_msg_build(skb, cfg, msg, type, code) < 0)
		return TC_ACT_SHOT;
	ret = tunnel_unreach_rewrite(skb, cfg, peer_ip, peer, msg);
	if (ret < 0)
		return TC_ACT_SHOT;
	metric_count(dir, REASON_ICMP_SENT, skb->len);
	return ret;
}

/* The exit of node_ingress for VXLAN dropped as DROP_DOMAIN_UNREACHABLE: counted, then answered
 * through the tunnel when the packet may be answered and the budget allows (see the top). Out of
 * line (a BPF subprogram): inlined, its stack (the message) would add to node_ingress's, beyond
 * the 512 bytes a call chain may use with node_lb. */
static __noinline __attribute__((unused)) int tc_exit_tunnel_unreach(struct __sk_buff *skb, __u32 dir, const struct node_cfg *cfg)
{
	struct tunnel_unreach_msg msg = {};
	struct endpoint *ep;
	struct node *peer;
	__be32 peer_ip, client;
	int ret;

	metric_count(dir, DROP_DOMAIN_UNREACHABLE, skb->len);
	event_emit(skb, dir, DROP_DOMAIN_UNREACHABLE, TC_ACT_SHOT);
	if (!tunnel_unreach_answerable(skb, &peer_ip))
		return TC_ACT_SHOT;
	peer = node_lookup(peer_ip);
	if (!peer || !tunnel_unreach_allowed())
		return TC_ACT_SHOT;
	if (tunnel_unreach_synack_msg(skb, VXLAN_INNER_IP_OFF, cfg, &msg, &client) == 0) {
		/* a local client's handshake: tell the client, not the server */
		ep = endpoint_lookup(client);
		if (!ep)
			return TC_ACT_SHOT;
		ret = tunnel_unreach_deliver(skb, ep, &msg);
		if (ret < 0)
			return TC_ACT_SHOT;
		metric_count(dir, REASON_ICMP_SENT, skb->len);
		return ret;
	}
	return tunnel_answer(skb, dir, cfg, &msg, peer_ip, peer, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH);
}

/* The exit of node_ingress for VXLAN to a local pod whose inner TTL ran out at this node's hop
 * (lib/ttl.h): counted under DROP_TTL_EXCEEDED, then answered with "time exceeded in transit"
 * from this node's IP back through the tunnel to the sending node, which delivers it to its pod
 * (traceroute's hop 2 across nodes). Same rules and budget as the answers above. */
static __noinline __attribute__((unused)) int tc_exit_tunnel_time_exceeded(struct __sk_buff *skb, __u32 dir,
									  const struct node_cfg *cfg)
{
	struct tunnel_unreach_msg msg = {};
	struct node *peer;
	__be32 peer_ip;

	metric_count(dir, DROP_TTL_EXCEEDED, skb->len);
	event_emit(skb, dir, DROP_TTL_EXCEEDED, TC_ACT_SHOT);
	if (!tunnel_unreach_answerable(skb, &peer_ip))
		return TC_ACT_SHOT;
	peer = node_lookup(peer_ip);
	if (!peer || !tunnel_unreach_allowed())
		return TC_ACT_SHOT;
	return tunnel_answer(skb, dir, cfg, &msg, peer_ip, peer, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL);
}

/* The exit of pod_egress for a local server's SYN-ACK dropped as DROP_DOMAIN_UNREACHABLE: this
 * node applied the change after the client's SYN got in. The remote node (the client's) has not
 * applied it yet, or it would have stopped the SYN, so it still accepts VXLAN from here: the
 * client gets "host unreachable" through the tunnel (tunnel_unreach_synack_msg), within the same
 * budget, from whatever the route's tunnel endpoint now is. Returns -1 when the packet is not
 * such a SYN-ACK or cannot be answered this way; the caller then answers the server as before. */
static __noinline __attribute__((unused)) int tc_exit_synack_unreach(struct __sk_buff *skb, __u32 dir, const struct node_cfg *cfg)
{
	struct tunnel_unreach_msg msg = {};
	struct route *route;
	struct node *node;
	__be32 client;
	int ret;

	if (skb->gso_size || tunnel_unreach_synack_msg(skb, ETH_HLEN, cfg, &msg, &client) < 0)
		return -1;
	route = route_lookup(client);
	if (!route || (route->flags & ROUTE_LOCAL))
		return -1;
	node = node_lookup(route->node_ip);
	if (!node || !tunnel_unreach_allowed())
		return -1;
	metric_count(dir, DROP_DOMAIN_UNREACHABLE, skb->len);
	event_emit(skb, dir, DROP_DOMAIN_UNREACHABLE, TC_ACT_SHOT);
	ret = tunnel_unreach_rewrite(skb, cfg, route->node_ip, node, &msg);
	if (ret < 0)
		return TC_ACT_SHOT;
	metric_count(dir, REASON_ICMP_SENT, skb->len);
	return ret;
}

#endif
