/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Masquerade (SNAT to the node IP) of pod traffic leaving the cluster, done in BPF because BPF
 * forwarding bypasses netfilter.
 *
 * Maps (pinned by name; the agent fills nonmasq_map, the datapath owns the other two):
 *   nonmasq_map  LPM {prefixlen, IPv4} -> __u8 (ignored)
 *                Destinations never masqueraded: the agent puts the cluster CIDR and the
 *                configured non-masquerade CIDRs here. (The datapath also skips cfg->cluster_cidr
 *                itself, so an empty map is safe.)
 *   nat_fwd_map  LRU {proto, pod IP, pod port, remote IP, remote port} -> {node port}
 *                Looked up on the NIC's egress for every masqueraded packet.
 *   nat_rev_map  LRU {proto, remote IP, remote port, node port} -> {pod IP, pod port}
 *                Looked up on the NIC's ingress for packets to the node IP (replies, and ICMP
 *                errors about masqueraded packets). Its key is also what makes a node port
 *                "taken": mappings are endpoint-dependent, so one node port serves many remotes.
 * For ICMP echo the "port" is the echo identifier and the remote port is 0. Entries age out
 * through LRU eviction only (no connection tracking timeouts yet), so a mapping outlives its
 * connection, and a later connection of the host from the same address and port to the same
 * remote would have its replies taken for the old one. The host's sockets on the node IP are
 * looked up before a port is handed out (nat_port_used_by_host), but the host's connections to
 * service frontends leave from the overlay address with ports the kernel picks from the same range
 * as clients' (and node_lb_snat keeps the client's port where it can), so for the overlay address
 * the live service connections of the host (lib/lb_ct.h) also count: a port one of them holds
 * toward a backend is not handed out, and a reply whose tuple such a connection names is the
 * host's even when a stale mapping names it too (lb_rev_overlay, and node.c's node_lb_is_reply).
 * What remains: masquerade to the node IP can in principle take a host connection's replies the
 * same way, when the host later connects to an outside address from a port a dead mapping still
 * holds toward that address (the kernel does not know the map). Lifetimes for these entries are
 * the lasting fix.
 *
 * Which packets are masqueraded: IPv4 TCP, UDP and ICMP echo requests from cfg->pod_cidr to a
 * destination outside the cluster and nonmasq_map. A mapping is created by the packet that opens
 * a flow (TCP SYN, any UDP, echo request); other TCP packets without a mapping (a pod answering a
 * connection made to its own address) and echo replies leave untouched. Non-first fragments carry
 * no ports and leave untouched too. */
#ifndef EDGEPLANE_NAT_H
#define EDGEPLANE_NAT_H

#include "common.h"
#include "config.h"
#include "lb_ct.h"
#include "parse.h"

#define NAT_MAX 65536
#define NONMASQ_MAX 1024
#define NAT_PORT_MIN 32768
#define NAT_PORT_MAX 60999
#define NAT_PORT_TRIES 8

#ifndef BPF_F_CURRENT_NETNS
#define BPF_F_CURRENT_NETNS (-1L)
#endif

