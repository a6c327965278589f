/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Pod CIDR routes: longest-prefix match on a pod address -> the node that owns it.
 * Written by the agent from node.spec.podCIDR. Mirrored in Go by pkg/maps/routes. */
#ifndef EDGEPLANE_ROUTES_H
#define EDGEPLANE_ROUTES_H

#include "common.h"

#define ROUTES_MAX 16384

enum route_flags {
	ROUTE_LOCAL = 1 << 0, /* this node's own pod CIDR: deliver locally or drop */
};

enum route_encap {
	ROUTE_ENCAP_VXLAN = 0,
	ROUTE_ENCAP_DIRECT = 1, /* route mode: no encapsulation */
};

struct route_key {
	__u32 prefixlen;
	__be32 addr;
};

struct route {
	__be32 node_ip; /* underlay (tunnel endpoint) address of the owning node; key of nodes_map */
	__u32 domain;   /* network domain of the owning node */
	__u8 encap;     /* enum route_encap */
	__u8 flags;     /* enum route_flags */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct route_key);
	__type(value, struct route);
	__uint(max_entries, ROUTES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} routes_map SEC(".maps");

static __always_inline struct route *route_lookup(__be32 addr)
{
	struct route_key key = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(&routes_map, &key);
}

#endif
