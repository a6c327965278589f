/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Port allocation for the NAT mappings (nat_fwd_map, nat_rev_map in lib/nat.h): the node port of a
 * flow, claimed once by the packet that opens it.
 *
 * A mapping outlives its connection (entries age out through LRU eviction only), so a later
 * connection of the host from the same address and port to the same remote would have its replies
 * taken for the old one. The host's sockets on the node IP are looked up before a port is handed
 * out (nat_port_used_by_host), but the host's connections to service frontends leave from the
 * overlay address with ports the kernel picks from the same range as clients' (and node_lb_snat
 * keeps the client's port where it can), so for the overlay address the live service connections
 * of the host (lib/lb_ct.h) also count: a port one of them holds toward a backend is not handed
 * out, and a reply whose tuple such a connection names is the host's even when a stale mapping
 * names it too (lb_rev_overlay, and node.c's node_lb_is_reply). What remains: masquerade to the
 * node IP can in principle take a host connection's replies the same way, when the host later
 * connects to an outside address from a port a dead mapping still holds toward that address (the
 * kernel does not know the map). Lifetimes for these entries are the lasting fix. */
#ifndef EDGEPLANE_NAT_PORT_H
#define EDGEPLANE_NAT_PORT_H

#include "common.h"
#include "config.h"
#include "lb_ct.h"
#include "nat.h"
#include "nat_tuple.h"

#define NAT_PORT_TRIES 8

#ifndef BPF_F_CURRENT_NETNS
#define BPF_F_CURRENT_NETNS (-1L)
#endif

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

#endif
