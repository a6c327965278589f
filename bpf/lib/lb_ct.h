/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service connection tracking on lb_ct_map (lb.h): the tuple of a packet, whether an entry is still
 * alive, and keeping the two entries of a connection in step.
 *
 * The TCP close is tracked per direction, as the kernel's conntrack does: the client's FIN sets
 * FIN_FWD, the backend's FIN_REV, an RST from either RST. A connection with one FIN is half-closed:
 * the other side may go on sending for minutes (an HTTP client that shuts down its write side
 * while the answer streams), so it keeps the close-wait timeout; both FINs give the time-wait
 * timeout, an RST the close timeout (lb.h, overridden by node_cfg).
 *
 * Each entry is refreshed by the packets of its own direction: FWD by the client's, REV by the
 * backend's. A packet also refreshes the other entry of its connection (one more lookup) when it
 * changes a flag (the first reply, FIN or RST) and when its entry's last_seen crosses a 2^30 ns
 * (~1.07 s) boundary, i.e. at most about once a second per direction of a busy connection. So both
 * entries stay within ~1 s of the connection's last packet in either direction, and each can be
 * judged on its own (by the datapath and by the agent's garbage collector) with the timeouts of
 * lb.h: a download whose client only ACKs, or a one-way UDP stream, keeps both alive. */
#ifndef EDGEPLANE_LB_CT_H
#define EDGEPLANE_LB_CT_H

#include "common.h"
#include "config.h"
#include "frag.h"
#include "lb.h"
#include "parse.h"

#define NSEC_PER_SEC 1000000000ULL
#define LB_CT_SYNC_SHIFT 30

/* The TCP header's flags byte (tcp_flag_byte()). */
#define LB_TCP_FIN 0x01
#define LB_TCP_SYN 0x02
#define LB_TCP_RST 0x04
#define LB_TCP_ACK 0x10

/* A TCP, UDP or SCTP packet's addresses and ports, parsed once. */
struct lb_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* LB_TCP_* (0 for UDP and SCTP, and for a later fragment) */
	__u8 l4_off;    /* from the start of the packet (at most 14 + 60) */
	__u8 no_l4;     /* a later fragment: ports from frag_map, no L4 header to rewrite */
};

/* A connection that came in on the underlay NIC to a frontend of scope EXTERNAL (node.c): set on
 * both entries, so that a reply leaving a local backend toward an address outside the cluster, or
 * coming back through the tunnel to the overlay address, is known to go out of the NIC (a bit of
 * lib/lb.h's enum lb_ct_flags kept here; pkg/maps/lb names it CTFlagExternal, and the garbage
 * collector reads only the flags that decide a timeout). */
#define LB_CT_EXTERNAL (1 << 3)

#define LB_SKIP 1       /* not something services translate: leave the packet alone */
#define LB_ICMP_ERROR 2 /* an ICMP error: maybe about a translated packet (lb_xlate_rev) */

/* A later fragment of a TCP, UDP or SCTP datagram (lib/frag.h): the ports its first fragment
 * recorded. Returns 0, or LB_SKIP when the first was not seen here (left alone, as before
 * fragments were tracked: it may be no Service's at all, e.g. reordered fragments of the node's
 * own traffic or of a peer's fragmented VXLAN, which the kernel reassembles). */
static __always_inline int lb_parse_later_fragment(const struct iphdr *ip, struct lb_tuple *t)
{
	struct frag_ports ports;
	__s64 packed;

	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP && t->proto != IPPROTO_SCTP)
		return LB_SKIP;
	packed = frag_lookup(t->saddr, t->daddr, ip->id, t->proto);
	if (packed < 0)
		return LB_SKIP;
	ports = frag_ports_unpack(packed);
	t->sport = ports.sport;
	t->dport = ports.dport;
	t->no_l4 = 1;
	return 0;
}

