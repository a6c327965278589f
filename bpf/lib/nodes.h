/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Cluster nodes by tunnel endpoint address: the anti-spoofing set for overlay ingress and the
 * VTEP/next-hop MACs for encapsulation. Written by the agent. Mirrored in Go by pkg/maps/nodes. */
#ifndef EDGEPLANE_NODES_H
#define EDGEPLANE_NODES_H

#include "common.h"

#define NODES_MAX 16384

enum node_flags {
	NODE_NEXTHOP_VALID = 1 << 0, /* nexthop_mac/nexthop_ifindex are resolved; else the kernel resolves */
};

struct node {
	__u8 vtep_mac[ETH_ALEN];    /* inner destination MAC (Flannel drops frames not addressed to it) */
	__u8 nexthop_mac[ETH_ALEN]; /* outer destination MAC: the node itself or the underlay gateway */
	__u32 domain;
	__u32 flags;                /* enum node_flags */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct node);
	__uint(max_entries, NODES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodes_map SEC(".maps");

static __always_inline struct node *node_lookup(__be32 ip)
{
	return bpf_map_lookup_elem(&nodes_map, &ip);
}

#endif
