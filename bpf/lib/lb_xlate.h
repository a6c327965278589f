/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service translation per packet (the maps are lb.h's, the connection tracking lb_ct.h's).
 *
 * Forward (lb_xlate_fwd, a client's packet to a frontend): the connection's backend is the one its
 * live FWD entry names; a new connection (no entry, a dead one, or a TCP SYN on a closing one) gets
 * one from the frontend's slots (sessionAffinity first, else a hash of the tuple modulo count), and
 * both entries are written, REV before FWD, so that a backend is never reached before its replies
 * can be translated. Then the destination becomes the backend (addresses, ports, IPv4 and L4
 * checksums through nat_rewrite).
 *
 * Hairpin: a pod whose connection lands on itself would see its own address as the source and
 * answer itself inside its namespace, never through the veth. So the source becomes LB_HAIRPIN_IP
 * (169.254.42.1, Cilium's choice too), an address no pod or node has: the pod answers it through its
 * default route (via 169.254.1.1, the host veth), where pod_egress finds the REV entry keyed by it
 * and turns the reply into frontend -> pod. The pod's own client port is kept, so the pair
 * {pod:port, frontend} -> {backend port, hairpin address:port} is unique per client socket.
 *
 * Connections from outside the cluster (node.c, scope EXTERNAL) go through the same functions with
 * LB_CT_EXTERNAL on their entries (lb_xlate_fwd_ct), which lb_xlate_rev_ct reports to the caller:
 * such a reply leaves through the underlay NIC.
 *
 * Reverse (lb_xlate_rev, a packet about to be delivered to its destination): when a live REV entry
 * matches its tuple it is a backend's reply: the source becomes the frontend again (and with hairpin
 * the destination the pod). For anything else this is the one failed lookup non-service traffic
 * pays on the delivery paths. ICMP errors about a translated packet get their quote translated
 * back (lb_xlate_rev_icmp), so the client's socket recognizes them.
 *
 * SCTP is translated for frontends whose backends listen on the frontend's own port (Cilium's rule):
 * its CRC32c does not cover the IP addresses, but no helper can update it for a port change, so a
 * connection to a backend on another port is refused like a frontend without backends.
 *
 * Fragments: a later fragment carries no ports; lb_parse gives it its first fragment's (lib/frag.h),
 * and it takes the same path with the addresses rewritten only (lb_rewrite). */
#ifndef EDGEPLANE_LB_XLATE_H
#define EDGEPLANE_LB_XLATE_H

#include "common.h"
#include "lb.h"
#include "lb_ct.h"
#include "nat_tuple.h"
#include "nat_port.h"
#include "nat_rev.h"
#include "parse.h"

#define LB_HAIRPIN_IP bpf_htonl(0xa9fe2a01) /* 169.254.42.1 */

static __always_inline struct lb_svc *lb_svc_lookup(__be32 vip, __be16 port, __u8 proto, __u8 scope)
{
	struct lb_svc_key key = { .vip = vip, .port = port, .proto = proto, .scope = scope };

	return bpf_map_lookup_elem(&lb_svc_map, &key);
}

static __always_inline __u32 lb_rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

static __always_inline __u32 lb_hash_word(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = lb_rol32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = lb_rol32(h, 13);
	return h * 5 + 0xe6546b64;
}

/* Murmur3 over the tuple: one connection always maps to the same slot of a given backend set (a
 * packet whose entry was lost or expired goes back to the same backend while the set is unchanged),
 * and client ports spread over the slots. */