/* Fills t from the IPv4 packet ip (Ethernet at offset 0). Returns 0 for TCP, UDP and SCTP with
 * their ports (lb_xlate.h translates SCTP's addresses only), LB_ICMP_ERROR for ICMP "destination
 * unreachable" and "time exceeded", LB_SKIP for anything else, or -reason: DROP_INVALID for a
 * truncated TCP/UDP header. Fragments (lib/frag.h): the first records its ports, a later one gets
 * them (t->no_l4 set), or is LB_SKIP when its first was not seen; later fragments of other
 * protocols (ICMP) are LB_SKIP. Addresses, protocol and l4_off are set in every case. Packet pointers the
 * caller holds are invalid afterwards. */
static __always_inline int lb_parse(struct __sk_buff *skb, const struct iphdr *ip, struct lb_tuple *t)
{
	__u32 l4_off = ETH_HLEN + ip->ihl * 4;
	struct icmphdr *icmp;
	struct tcphdr *tcp;
	struct udphdr *udp;

	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->sport = 0;
	t->dport = 0;
	t->proto = ip->protocol;
	t->tcp_flags = 0;
	t->l4_off = l4_off;
	t->no_l4 = 0;
	if (ipv4_is_later_fragment(ip))
		return lb_parse_later_fragment(ip, t);
	switch (t->proto) {
	case IPPROTO_TCP:
		tcp = pkt_header(skb, l4_off, sizeof(*tcp));
		if (!tcp)
			return -DROP_INVALID;
		t->sport = tcp->source;
		t->dport = tcp->dest;
		t->tcp_flags = ((__u8 *)tcp)[13];
		break;
	case IPPROTO_UDP:
	case IPPROTO_SCTP: /* the common header starts with the two ports, as UDP's */
		udp = pkt_header(skb, l4_off, sizeof(*udp));
		if (!udp)
			return -DROP_INVALID;
		t->sport = udp->source;
		t->dport = udp->dest;
		break;
	case IPPROTO_ICMP:
		icmp = pkt_header(skb, l4_off, sizeof(*icmp));
		if (icmp && (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED))
			return LB_ICMP_ERROR;
		return LB_SKIP;
	default:
		return LB_SKIP;
	}
	/* The header again (reading the L4 header may have pulled), rather than keeping its id and
	 * flags across those calls: the stack has no room for them. */
	ip = pkt_header(skb, ETH_HLEN, sizeof(*ip));
	if (ip && ipv4_is_first_fragment(ip))
		frag_record(t->saddr, t->daddr, ip->id, t->proto, frag_ports_pack(t->sport, t->dport));
	return 0;
}

#define LB_CT_FIN_BOTH (LB_CT_FIN_FWD | LB_CT_FIN_REV)
#define LB_CT_CLOSE_FLAGS (LB_CT_CLOSING | LB_CT_FIN_BOTH | LB_CT_RST)

/* The close flags t's packet sets: fin (LB_CT_FIN_FWD for the client's packets, LB_CT_FIN_REV for
 * the backend's) for a FIN, LB_CT_RST for an RST, each with LB_CT_CLOSING (lb.h). */
static __always_inline __u16 lb_ct_closing(const struct lb_tuple *t, __u16 fin)
{
	if (t->tcp_flags & LB_TCP_RST)
		return LB_CT_CLOSING | LB_CT_RST;
	if (t->tcp_flags & LB_TCP_FIN)
		return LB_CT_CLOSING | fin;
	return 0;
}

/* configured is a node_cfg timeout in seconds, 0 for the default. */
static __always_inline __u64 lb_ct_seconds(__u32 configured, __u32 fallback)
{
	return (__u64)(configured ? configured : fallback) * NSEC_PER_SEC;
}

/* The timeout of a TCP entry with close flags: an RST closes; FINs from both sides, or an older
 * program's CLOSING of unknown direction, are the time-wait; one FIN is a half-close. An older
 * program's CLOSING may have been a half-close too: the time-wait keeps that connection while its
 * packets keep coming (each refreshes the entry), without keeping every connection that closed
 * before the upgrade for an hour. */
