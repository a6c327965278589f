/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The underlay NIC's XDP hook, ahead of node_ingress (node.c).
 * node_xdp: NodePort isolation at the earliest point. A TCP, UDP or SCTP packet for a service
 *   frontend this node does not listen on (LB_SVC_CLOSED in lb_svc_map; lib/nodeport.h decides
 *   which frontend, kube-proxy's way) is dropped before the kernel builds an skb for it, counted
 *   as DROP_NODEPORT_CLOSED under DIR_NODE_XDP and reported to `edgeplanectl monitor`.
 *   Everything else passes untouched, to be counted by node_ingress: VXLAN, ARP, IPv6, fragments
 *   without ports, the agent's own traffic, replies to masqueraded pod connections, and malformed
 *   frames whatever their ports: an IPv4 total length shorter than the header or longer than the
 *   frame, a TCP or UDP header (SCTP: its first 8 bytes) cut short by the frame or by that total
 *   length (what follows it is padding). node_ingress drops the TCP and UDP ones as INVALID
 *   (parse_ipv4, node_lb) whether or not a closed frontend has their port, so a malformed frame
 *   is counted once, as malformed; SCTP it leaves to the kernel, malformed or not.
 * Passes everything while the agent has not configured the node: this is the node's only NIC. */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/lb.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/nat.h"
#include "lib/nodeport.h"

/* The ports at the start of a TCP, UDP or SCTP header. */
struct l4_ports {
	__be16 sport;
	__be16 dport;
};

/* A reply to a masqueraded pod connection (nat_rev_map) whose node port has the number of a
 * closed NodePort, which only a NodePort range reaching into the masquerade ports (lib/nat.h)
 * makes possible: the service is not what it is for. Asked only of packets already found closed,
 * and with the default NodePort range (30000-32767) answered by the port check alone. */
static __always_inline int masquerade_reply(const struct iphdr *ip, const struct l4_ports *ports)
{
	struct nat_rev_key rk = {
		.remote_ip = ip->saddr,
		.remote_port = ports->sport,
		.node_port = ports->dport,
		.proto = ip->protocol,
	};
	__u16 port = bpf_ntohs(ports->dport);

	if (port < NAT_PORT_MIN || port > NAT_PORT_MAX)
		return 0;
	return bpf_map_lookup_elem(&nat_rev_map, &rk) != 0;
}

/* Returns -DROP_NODEPORT_CLOSED, with *ipp and *portsp set, for a packet to a frontend this node
 * does not listen on; XDP_PASS for anything else. */
static __always_inline int node_xdp_handle(struct xdp_md *ctx, struct iphdr **ipp, struct l4_ports **portsp)
{
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = (void *)(long)ctx->data;
	struct l4_ports *ports;
	struct node_cfg *cfg;
	struct lb_svc *svc;
	struct iphdr *ip;
	__u32 tot;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return XDP_PASS;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_SCTP)
		return XDP_PASS;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return XDP_PASS; /* a later fragment: no ports */
	/* Malformed: node_ingress's to count (INVALID), by the tests of its parse_ipv4 and node_lb:
	 * the total length within the frame and no shorter than the header, a whole TCP or UDP
	 * header (SCTP: 8 bytes, as lb_parse reads) within the datagram. */
	tot = bpf_ntohs(ip->tot_len);
	/* Verifiers before 6.x know nothing of a byte swap's result (5.10 and 6.1 refuse the pointer
	 * arithmetic below: "unbounded min value"); clang drops a plain mask as redundant. */
	asm volatile("%[tot] &= 0xffff" : [tot] "+r"(tot));
	if (tot < ip->ihl * 4 || (void *)ip + tot > end ||
	    !ipv4_holds_l4(ip, ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr)))
		return XDP_PASS;
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 1) > end)
		return XDP_PASS;
	if (ip->protocol == IPPROTO_UDP && ports->dport == bpf_htons(VXLAN_PORT))
		return XDP_PASS; /* the overlay, node_ingress's */
	cfg = node_cfg_get();
	if (!cfg)
		return XDP_PASS;
	svc = nodeport_lookup(ctx, cfg, ip, ports->sport, ports->dport, ctx->ingress_ifindex);
	if (!svc || !(svc->flags & LB_SVC_CLOSED) || masquerade_reply(ip, ports))
		return XDP_PASS;
	*ipp = ip;
	*portsp = ports;
	return -DROP_NODEPORT_CLOSED;
}

SEC("xdp")
int node_xdp(struct xdp_md *ctx)
{
	struct l4_ports *ports = 0;
	struct iphdr *ip = 0;
	int ret = node_xdp_handle(ctx, &ip, &ports);

	if (ret >= 0)
		return ret;
	metric_count(DIR_NODE_XDP, -ret, (void *)(long)ctx->data_end - (void *)(long)ctx->data);
	if (ip && ports)
		event_emit_xdp(ctx, DIR_NODE_XDP, -ret, TC_ACT_SHOT, ip, ports->sport, ports->dport);
	return XDP_DROP;
}

char __license[] SEC("license") = "Dual BSD/GPL";