struct nonmasq_key {
	__u32 prefixlen;
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nonmasq_key);
	__type(value, __u8);
	__uint(max_entries, NONMASQ_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nonmasq_map SEC(".maps");

struct nat_fwd_key {
	__be32 pod_ip;
	__be32 remote_ip;
	__be16 pod_port;
	__be16 remote_port;
	__u8 proto;
	__u8 pad[3];
};

struct nat_fwd_val {
	__be16 node_port;
	__u16 pad;
};

struct nat_rev_key {
	__be32 remote_ip;
	__be16 remote_port;
	__be16 node_port;
	__u8 proto;
	__u8 pad[3];
};

struct nat_rev_val {
	__be32 pod_ip;
	__be16 pod_port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_fwd_key);
	__type(value, struct nat_fwd_val);
	__uint(max_entries, NAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_fwd_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_rev_key);
	__type(value, struct nat_rev_val);
	__uint(max_entries, NAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_rev_map SEC(".maps");

/* An IPv4 packet's NAT-relevant fields, parsed once. */
struct nat_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;     /* ICMP echo: the identifier on the "local" side */
	__be16 dport;     /* ICMP echo: 0 */
	__u8 proto;
	__u8 opens_flow;  /* TCP SYN, UDP, echo request: may create a mapping */
	__u8 icmp_type;
	__u8 pad;
	__u32 l4_off;     /* from the start of the packet */
};

#define NAT_SKIP 1 /* not something we translate: leave the packet alone */

static __always_inline int nat_csum_off(__u8 proto, __u32 l4_off)
{
	switch (proto) {
	case IPPROTO_TCP:
		return l4_off + 16;
	case IPPROTO_UDP:
		return l4_off + 6;
	default:
		return l4_off + 2; /* ICMP */
	}
}

/* Offset of the port/identifier that NAT rewrites: the source side on egress, the destination
 * side on ingress (for ICMP echo both are the identifier). */
static __always_inline __u32 nat_port_off(__u8 proto, __u32 l4_off, int dest)
{
	if (proto == IPPROTO_ICMP)
		return l4_off + 4;
	return l4_off + (dest ? 2 : 0);
}

/* Reads ports (or the echo identifier) of the IPv4 packet ip. egress selects which ICMP echo
 * direction may be translated: requests going out, replies coming back. */
static __always_inline int nat_parse(struct __sk_buff *skb, const struct iphdr *ip,
				     struct nat_tuple *t, int egress)
{
	__u32 l4_off = ETH_HLEN + ip->ihl * 4;

	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	t->l4_off = l4_off;
	t->opens_flow = 0;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return NAT_SKIP;

	switch (t->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = pkt_header(skb, l4_off, sizeof(*tcp));

		if (!tcp)
			return -DROP_INVALID;
		t->sport = tcp->source;
		t->dport = tcp->dest;
		t->opens_flow = tcp->syn && !tcp->ack;
		return 0;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = pkt_header(skb, l4_off, sizeof(*udp));

		if (!udp)
			return -DROP_INVALID;
		t->sport = udp->source;
		t->dport = udp->dest;
		t->opens_flow = 1;
		return 0;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *icmp = pkt_header(skb, l4_off, sizeof(*icmp));

		if (!icmp)
			return -DROP_INVALID;
		t->icmp_type = icmp->type;
		if (icmp->type == (egress ? ICMP_ECHO : ICMP_ECHOREPLY)) {
			t->sport = icmp->un.echo.id;
			t->dport = 0;
			t->opens_flow = egress;
			return 0;
		}
		if (!egress && (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED))
			return 0; /* an error, maybe about a masqueraded packet: nat_rev_icmp_error() */
		return NAT_SKIP;
	}
	default:
		return NAT_SKIP;
	}
}

/* Rewrites one address and one port/identifier, with checksums. dest selects destination (ingress)
 * or source (egress) fields. The L4 checksum covers the addresses through the pseudo header for
 * TCP/UDP, not for ICMP; a zero UDP checksum means "none" and stays zero (MARK_MANGLED_0).
 * l4_off 0 says the packet has no L4 header (a later IPv4 fragment, lib/frag.h): the address and
 * the IPv4 checksum only; the port and the L4 checksum are the first fragment's. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, const struct nat_tuple *t, int dest,
				       __be32 old_ip, __be32 new_ip, __be16 old_port, __be16 new_port)
{
	__u32 ip_off = ETH_HLEN + (dest ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__u32 csum_off = nat_csum_off(t->proto, t->l4_off);
	__u32 port_off = nat_port_off(t->proto, t->l4_off, dest);
	__u64 l4flags = t->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (!t->l4_off)
		goto l3;
	if (t->proto != IPPROTO_ICMP &&
	    bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, l4flags | BPF_F_PSEUDO_HDR | 4) < 0)
		return -DROP_NAT_FAILED;
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4flags | 2) < 0)
			return -DROP_NAT_FAILED;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -DROP_NAT_FAILED;
	}
l3:
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_ip, new_ip, 4) < 0)
		return -DROP_NAT_FAILED;
	if (bpf_skb_store_bytes(skb, ip_off, &new_ip, sizeof(new_ip), 0) < 0)
		return -DROP_NAT_FAILED;
	return 0;
}

static __always_inline int nat_should_masquerade(const struct node_cfg *cfg, const struct nat_tuple *t)
{
	struct nonmasq_key key = { .prefixlen = 32, .addr = t->daddr };

	if ((t->saddr & cfg->pod_mask) != cfg->pod_cidr)
		return 0;
	if ((t->daddr & cfg->cluster_mask) == cfg->cluster_cidr)
		return 0;
	return !bpf_map_lookup_elem(&nonmasq_map, &key);
}

/* Whether the node itself has a live connection through a service frontend whose backend
 * backend:bport answers overlay:port (the overlay address, where the host's service traffic comes
 * from): the connection's REV entry (lib/lb_ct.h) names exactly that tuple. Hairpin entries name
 * LB_HAIRPIN_IP as the client, never the overlay address. */