static __always_inline __u32 lb_hash(const struct lb_tuple *t)
{
	__u32 h = 0x65646765; /* "edge" */

	h = lb_hash_word(h, t->saddr);
	h = lb_hash_word(h, t->daddr);
	h = lb_hash_word(h, ((__u32)t->sport << 16) | t->dport);
	h = lb_hash_word(h, t->proto);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* A backend for a new connection. sessionAffinity: ClientIP keeps a client on the backend of its
 * last new connection while that was less than affinity_timeout ago (kube-proxy's `recent` match:
 * each new connection renews it); the entry is trusted as the agent keeps it to backends of the set. */
static __always_inline int lb_pick(const struct lb_svc *svc, const struct lb_tuple *t, __u64 now,
				   struct lb_backend *out)
{
	struct lb_affinity_key ak = { .svc_id = svc->id, .client = t->saddr };
	struct lb_backend_key bk = { .svc_id = svc->id };
	struct lb_affinity *aff, a = {};
	struct lb_backend *be;

	if (svc->flags & LB_SVC_AFFINITY) {
		aff = bpf_map_lookup_elem(&lb_affinity_map, &ak);
		if (aff && (__s64)(now - aff->last_seen) < (__s64)(svc->affinity_timeout * NSEC_PER_SEC)) {
			out->ip = aff->ip;
			out->port = aff->port;
			aff->last_seen = now;
			return 0;
		}
	}
	bk.slot = lb_hash(t) % svc->count;
	be = bpf_map_lookup_elem(&lb_backend_map, &bk);
	if (!be)
		return -DROP_NO_SERVICE_BACKEND; /* a torn set: the agent writes slots before the frontend */
	out->ip = be->ip;
	out->port = be->port;
	if (svc->flags & LB_SVC_AFFINITY) {
		a.ip = be->ip;
		a.port = be->port;
		a.last_seen = now;
		bpf_map_update_elem(&lb_affinity_map, &ak, &a, BPF_ANY); /* best effort: LRU */
	}
	return 0;
}

/* SCTP: only the address of one side changes (lb_xlate_fwd_ct refuses backends on another port).
 * Its CRC32c covers the SCTP packet alone, no pseudo-header, so it stays valid, whether already
 * computed or left to the NIC (CHECKSUM_PARTIAL); only the IPv4 header checksum follows. */
static __always_inline int lb_rewrite_sctp(struct __sk_buff *skb, struct lb_tuple *t, int dest, __be32 addr,
					   __be16 port)
{
	__be32 *old = dest ? &t->daddr : &t->saddr;

	if (port != (dest ? t->dport : t->sport))
		return -DROP_NAT_FAILED; /* a port rewrite would need the CRC32c recomputed */
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), *old, addr, 4) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + (dest ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr)),
				&addr, 4, 0) < 0)
		return -DROP_NAT_FAILED;
	*old = addr;
	return 0;
}

/* Rewrites one side of t's packet (dest: the destination) to addr:port, and t with it. A later
 * fragment (t->no_l4, lib/frag.h) has no L4 header: its port and the L4 checksum over the whole
 * datagram are in the first fragment, rewritten there; here nat_rewrite (told so by l4_off 0)
 * changes the address and the IPv4 checksum only. Out of line (a BPF subprogram): inlined at each
 * of its callers it made pod_egress's stack, with its other subprograms', pass 512 bytes. */
static __noinline int lb_rewrite(struct __sk_buff *skb, struct lb_tuple *t, int dest, __be32 addr, __be16 port)
{
	struct nat_tuple nt = { .proto = t->proto, .l4_off = t->no_l4 ? 0 : t->l4_off };
	int ret;

	if (t->proto == IPPROTO_SCTP)
		return lb_rewrite_sctp(skb, t, dest, addr, port);
	if (dest) {
		ret = nat_rewrite(skb, &nt, 1, t->daddr, addr, t->dport, port);
		t->daddr = addr;
		t->dport = port;
	} else {
		ret = nat_rewrite(skb, &nt, 0, t->saddr, addr, t->sport, port);
		t->saddr = addr;
		t->sport = port;
	}
	return ret;
}

/* The forward translation of t's packet, a client's to the frontend svc (see the top of the file).
 * t becomes the translated tuple. Returns 0 or -reason: NODEPORT_CLOSED for a frontend this node
 * does not open, NO_SERVICE_BACKEND for one without backends (established connections keep theirs). */