static __always_inline __u64 lb_ct_tcp_close_timeout(__u16 flags)
{
	const struct node_cfg *cfg = node_cfg_get();
	__u16 fins = flags & LB_CT_FIN_BOTH;

	if (flags & LB_CT_RST)
		return lb_ct_seconds(cfg ? cfg->ct_tcp_close : 0, LB_CT_TIMEOUT_TCP_CLOSE);
	if (fins == LB_CT_FIN_BOTH || !fins)
		return lb_ct_seconds(cfg ? cfg->ct_tcp_time_wait : 0, LB_CT_TIMEOUT_TCP_TIME_WAIT);
	return lb_ct_seconds(cfg ? cfg->ct_tcp_close_wait : 0, LB_CT_TIMEOUT_TCP_CLOSE_WAIT);
}

static __always_inline __u64 lb_ct_timeout(__u8 proto, __u16 flags)
{
	if (proto != IPPROTO_TCP)
		return LB_CT_TIMEOUT_OTHER * NSEC_PER_SEC;
	if (flags & LB_CT_CLOSE_FLAGS)
		return lb_ct_tcp_close_timeout(flags);
	if (flags & LB_CT_SEEN_REPLY)
		return LB_CT_TIMEOUT_TCP * NSEC_PER_SEC;
	return LB_CT_TIMEOUT_TCP_SYN * NSEC_PER_SEC;
}

/* Whether ct still stands for a connection at now. Another CPU may have stored a slightly later
 * last_seen than this CPU's now: a negative age is alive. */
static __always_inline int lb_ct_alive(const struct lb_ct *ct, __u8 proto, __u64 now)
{
	return (__s64)(now - ct->last_seen) < (__s64)lb_ct_timeout(proto, ct->flags);
}

/* Records a packet on ct (its own direction's entry) with the flags it sets, and refreshes the
 * entry under partner (see the top of the file). Concurrent packets of one connection on two CPUs
 * store the same kind of values: the races are benign. */
static __always_inline void lb_ct_touch(struct lb_ct *ct, const struct lb_ct_key *partner, __u16 set,
					__u64 now)
{
	__u16 flags = ct->flags | set, shared;
	struct lb_ct *p;
	int sync;

	sync = flags != ct->flags || (ct->last_seen >> LB_CT_SYNC_SHIFT) != (now >> LB_CT_SYNC_SHIFT);
	if (flags != ct->flags)
		ct->flags = flags;
	ct->last_seen = now;
	if (!sync)
		return;
	p = bpf_map_lookup_elem(&lb_ct_map, partner);
	if (!p)
		return;
	shared = flags & (LB_CT_SEEN_REPLY | LB_CT_CLOSE_FLAGS);
	if ((p->flags | shared) != p->flags)
		p->flags |= shared;
	p->last_seen = now;
}

/* The REV key of a connection: the backend answering its client (with hairpin, the client is
 * addressed as `client`, the hairpin address). */
static __always_inline void lb_ct_rev_key(struct lb_ct_key *k, __be32 backend, __be16 backend_port,
					  __be32 client, __be16 client_port, __u8 proto)
{
	k->saddr = backend;
	k->daddr = client;
	k->sport = backend_port;
	k->dport = client_port;
	k->proto = proto;
	k->dir = LB_CT_DIR_REV;
	k->pad = 0;
}

/* The FWD key of a connection: the client's tuple toward the frontend. */
static __always_inline void lb_ct_fwd_key(struct lb_ct_key *k, __be32 client, __be16 client_port,
					  __be32 vip, __be16 vport, __u8 proto)
{
	k->saddr = client;
	k->daddr = vip;
	k->sport = client_port;
	k->dport = vport;
	k->proto = proto;
	k->dir = LB_CT_DIR_FWD;
	k->pad = 0;
}

#endif