static __always_inline int nat_host_svc_conn(__be32 backend, __be16 bport, __be32 overlay, __be16 port, __u8 proto)
{
	struct lb_ct_key k;
	struct lb_ct *ct;

	lb_ct_rev_key(&k, backend, bport, overlay, port, proto);
	ct = bpf_map_lookup_elem(&lb_ct_map, &k);
	return ct && lb_ct_alive(ct, proto, bpf_ktime_get_boot_ns());
}

/* Whether the host would claim replies to nat_ip:port from the remote: then the port is not ours
 * to hand out (the host's connections are not in nat_rev_map). A host socket says so for its own
 * address; the host's connections to service frontends name the frontend in their sockets, so on
 * the overlay address their live REV entries are looked up too (the head of the file). Only new
 * mappings pay for these lookups. */
static __always_inline int nat_port_used_by_host(struct __sk_buff *skb, const struct node_cfg *cfg,
						 const struct nat_rev_key *rk, __be32 nat_ip)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;

	if (rk->proto != IPPROTO_TCP && rk->proto != IPPROTO_UDP)
		return 0;
	if (nat_ip == cfg->pod_cidr &&
	    nat_host_svc_conn(rk->remote_ip, rk->remote_port, nat_ip, rk->node_port, rk->proto))
		return 1;
	tuple.ipv4.saddr = rk->remote_ip;
	tuple.ipv4.daddr = nat_ip;
	tuple.ipv4.sport = rk->remote_port;
	tuple.ipv4.dport = rk->node_port;
	if (rk->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* Claims a node port for a new flow: the pod's own port if nobody uses it toward that remote,
 * else a few random ones. Claiming = inserting the reverse entry with BPF_NOEXIST, which also
 * settles races between CPUs. */
static __always_inline int nat_claim_port(struct __sk_buff *skb, const struct node_cfg *cfg, __be32 nat_ip,
					  struct nat_rev_key *rk, const struct nat_rev_val *rv)
{
	if (!nat_port_used_by_host(skb, cfg, rk, nat_ip) &&
	    !bpf_map_update_elem(&nat_rev_map, rk, rv, BPF_NOEXIST))
		return 0;

#pragma unroll
	for (int i = 0; i < NAT_PORT_TRIES; i++) {
		__u16 port = NAT_PORT_MIN + bpf_get_prandom_u32() % (NAT_PORT_MAX - NAT_PORT_MIN + 1);

		rk->node_port = bpf_htons(port);
		if (nat_port_used_by_host(skb, cfg, rk, nat_ip))
			continue;
		if (!bpf_map_update_elem(&nat_rev_map, rk, rv, BPF_NOEXIST))
			return 0;
	}
	return -DROP_NAT_NO_PORT;
}

/* The port on nat_ip of the flow t, creating the mapping if t opens a flow. Returns 0 with *port
 * set, NAT_SKIP for a packet of an unknown flow that must not open one, or a drop reason. The
 * mappings to the node IP (masquerade) and to the overlay address (gateway) share the tables:
 * their remotes never overlap (outside the cluster vs pods). */
static __always_inline int nat_snat_port(struct __sk_buff *skb, const struct node_cfg *cfg, __be32 nat_ip,
					 const struct nat_tuple *t, __be16 *port)
{
	struct nat_fwd_key fk = {
		.pod_ip = t->saddr, .remote_ip = t->daddr,
		.pod_port = t->sport, .remote_port = t->dport, .proto = t->proto,
	};
	struct nat_rev_key rk = {
		.remote_ip = t->daddr, .remote_port = t->dport, .proto = t->proto,
	};
	struct nat_rev_val rv = { .pod_ip = t->saddr, .pod_port = t->sport };
	struct nat_fwd_val fv = {};
	struct nat_fwd_val *fwd = bpf_map_lookup_elem(&nat_fwd_map, &fk);

	if (fwd) {
		struct nat_rev_val *rev;

		rk.node_port = fwd->node_port;
		rev = bpf_map_lookup_elem(&nat_rev_map, &rk);
		if (rev && rev->pod_ip == rv.pod_ip && rev->pod_port == rv.pod_port) {
			*port = rk.node_port;
			return 0;
		}
		/* LRU evicted the reverse half: reclaim the same port if still free, else re-map. */
		if (!rev && !bpf_map_update_elem(&nat_rev_map, &rk, &rv, BPF_NOEXIST)) {
			*port = rk.node_port;
			return 0;
		}
	}
	if (!t->opens_flow)
		return NAT_SKIP;

	rk.node_port = t->sport;
	if (nat_claim_port(skb, cfg, nat_ip, &rk, &rv) < 0)
		return -DROP_NAT_NO_PORT;
	fv.node_port = rk.node_port;
	if (bpf_map_update_elem(&nat_fwd_map, &fk, &fv, BPF_ANY) < 0) {
		bpf_map_delete_elem(&nat_rev_map, &rk);
		return -DROP_NAT_FAILED;
	}
	*port = rk.node_port;
	return 0;
}

/* Egress (the NIC's tc egress): masquerade the packet if it is pod traffic leaving the cluster. */
static __always_inline int nat_snat(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	struct nat_tuple t = {};
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 port;
	int ret;

	if (!(cfg->flags & NODE_CFG_MASQUERADE))
		return 0;
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : 0;
	if ((ip->saddr & cfg->pod_mask) != cfg->pod_cidr)
		return 0; /* the common case on a NIC: the host's own traffic and VXLAN */
	ret = nat_parse(skb, ip, &t, 1);
	if (ret)
		return ret < 0 ? ret : 0;
	if (!nat_should_masquerade(cfg, &t))
		return 0;
	ret = nat_snat_port(skb, cfg, cfg->node_ip, &t, &port);
	if (ret)
		return ret < 0 ? ret : 0;
	return nat_rewrite(skb, &t, 0, t.saddr, cfg->node_ip, t.sport, port);
}

/* An ICMP error (destination unreachable, e.g. fragmentation needed; time exceeded) about a
 * packet we masqueraded quotes that packet: node IP and node port as its source. Translate the
 * outer destination and the quoted source back so the pod sees an error about its own packet
 * (PMTU discovery over the internet depends on it). Changing the quoted source address together
 * with the quoted IP checksum leaves the ICMP checksum unchanged; the quoted port is compensated
 * in the ICMP checksum. The quoted L4 checksum is left alone: receivers do not check it. */
static __always_inline int nat_rev_icmp_error(struct __sk_buff *skb, const struct nat_tuple *t)
{
	__u32 in_ip_off = t->l4_off + sizeof(struct icmphdr);
	struct nat_rev_key rk = {};
	struct nat_rev_val *rev;
	struct iphdr *in_ip;
	__u32 in_l4_off, port_off;
	__be16 *ports;
	__be32 node_ip;

	in_ip = pkt_header(skb, in_ip_off, sizeof(*in_ip));
	if (!in_ip)
		return 0; /* too short to say what it is about: let the host have it */
	if (in_ip->ihl != 5 || in_ip->saddr != t->daddr)
		return 0;
	node_ip = in_ip->saddr;
	rk.remote_ip = in_ip->daddr;
	rk.proto = in_ip->protocol;
	in_l4_off = in_ip_off + sizeof(*in_ip);

	/* the quoted ports: TCP/UDP source, destination; ICMP echo type, code, csum, id */
	ports = pkt_header(skb, in_l4_off, 8);
	if (!ports)
		return 0;
	switch (rk.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		rk.node_port = ports[0];
		rk.remote_port = ports[1];
		port_off = in_l4_off;
		break;
	case IPPROTO_ICMP:
		if (*(__u8 *)ports != ICMP_ECHO)
			return 0;
		rk.node_port = ports[2];
		rk.remote_port = 0;
		port_off = in_l4_off + 4;
		break;
	default:
		return 0;
	}
	rev = bpf_map_lookup_elem(&nat_rev_map, &rk);
	if (!rev)
		return 0;

	/* the quoted header: source address with its checksum, source port with the ICMP checksum */
	if (bpf_l3_csum_replace(skb, in_ip_off + offsetof(struct iphdr, check), node_ip, rev->pod_ip, 4) < 0 ||
	    bpf_skb_store_bytes(skb, in_ip_off + offsetof(struct iphdr, saddr), &rev->pod_ip, 4, 0) < 0)
		return -DROP_NAT_FAILED;
	if (bpf_l4_csum_replace(skb, t->l4_off + 2, rk.node_port, rev->pod_port, 2) < 0 ||
	    bpf_skb_store_bytes(skb, port_off, &rev->pod_port, 2, 0) < 0)
		return -DROP_NAT_FAILED;
	/* the outer destination (not in the ICMP checksum) */
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), t->daddr, rev->pod_ip, 4) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr), &rev->pod_ip, 4, 0) < 0)
		return -DROP_NAT_FAILED;
	return 0;
}

