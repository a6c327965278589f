/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Drop and trace events for `edgeplanectl monitor`, written by tc_exit (metrics.h) into a ring
 * buffer. Mirrored in Go by pkg/maps/events.
 *
 * Nobody listening must cost (almost) nothing: every exit reads one word of monitor_cfg_map (an
 * array lookup the verifier inlines into a load) and returns when its bit is clear, before any
 * parsing or ring buffer work. The CLI sets the bits while it runs and clears them when the last
 * listener leaves (pkg/maps/events: an flock on <root>/maps counts listeners, and the map is
 * mmapable so user space can OR bits in atomically).
 *
 * The 5-tuple is read at exit with bpf_skb_load_bytes, not packet pointers: the program may have
 * rewritten or pulled the packet (encapsulation, NAT, ICMP), and load_bytes reads nonlinear data
 * without pulling it. It is best effort: a field the packet is too short for stays zero, and the
 * flags say what was found. A VXLAN packet (UDP 8472, option-less outer header) also gets the
 * tuple of the IPv4 packet it carries. Ring buffer full: the event is counted in events_lost_map
 * and the packet goes on unaffected. XDP programs emit through event_emit_xdp, from the headers
 * they parsed. */
#ifndef EDGEPLANE_EVENTS_H
#define EDGEPLANE_EVENTS_H

#include "common.h"
#include "drop_reasons.h"

enum event_type {
	EVENT_DROP = 1,  /* a packet dropped with a reason */
	EVENT_TRACE = 2, /* a packet forwarded (passed to the stack or redirected) */
};

enum monitor_flags {
	MONITOR_DROPS = 1 << 0, /* emit EVENT_DROP */
	MONITOR_TRACE = 1 << 1, /* emit EVENT_TRACE: one event per forwarded packet, costly */
};

enum event_flags {
	EVENT_F_IPV4 = 1 << 0,     /* tuple holds the packet's IPv4 header (else: not IPv4, or truncated) */
	EVENT_F_INNER = 1 << 1,    /* inner holds the IPv4 packet inside VXLAN */
	EVENT_F_FRAGMENT = 1 << 2, /* tuple is a non-first fragment: no ports */
	EVENT_F_INNER_FRAGMENT = 1 << 3,
};

struct event_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport; /* TCP/UDP only, else 0 */
	__be16 dport;
	__u8 proto;   /* IP protocol */
	__u8 pad[3];
};

struct monitor_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 ifindex;   /* skb->ifindex: the device the program runs on */
	__u32 len;       /* skb->len */
	__u8 type;       /* enum event_type */
	__u8 reason;     /* enum drop_reason; REASON_FORWARDED for trace */
	__u8 dir;        /* enum metric_dir */
	__u8 flags;      /* enum event_flags */
	__s32 verdict;   /* the TC action returned: TC_ACT_SHOT, TC_ACT_OK, TC_ACT_REDIRECT */
	struct event_tuple tuple;
	struct event_tuple inner;
};

struct monitor_cfg {
	__u32 flags; /* enum monitor_flags */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct monitor_cfg);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} monitor_cfg_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* 1 MiB: ~18k events, the CLI drains it continuously */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events_map SEC(".maps");

/* Events that did not fit in events_map, per CPU (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events_lost_map SEC(".maps");

/* Never called: puts struct monitor_event into each object's BTF (a ring buffer map carries no
 * value type), for bpf2go's generated type and the Go layout test; see drop_reasons.h. */
__attribute__((noinline, used)) int edgeplane_monitor_event_btf(struct monitor_event *e)
{
	return e->type;
}

static __always_inline __u32 monitor_flags(void)
{
	__u32 zero = 0;
	struct monitor_cfg *c = bpf_map_lookup_elem(&monitor_cfg_map, &zero);

	return c ? c->flags : 0;
}

/* Reads the IPv4 header at off (and the ports behind it) into t. Returns the header length, or 0
 * when there is no IPv4 header there. */
static __always_inline __u32 event_tuple_read(struct __sk_buff *skb, __u32 off, struct event_tuple *t,
					      __u8 *frag)
{
	struct iphdr ip;
	__u32 hlen;
	__be16 ports[2];

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.version != 4 || ip.ihl < 5)
		return 0;
	hlen = ip.ihl * 4;
	t->saddr = ip.saddr;
	t->daddr = ip.daddr;
	t->proto = ip.protocol;
	if (ip.frag_off & bpf_htons(0x1fff)) {
		*frag = 1;
		return hlen;
	}
	if ((ip.protocol == IPPROTO_TCP || ip.protocol == IPPROTO_UDP) &&
	    bpf_skb_load_bytes(skb, off + hlen, ports, sizeof(ports)) == 0) {
		t->sport = ports[0];
		t->dport = ports[1];
	}
	return hlen;
}

