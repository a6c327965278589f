/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv4 fragment tracking, so that Services work for datagrams a pod's kernel fragmented (a UDP
 * datagram longer than the pod MTU): only the first fragment (offset 0) carries the L4 header, and
 * the service lookup and connection tracking are keyed by ports. lb_parse (lb_ct.h) records the
 * first fragment's ports under the datagram's identity {saddr, daddr, IP id, proto} and gives them
 * to the later fragments, which then take the same translation as the first: the same connection
 * entry, so the same backend, with the addresses rewritten and the IPv4 checksum only (the L4
 * checksum, in the first fragment, covers the whole datagram and follows the rewrite there).
 *
 * Each hook looks the fragments up as they arrive there, before it rewrites them, so the key is
 * the datagram as that hook sees it (pod -> frontend in pod_egress, backend -> pod on delivery).
 * A later fragment whose first was not seen here (reordered ahead of it, or its entry evicted) has
 * no ports to go by: lb_parse leaves it alone, as before fragments were tracked. Most such
 * fragments are no Service's (the node's own traffic reordered on the way, a peer's fragmented
 * VXLAN, which the kernel reassembles), and dropping them would break what worked; a Service's
 * goes on untranslated and its datagram is lost, as it was. Linux sends a datagram's fragments in
 * order, so a pod's reach the hook in order.
 *
 *   frag_map  LRU {saddr, daddr, id, proto} -> {sport, dport}, programs only: written by the first
 *             fragment, read by the later ones; entries are only evicted (an IP id is reused after
 *             65536 datagrams of a pair, and a reused id carries its own first fragment). Nothing in
 *             Go reads it, so it has no pkg/maps package. */
#ifndef EDGEPLANE_FRAG_H
#define EDGEPLANE_FRAG_H

#include "common.h"
#include "parse.h"

#define FRAG_MAX 8192

struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

struct frag_ports {
	__be16 sport;
	__be16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
	__uint(max_entries, FRAG_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frag_map SEC(".maps");

/* A fragment other than the first: no L4 header. */
static __always_inline int ipv4_is_later_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(IP_OFFSET)) != 0;
}

/* The first fragment of a fragmented datagram: offset 0, more fragments follow. */
static __always_inline int ipv4_is_first_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) == bpf_htons(IP_MF);
}

/* The helpers below are out of line (BPF subprograms): their key and value do not add to the
 * stack of the entry programs' frames, which are near the 512-byte limit together with their
 * other subprograms. Ports travel packed in a __u32 as struct frag_ports lays them out. */

static __always_inline __u32 frag_ports_pack(__be16 sport, __be16 dport)
{
	struct frag_ports p = { .sport = sport, .dport = dport };
	__u32 packed;

	__builtin_memcpy(&packed, &p, sizeof(packed));
	return packed;
}

static __always_inline struct frag_ports frag_ports_unpack(__u32 packed)
{
	struct frag_ports p;

	__builtin_memcpy(&p, &packed, sizeof(p));
	return p;
}

/* Records the ports of a first fragment (its header's addresses, id and protocol) for its later
 * fragments. Best effort: a failed update leaves them untranslated, as an eviction would. */
static __noinline int frag_record(__be32 saddr, __be32 daddr, __be16 id, __u8 proto, __u32 ports)
{
	struct frag_key k = { .saddr = saddr, .daddr = daddr, .id = id, .proto = proto };
	struct frag_ports v = frag_ports_unpack(ports);

	return bpf_map_update_elem(&frag_map, &k, &v, BPF_ANY);
}

/* The ports (packed) of the datagram a later fragment belongs to, or -1 when its first was not
 * seen. */
static __noinline __s64 frag_lookup(__be32 saddr, __be32 daddr, __be16 id, __u8 proto)
{
	struct frag_key k = { .saddr = saddr, .daddr = daddr, .id = id, .proto = proto };
	struct frag_ports *v = bpf_map_lookup_elem(&frag_map, &k);

	if (!v)
		return -1;
	return frag_ports_pack(v->sport, v->dport);
}

#endif