/* Undoes the translation of replies (and ICMP errors) to nat_ip. */
static __always_inline int nat_rnat_to(struct __sk_buff *skb, const struct iphdr *ip, __be32 nat_ip)
{
	struct nat_tuple t = {};
	struct nat_rev_key rk = {};
	struct nat_rev_val *rev;
	int ret;

	if (ip->daddr != nat_ip)
		return 0;
	ret = nat_parse(skb, ip, &t, 0);
	if (ret)
		return ret < 0 ? ret : 0;
	if (t.proto == IPPROTO_ICMP && t.icmp_type != ICMP_ECHOREPLY)
		return nat_rev_icmp_error(skb, &t);

	rk.proto = t.proto;
	rk.remote_ip = t.saddr;
	if (t.proto == IPPROTO_ICMP) {
		rk.node_port = t.sport; /* the echo identifier */
		rk.remote_port = 0;
	} else {
		rk.remote_port = t.sport;
		rk.node_port = t.dport;
	}
	rev = bpf_map_lookup_elem(&nat_rev_map, &rk);
	if (!rev)
		return 0;
	return nat_rewrite(skb, &t, 1, t.daddr, rev->pod_ip, rk.node_port, rev->pod_port);
}

/* Ingress (the NIC's tc ingress): undo the masquerade of replies to the node IP. */
static __always_inline int nat_rnat(struct __sk_buff *skb, const struct node_cfg *cfg,
				    const struct iphdr *ip)
{
	if (!(cfg->flags & NODE_CFG_MASQUERADE))
		return 0;
	return nat_rnat_to(skb, ip, cfg->node_ip);
}