static __always_inline void event_parse(struct __sk_buff *skb, struct monitor_event *e)
{
	__u8 frag = 0, inner_frag = 0;
	__be16 proto;
	__u32 hlen;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0 ||
	    proto != bpf_htons(ETH_P_IP))
		return;
	hlen = event_tuple_read(skb, ETH_HLEN, &e->tuple, &frag);
	if (!hlen)
		return;
	e->flags |= EVENT_F_IPV4 | (frag ? EVENT_F_FRAGMENT : 0);
	/* VXLAN: Ethernet + IPv4 (no options) + UDP + VXLAN + Ethernet + the inner IPv4 */
	if (frag || hlen != sizeof(struct iphdr) || e->tuple.proto != IPPROTO_UDP ||
	    e->tuple.dport != bpf_htons(VXLAN_PORT))
		return;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr) + sizeof(struct udphdr) + VXLAN_HLEN +
			       offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0 ||
	    proto != bpf_htons(ETH_P_IP))
		return;
	if (event_tuple_read(skb, ETH_HLEN + ENCAP_OVERHEAD, &e->inner, &inner_frag))
		e->flags |= EVENT_F_INNER | (inner_frag ? EVENT_F_INNER_FRAGMENT : 0);
}

/* Waking the reader costs more than the whole event (an irq_work and a context switch: ~4 us per
 * event against ~60 ns, prog_bench_test.go), and the kernel's adaptive default wakes it for every
 * event when events are sparse, since the reader then always has caught up. So the reader is only
 * woken once EVENTS_WAKEUP_BYTES have piled up (a burst); otherwise it finds the events when its
 * poll times out (pkg/cli: every 100 ms), which bounds the latency of a lone event. */
#define EVENTS_WAKEUP_BYTES (64 << 10)

static __always_inline __u64 event_wakeup(void)
{
	return bpf_ringbuf_query(&events_map, BPF_RB_AVAIL_DATA) >= EVENTS_WAKEUP_BYTES ?
		       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* A zeroed event with its common fields filled, or NULL when no listener asked for its type (or
 * the ring buffer is full: counted in events_lost_map). The caller fills the tuple and submits. */
static __always_inline struct monitor_event *event_reserve(__u32 dir, __u32 reason, int verdict,
							   __u32 ifindex, __u32 len)
{
	__u32 want = reason == REASON_FORWARDED ? MONITOR_TRACE : MONITOR_DROPS;
	struct monitor_event *e;
	__u32 zero = 0;
	__u64 *lost;

	if (!(monitor_flags() & want))
		return 0;
	e = bpf_ringbuf_reserve(&events_map, sizeof(*e), 0);
	if (!e) {
		lost = bpf_map_lookup_elem(&events_lost_map, &zero);
		if (lost)
			*lost += 1;
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->ifindex = ifindex;
	e->len = len;
	e->type = reason == REASON_FORWARDED ? EVENT_TRACE : EVENT_DROP;
	e->reason = reason;
	e->dir = dir;
	e->verdict = verdict;
	return e;
}

/* Emits an event for the packet leaving with verdict when a listener asked for its type. */
static __always_inline void event_emit(struct __sk_buff *skb, __u32 dir, __u32 reason, int verdict)
{
	struct monitor_event *e = event_reserve(dir, reason, verdict, skb->ifindex, skb->len);

	if (!e)
		return;
	event_parse(skb, e);
	bpf_ringbuf_submit(e, event_wakeup());
}

/* The event of an XDP program, which has no skb for event_parse: the caller passes the IPv4 header
 * it has bounds-checked and the ports behind it. The verdict is spelled in TC terms (TC_ACT_SHOT
 * for XDP_DROP), so that `edgeplanectl monitor` reads every program's events alike; dir tells
 * the XDP hook apart. */
static __always_inline void event_emit_xdp(struct xdp_md *ctx, __u32 dir, __u32 reason, int verdict,
					   const struct iphdr *ip, __be16 sport, __be16 dport)
{
	struct monitor_event *e = event_reserve(dir, reason, verdict, ctx->ingress_ifindex,
						(void *)(long)ctx->data_end - (void *)(long)ctx->data);

	if (!e)
		return;
	e->flags = EVENT_F_IPV4;
	e->tuple.saddr = ip->saddr;
	e->tuple.daddr = ip->daddr;
	e->tuple.proto = ip->protocol;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		e->tuple.sport = sport;
		e->tuple.dport = dport;
	}
	bpf_ringbuf_submit(e, event_wakeup());
}

#endif
