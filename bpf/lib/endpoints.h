/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Local pod endpoints: pod IPv4 -> host-side veth and MACs. Written by the CNI plugin (ADD/DEL) and
 * garbage-collected by the agent. Mirrored in Go by pkg/maps/endpoints. */
#ifndef EDGEPLANE_ENDPOINTS_H
#define EDGEPLANE_ENDPOINTS_H

#include "common.h"

#define ENDPOINTS_MAX 4096

struct endpoint {
	__u32 ifindex;               /* host-side veth (redirect_peer target) */
	__u8 pod_mac[ETH_ALEN];      /* MAC of eth0 inside the pod */
	__u8 host_mac[ETH_ALEN];     /* MAC of the host-side veth (the pod's gateway) */
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct endpoint);
	__uint(max_entries, ENDPOINTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints_map SEC(".maps");

static __always_inline struct endpoint *endpoint_lookup(__be32 ip)
{
	return bpf_map_lookup_elem(&endpoints_map, &ip);
}

#endif
