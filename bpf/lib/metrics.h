/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU packet/byte counters by direction and reason (reason 0 = forwarded).
 * Key: dir * METRICS_REASONS + reason. Mirrored in Go by pkg/maps/metricsmap. */
#ifndef EDGEPLANE_METRICS_H
#define EDGEPLANE_METRICS_H

#include "common.h"
#include "drop_reasons.h"
#include "events.h"

enum metric_dir {
	DIR_POD_EGRESS = 0,    /* pod.c: packets leaving pods */
	DIR_OVERLAY_IN = 1,    /* VXLAN received (node.c decap or overlay.c) */
	DIR_OVERLAY_OUT = 2,   /* host traffic into the overlay (overlay.c egress) */
	DIR_NODE_IN = 3,       /* other traffic arriving on the underlay NIC */
	DIR_NODE_OUT = 4,      /* traffic leaving the underlay NIC (masquerade) */
	DIR_NODE_XDP = 5,      /* xdp.c on the underlay NIC: its drops only (what it passes, node_ingress counts) */
	DIR_POD_INGRESS = 6,   /* pod.c: what the host stack sends into pods (host veth egress) */
	DIR_MAX,
};

#define METRICS_REASONS 64

struct metric {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metric);
	__uint(max_entries, DIR_MAX * METRICS_REASONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} metrics_map SEC(".maps");

static __always_inline void metric_count(__u32 dir, __u32 reason, __u32 bytes)
{
	__u32 key = dir * METRICS_REASONS + (reason & (METRICS_REASONS - 1));
	struct metric *m = bpf_map_lookup_elem(&metrics_map, &key);

	if (m) {
		m->packets++;
		m->bytes += bytes;
	}
}

/* The one exit of every TC entry program: count, emit an event when `edgeplanectl monitor`
 * listens (events.h), then turn a negative drop reason into a drop. */
static __always_inline int tc_exit(struct __sk_buff *skb, __u32 dir, int ret)
{
	if (ret < 0) {
		metric_count(dir, -ret, skb->len);
		event_emit(skb, dir, -ret, TC_ACT_SHOT);
		return TC_ACT_SHOT;
	}
	metric_count(dir, REASON_FORWARDED, skb->len);
	event_emit(skb, dir, REASON_FORWARDED, ret);
	return ret;
}

#endif