static __always_inline int lb_xlate_fwd_ct(struct __sk_buff *skb, const struct lb_svc *svc, struct lb_tuple *t,
					   __u16 ct_flags)
{
	__u64 now = bpf_ktime_get_boot_ns();
	struct lb_ct_key fk, rk;
	struct lb_backend be;
	struct lb_ct *ct, entry = {};
	__u16 flags;
	int ret;

	if (svc->flags & LB_SVC_CLOSED)
		return -DROP_NODEPORT_CLOSED;
	lb_ct_fwd_key(&fk, t->saddr, t->sport, t->daddr, t->dport, t->proto);
	ct = bpf_map_lookup_elem(&lb_ct_map, &fk);
	if (ct && lb_ct_alive(ct, t->proto, now) &&
	    !((ct->flags & LB_CT_CLOSING) && (t->tcp_flags & (LB_TCP_SYN | LB_TCP_ACK)) == LB_TCP_SYN)) {
		be.ip = ct->addr;
		be.port = ct->port;
		flags = ct->flags & LB_CT_HAIRPIN;
		lb_ct_rev_key(&rk, be.ip, be.port, flags ? LB_HAIRPIN_IP : t->saddr, t->sport, t->proto);
		lb_ct_touch(ct, &rk, lb_ct_closing(t, LB_CT_FIN_FWD), now);
	} else {
		if (!svc->count)
			return -DROP_NO_SERVICE_BACKEND;
		ret = lb_pick(svc, t, now, &be);
		if (ret < 0)
			return ret;
		/* Cilium's rule too: SCTP's checksum cannot follow a port change (lb_rewrite_sctp). */
		if (t->proto == IPPROTO_SCTP && be.port != t->dport)
			return -DROP_NO_SERVICE_BACKEND;
		flags = be.ip == t->saddr ? LB_CT_HAIRPIN : 0;
		lb_ct_rev_key(&rk, be.ip, be.port, flags ? LB_HAIRPIN_IP : t->saddr, t->sport, t->proto);
		entry.addr = t->daddr;
		entry.port = t->dport;
		entry.flags = flags | ct_flags | lb_ct_closing(t, LB_CT_FIN_FWD);
		entry.svc_id = svc->id;
		entry.last_seen = now;
		if (bpf_map_update_elem(&lb_ct_map, &rk, &entry, BPF_ANY) < 0)
			return -DROP_NAT_FAILED;
		entry.addr = be.ip;
		entry.port = be.port;
		if (bpf_map_update_elem(&lb_ct_map, &fk, &entry, BPF_ANY) < 0)
			return -DROP_NAT_FAILED;
	}
	ret = lb_rewrite(skb, t, 1, be.ip, be.port);
	if (ret < 0 || !flags)
		return ret;
	return lb_rewrite(skb, t, 0, LB_HAIRPIN_IP, t->sport);
}

static __always_inline int lb_xlate_fwd(struct __sk_buff *skb, const struct lb_svc *svc, struct lb_tuple *t)
{
	return lb_xlate_fwd_ct(skb, svc, t, 0);
}

/* An ICMP error (destination unreachable, e.g. port unreachable or fragmentation needed; time
 * exceeded) about a client's translated packet quotes it as the backend got it: client -> backend.
 * The client's socket knows client -> frontend, so the quote's destination becomes the frontend
 * again, and the error's source too when it is the backend itself. As in nat_rev_icmp_error, the
 * quoted address changes together with the quoted IP checksum, which leaves the ICMP checksum
 * unchanged; the quoted port is compensated in it. Errors about hairpinned packets stay inside
 * their pod and are not translated. Returns 1 when translated, 0 when the error is about no
 * service connection, or -reason. */
