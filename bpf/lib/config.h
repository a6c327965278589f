/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The node's datapath configuration: one entry written by the agent, read by every program.
 * (Not named "config": that clashes with vmlinux.h.) Mirrored in Go by pkg/maps/nodecfg. */
#ifndef EDGEPLANE_CONFIG_H
#define EDGEPLANE_CONFIG_H

#include "common.h"

enum encap_mode {
	ENCAP_MODE_NATIVE = 0, /* encapsulate in BPF and redirect to the underlay NIC */
	ENCAP_MODE_DEVICE = 1, /* set a tunnel key and redirect to the collect_md VXLAN device */
};

enum node_cfg_flags {
	NODE_CFG_READY = 1 << 0,      /* the agent has written this entry; programs fail closed until then */
	NODE_CFG_MASQUERADE = 1 << 1, /* masquerade pod traffic leaving the cluster to node_ip */
	NODE_CFG_GATEWAY = 1 << 2,    /* this node is its domain's cloud gateway (for edgeplanectl) */
};

struct node_cfg {
	__be32 node_ip;         /* this node's underlay IPv4 address (outer source, masquerade address) */
	__be32 pod_cidr;        /* this node's pod CIDR, network byte order */
	__be32 pod_mask;        /* its netmask, network byte order */
	__be32 cluster_cidr;    /* the cluster CIDR */
	__be32 cluster_mask;
	__u32 underlay_ifindex; /* the NIC that carries VXLAN */
	__u32 vxlan_ifindex;    /* the collect_md VXLAN device (host traffic, fragments, fallback) */
	__u32 vni;
	__u16 mtu;              /* pod MTU: underlay MTU - 50 */
	__u16 flags;            /* enum node_cfg_flags */
	__u8 vtep_mac[ETH_ALEN];     /* this node's VTEP MAC (the VXLAN device's) */
	__u8 underlay_mac[ETH_ALEN]; /* the underlay NIC's MAC */
	__u8 encap_mode;        /* enum encap_mode */
	__u8 pad[3];
	__u32 domain;           /* this node's network domain (lib/domains.h) */
	__be32 gateway_ip;      /* its domain's cloud gateway when that is another node, else 0; the
				 * host routes through it are the kernel's (for edgeplanectl) */
	/* Service connection tracking's TCP close timeouts, seconds (lib/lb.h); 0: its default. */
	__u32 ct_tcp_close_wait; /* after a FIN from one side only */
	__u32 ct_tcp_time_wait;  /* after FINs from both sides */
	__u32 ct_tcp_close;      /* after an RST */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct node_cfg);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_cfg_map SEC(".maps");

static __always_inline struct node_cfg *node_cfg_get(void)
{
	__u32 zero = 0;
	struct node_cfg *cfg = bpf_map_lookup_elem(&node_cfg_map, &zero);

	if (!cfg || !(cfg->flags & NODE_CFG_READY))
		return 0;
	return cfg;
}

#endif
