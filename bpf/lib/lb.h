/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Services: the load-balancing tables (ClusterIP, NodePort, LoadBalancer ingress IPs, externalIPs)
 * as this node sees them, and the connection tracking that keeps a connection on its backend.
 * Mirrored in Go by pkg/maps/lb.
 *
 * Every policy that depends on where the client is (service topology per node or pool,
 * internalTrafficPolicy/externalTrafficPolicy Local, trafficDistribution, NodePort isolation per
 * pool) is decided by the agent, which writes each node the backends that node may use. The
 * programs only look up, pick and translate.
 *
 * Maps (pinned by name):
 *   lb_svc_map       {vip, port, proto, scope} -> struct lb_svc: one entry per service frontend.
 *                    scope INTERNAL: traffic from pods and from the node itself (ClusterIP, and
 *                    externalIPs/LB IPs reached from inside); scope EXTERNAL: traffic arriving on the
 *                    underlay NIC (NodePort with vip 0 = any node address, LB ingress IPs,
 *                    externalIPs). LB_SVC_CLOSED entries carry no backends: NodePort isolation says
 *                    this node does not listen, the packet is dropped as DROP_NODEPORT_CLOSED.
 *   lb_backend_map   {svc id, slot} -> struct lb_backend, slots 0..count-1 of the frontend's id.
 *                    The agent writes a new id's slots before the frontend points at it, then
 *                    deletes the old id's slots, so a lookup never sees a half-written set.
 *   lb_ct_map        LRU {saddr, daddr, sport, dport, proto, dir} -> struct lb_ct. A connection
 *                    to a service has two entries: CT_DIR_FWD keyed by the client's tuple toward
 *                    the frontend (value: the backend chosen), CT_DIR_REV keyed by the backend's
 *                    reply tuple (value: the frontend to restore as the reply's source). last_seen
 *                    is bpf_ktime_get_boot_ns(); an entry older than its timeout (below) is dead for
 *                    the datapath, and the agent's garbage collector deletes it.
 *   lb_affinity_map  LRU {svc id, client IPv4} -> struct lb_affinity (sessionAffinity: ClientIP).
 */
#ifndef EDGEPLANE_LB_H
#define EDGEPLANE_LB_H

#include "common.h"

#define LB_SVC_MAX 65536
#define LB_BACKEND_MAX 524288
#define LB_CT_MAX 262144
#define LB_AFFINITY_MAX 65536

/* Connection tracking timeouts, seconds since an entry's last packet (the agent's garbage collector
 * uses the same). The TCP close is tracked per direction (lb_ct.h): a FIN from one side only leaves
 * the other side sending for as long as it likes, so a half-closed connection is judged by
 * kube-proxy's CLOSE_WAIT timeout, and only FINs from both sides (Linux conntrack's TIME_WAIT) or an
 * RST (its CLOSE) shorten an entry's life. The three close timeouts are defaults: node_cfg
 * (config.h) carries the agent's --ct-tcp-*-timeout flags, 0 meaning these. */
#define LB_CT_TIMEOUT_TCP 21600           /* established TCP: 6 hours, as Cilium */
#define LB_CT_TIMEOUT_TCP_SYN 60          /* TCP before the backend answered */
#define LB_CT_TIMEOUT_TCP_CLOSE_WAIT 3600 /* after a FIN from one side only (half-closed) */
#define LB_CT_TIMEOUT_TCP_TIME_WAIT 120   /* after FINs from both sides */
#define LB_CT_TIMEOUT_TCP_CLOSE 10        /* after an RST */
#define LB_CT_TIMEOUT_OTHER 60            /* UDP, SCTP: since the last packet */

enum lb_scope {
	LB_SCOPE_INTERNAL = 0, /* from pods and from the node itself */
	LB_SCOPE_EXTERNAL = 1, /* arriving on the underlay NIC */
};

enum lb_svc_flags {
	LB_SVC_AFFINITY = 1 << 0,  /* sessionAffinity: ClientIP, affinity_timeout seconds */
	LB_SVC_NODEPORT = 1 << 1,  /* a NodePort frontend (vip 0: every node address) */
	LB_SVC_CLOSED = 1 << 2,    /* this node does not listen (NodePort isolation): drop */
	LB_SVC_LOCAL = 1 << 3,     /* externalTrafficPolicy Local: backends are local, source kept */
	LB_SVC_EXTERNAL_IP = 1 << 4, /* an externalIP or LoadBalancer ingress IP frontend */
};

struct lb_svc_key {
	__be32 vip;   /* ClusterIP, external IP or LB IP; 0 for NodePort */
	__be16 port;  /* service port (or node port) */
	__u8 proto;   /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP */
	__u8 scope;   /* enum lb_scope */
};

struct lb_svc {
	__u32 id;               /* backend set: lb_backend_map {id, 0..count-1} */
	__u16 count;            /* backends; 0: no backend (the packet is dropped, DROP_NO_SERVICE_BACKEND) */
	__u16 flags;            /* enum lb_svc_flags */
	__u32 affinity_timeout; /* seconds, with LB_SVC_AFFINITY */
	__u16 unreachable;      /* backends the agent left out: this node cannot reach their node's
				 * network domain (for edgeplanectl and metrics; not read here) */
	__u16 pad;
};

struct lb_backend_key {
	__u32 svc_id;
	__u32 slot;
};

struct lb_backend {
	__be32 ip;    /* pod (or host-network endpoint) address */
	__be16 port;  /* target port */
	__u16 flags;
};

enum lb_ct_dir {
	LB_CT_DIR_FWD = 0, /* client -> frontend, as the client sent it */
	LB_CT_DIR_REV = 1, /* backend -> client, as the backend answers */
};

/* Both entries of a connection carry the same SEEN_REPLY and close flags (lb_ct_touch). Bit 3 is
 * lb_ct.h's LB_CT_EXTERNAL. CLOSING says "a FIN or an RST went by" and is set with each of FIN_FWD,
 * FIN_REV and RST; programs before the per-direction close set it alone, so an entry with CLOSING
 * and none of the three is an older program's, of unknown direction (lb_ct_timeout). */
enum lb_ct_flags {
	LB_CT_SEEN_REPLY = 1 << 0, /* the backend answered (TCP: established timeout applies) */
	LB_CT_CLOSING = 1 << 1,    /* FIN or RST seen */
	LB_CT_HAIRPIN = 1 << 2,    /* the client is its own backend: source translated too */
	LB_CT_FIN_FWD = 1 << 4,    /* the client sent a FIN: it sends no more data */
	LB_CT_FIN_REV = 1 << 5,    /* the backend sent a FIN */
	LB_CT_RST = 1 << 6,        /* an RST from either side: closed */
};

struct lb_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* enum lb_ct_dir */
	__u16 pad;
};

struct lb_ct {
	__be32 addr;     /* FWD: the backend's address; REV: the frontend's */
	__be16 port;     /* FWD: the backend's port; REV: the frontend's */
	__u16 flags;     /* enum lb_ct_flags */
	__u32 svc_id;
	__u32 pad;
	__u64 last_seen; /* bpf_ktime_get_boot_ns() of the last packet */
};

struct lb_affinity_key {
	__u32 svc_id;
	__be32 client;
};

struct lb_affinity {
	__be32 ip;       /* the backend this client sticks to */
	__be16 port;
	__u16 pad;
	__u64 last_seen; /* bpf_ktime_get_boot_ns() */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_svc_key);
	__type(value, struct lb_svc);
	__uint(max_entries, LB_SVC_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_svc_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_backend_key);
	__type(value, struct lb_backend);
	__uint(max_entries, LB_BACKEND_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_backend_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_ct_key);
	__type(value, struct lb_ct);
	__uint(max_entries, LB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_ct_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity);
	__uint(max_entries, LB_AFFINITY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_affinity_map SEC(".maps");

#endif