static __always_inline int lb_xlate_rev_icmp(struct __sk_buff *skb, struct lb_tuple *t, __u16 *ct_flags)
{
	__u32 in_ip_off = t->l4_off + sizeof(struct icmphdr);
	__be32 backend, vip;
	__be16 bport, vport;
	struct lb_ct_key rk;
	struct iphdr *in_ip;
	struct lb_ct *ct;
	__be16 *ports;
	__u8 proto;

	in_ip = pkt_header(skb, in_ip_off, sizeof(*in_ip));
	if (!in_ip || in_ip->ihl != 5 || in_ip->saddr != t->daddr || (in_ip->frag_off & bpf_htons(IP_OFFSET)))
		return 0;
	proto = in_ip->protocol;
	backend = in_ip->daddr;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
		return 0;
	ports = pkt_header(skb, in_ip_off + sizeof(*in_ip), 2 * sizeof(__be16));
	if (!ports)
		return 0;
	bport = ports[1];
	lb_ct_rev_key(&rk, backend, bport, t->daddr, ports[0], proto);
	ct = bpf_map_lookup_elem(&lb_ct_map, &rk);
	if (!ct || (ct->flags & LB_CT_HAIRPIN) || !lb_ct_alive(ct, proto, bpf_ktime_get_boot_ns()))
		return 0;
	vip = ct->addr;
	vport = ct->port;
	*ct_flags = ct->flags;

	if (bpf_l3_csum_replace(skb, in_ip_off + offsetof(struct iphdr, check), backend, vip, 4) < 0 ||
	    bpf_skb_store_bytes(skb, in_ip_off + offsetof(struct iphdr, daddr), &vip, 4, 0) < 0)
		return -DROP_NAT_FAILED;
	if (vport != bport &&
	    (bpf_l4_csum_replace(skb, t->l4_off + offsetof(struct icmphdr, checksum), bport, vport, 2) < 0 ||
	     bpf_skb_store_bytes(skb, in_ip_off + sizeof(*in_ip) + sizeof(__be16), &vport, 2, 0) < 0))
		return -DROP_NAT_FAILED;
	if (t->saddr == backend) {
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), backend, vip, 4) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &vip, 4, 0) < 0)
			return -DROP_NAT_FAILED;
		t->saddr = vip;
	}
	return 1;
}

/* The reverse translation of t's packet (see the top of the file; lb_parse returned 0 or
 * LB_ICMP_ERROR). t becomes the translated tuple. Returns 1 when it was a reply (or an error about
 * a translated packet) and is translated, with *ct_flags the connection's flags, 0 when it is
 * none, or -reason. */
static __always_inline int lb_xlate_rev_ct(struct __sk_buff *skb, struct lb_tuple *t, __u16 *ct_flags)
{
	struct lb_ct_key rk, fk;
	struct lb_ct *ct;
	__be32 vip, client;
	__be16 vport;
	__u64 now;
	__u16 hairpin;
	int ret;

	if (t->proto == IPPROTO_ICMP)
		return lb_xlate_rev_icmp(skb, t, ct_flags);
	lb_ct_rev_key(&rk, t->saddr, t->sport, t->daddr, t->dport, t->proto);
	ct = bpf_map_lookup_elem(&lb_ct_map, &rk);
	if (!ct)
		return 0;
	now = bpf_ktime_get_boot_ns();
	if (!lb_ct_alive(ct, t->proto, now))
		return 0;
	vip = ct->addr;
	vport = ct->port;
	hairpin = ct->flags & LB_CT_HAIRPIN;
	*ct_flags = ct->flags;
	client = hairpin ? t->saddr : t->daddr;
	lb_ct_fwd_key(&fk, client, t->dport, vip, vport, t->proto);
	lb_ct_touch(ct, &fk, LB_CT_SEEN_REPLY | lb_ct_closing(t, LB_CT_FIN_REV), now);

	ret = lb_rewrite(skb, t, 0, vip, vport);
	if (ret < 0)
		return ret;
	if (hairpin) {
		ret = lb_rewrite(skb, t, 1, client, t->dport);
		if (ret < 0)
			return ret;
	}
	return 1;
}

static __always_inline int lb_xlate_rev(struct __sk_buff *skb, struct lb_tuple *t)
{
	__u16 ct_flags;

	return lb_xlate_rev_ct(skb, t, &ct_flags);
}