/* Traffic entering the overlay from outside the cluster CIDR (the overlay device's egress): cloud
 * hosts routed to pods through this node (the cloud gateway), or host sockets bound to another
 * address. Translated to the node's overlay address, the first address of its pod CIDR, so the
 * pod's reply comes back through the tunnel to this node, which undoes it (nat_rnat_overlay). */
static __always_inline int nat_snat_overlay(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	struct nat_tuple t = {};
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 port;
	int ret;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : 0;
	if ((ip->saddr & cfg->cluster_mask) == cfg->cluster_cidr)
		return 0;
	ret = nat_parse(skb, ip, &t, 1);
	if (ret)
		return ret < 0 ? ret : 0;
	ret = nat_snat_port(skb, cfg, cfg->pod_cidr, &t, &port);
	if (ret)
		return ret < 0 ? ret : 0;
	return nat_rewrite(skb, &t, 0, t.saddr, cfg->pod_cidr, t.sport, port);
}

/* The gateway's key (nat_rev_map) for the IPv4 packet at ip_off to the overlay address: a TCP/UDP
 * packet from the remote, or an ICMP error (destination unreachable, time exceeded) quoting one
 * sent from the overlay address to the remote. Returns 1 with rk filled, 0 for anything else
 * (fragments, IP options, other protocols). Only looks. */
static __always_inline int nat_overlay_reply_key(struct __sk_buff *skb, const struct node_cfg *cfg, __u32 ip_off,
						 struct nat_rev_key *rk)
{
	struct icmphdr *icmp;
	struct iphdr *ip;
	__be16 *ports;
	__be32 remote;
	int quoted = 0;
	__u8 proto;

	ip = pkt_header(skb, ip_off, sizeof(*ip));
	if (!ip || ip->daddr != cfg->pod_cidr || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_OFFSET)))
		return 0;
	proto = ip->protocol;
	remote = ip->saddr;
	if (proto == IPPROTO_ICMP) {
		icmp = pkt_header(skb, ip_off + sizeof(*ip), sizeof(*icmp));
		if (!icmp || (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED))
			return 0;
		ip_off += sizeof(*ip) + sizeof(*icmp);
		ip = pkt_header(skb, ip_off, sizeof(*ip));
		if (!ip || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_OFFSET)) || ip->saddr != cfg->pod_cidr)
			return 0;
		proto = ip->protocol;
		remote = ip->daddr;
		quoted = 1;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	ports = pkt_header(skb, ip_off + sizeof(*ip), 2 * sizeof(__be16));
	if (!ports)
		return 0;
	rk->remote_ip = remote;
	rk->remote_port = quoted ? ports[1] : ports[0];
	rk->node_port = quoted ? ports[0] : ports[1];
	rk->proto = proto;
	rk->pad[0] = rk->pad[1] = rk->pad[2] = 0;
	return 1;
}

/* The overlay device's ingress: undo nat_snat_overlay for replies to the overlay address. */
static __always_inline int nat_rnat_overlay(struct __sk_buff *skb, const struct node_cfg *cfg,
					    const struct iphdr *ip)
{
	return nat_rnat_to(skb, ip, cfg->pod_cidr);
}

#endif
