/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The masquerade state: the three NAT maps, their keys and values. Masquerade (SNAT to the node IP)
 * of pod traffic leaving the cluster is done in BPF because BPF forwarding bypasses netfilter; the
 * code that uses these maps: nat_tuple.h (a packet's tuple, parsing and rewriting), nat_port.h (port
 * allocation), nat_snat.h (the translation out: masquerade and the gateway), nat_rev.h (undoing it
 * for replies and ICMP errors).
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
 * connection: nat_port.h says what that means for the host's own connections. */
#ifndef EDGEPLANE_NAT_H
#define EDGEPLANE_NAT_H

#include "common.h"

#define NAT_MAX 65536
#define NONMASQ_MAX 1024
/* the node ports nat_port.h hands out */
#define NAT_PORT_MIN 32768
#define NAT_PORT_MAX 60999

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

#endif