/* lb_xlate_rev_ct for a delivery path that holds no tuple: parses the packet (Ethernet + IPv4 at
 * offset 0) itself. Returns 1 when translated (*ct_flags: the connection's), 0 when it is no
 * reply, or -reason. */
static __always_inline int lb_rev_deliver_ct(struct __sk_buff *skb, __u16 *ct_flags)
{
	struct lb_tuple t;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : 0;
	ret = lb_parse(skb, ip, &t);
	if (ret < 0 || ret == LB_SKIP)
		return ret < 0 ? ret : 0;
	return lb_xlate_rev_ct(skb, &t, ct_flags);
}

/* lb_rev_deliver_ct without the flags: returns 0 (translated or not a reply) or -reason. */
static __always_inline int lb_rev_deliver(struct __sk_buff *skb)
{
	__u16 ct_flags;
	int ret = lb_rev_deliver_ct(skb, &ct_flags);

	return ret < 0 ? ret : 0;
}

/* Whether the packet to the overlay address (Ethernet + IPv4 at offset 0) answers one of the
 * node's own connections to a frontend (or is an ICMP error about one of its packets): a live REV
 * entry names exactly its tuple. The gateway's table (lib/nat.h) may name the same tuple for an
 * earlier connection of a client outside the cluster to that backend: its entries are only
 * evicted, never expired, so they outlive their connections, node_lb_snat keeps the client's port
 * where it can, and the host picks its ports from the same range. The backend is answering the
 * node's live connection; undoing the old translation would send that answer to the old client. */
static __always_inline int lb_host_reply(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	struct nat_rev_key rk;

	if (!nat_overlay_reply_key(skb, cfg, ETH_HLEN, &rk))
		return 0;
	return nat_host_svc_conn(rk.remote_ip, rk.remote_port, cfg->pod_cidr, rk.node_port, rk.proto);
}

/* lb_rev_overlay for a caller that has already decided whether the packet is the host's:
 * host_checked skips lb_host_reply (node.c's node_lb_reply, after node_lb_is_reply). */
static __always_inline int lb_rev_overlay_checked(struct __sk_buff *skb, const struct node_cfg *cfg, __u16 *ct_flags,
						  int host_checked)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	*ct_flags = 0;
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : 0;
	/* Only packets to the overlay address can carry the gateway's translation: the others pay
	 * neither lookup. */
	if (ip->daddr == cfg->pod_cidr && (host_checked || !lb_host_reply(skb, cfg))) {
		/* parse again: looking at the ports may have pulled */
		ret = parse_ipv4(skb, &eth, &ip);
		if (ret != L3_IPV4)
			return ret < 0 ? ret : 0;
		ret = nat_rnat_overlay(skb, cfg, ip);
		if (ret < 0)
			return ret;
	}
	return lb_rev_deliver_ct(skb, ct_flags);
}

/* A packet to the node's overlay address (Ethernet + IPv4 at offset 0): the gateway's translation
 * of a client outside the cluster CIDR to that address undone first (lib/nat_rev.h: destination, or an
 * ICMP error's outer destination and quoted source), then the service's (source, or the quoted
 * destination and the error's source). Used wherever such packets arrive: replies of local
 * backends (pod_egress), of remote ones decapsulated on the NIC (node.c) or by the kernel device
 * (overlay.c), of host-network ones (node.c, direct). A reply to one of the node's own connections
 * to a frontend (lb_host_reply) is the host's even when a stale mapping of the gateway names its
 * tuple: only the service's translation is undone. Packets to the overlay address pay one more
 * lookup for that. Returns lb_rev_deliver_ct's result; with LB_CT_EXTERNAL in *ct_flags the packet
 * is now frontend -> client outside the cluster and must leave through the underlay NIC (the host
 * would drop it as a martian: its source is one of the node's own addresses, or a LoadBalancer IP,
 * arriving from a device that is not the NIC). */
static __always_inline int lb_rev_overlay(struct __sk_buff *skb, const struct node_cfg *cfg, __u16 *ct_flags)
{
	return lb_rev_overlay_checked(skb, cfg, ct_flags, 0);
}

#endif
