/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* pod_egress: TC ingress of a pod's host-side veth, i.e. every packet a pod sends.
 * Anti-spoofing, then: local pod -> peer redirect; remote pod -> VXLAN (native or through the
 * device) or direct routing; anything outside the cluster -> the host stack (masqueraded on the
 * underlay NIC's egress by node.c). */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/endpoints.h"
#include "lib/routes.h"
#include "lib/nodes.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/fwd.h"
#include "lib/vxlan.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Route mode: the packet crosses the underlay as it is, to the owning node (or a router that
 * knows the pod CIDR). */
static __always_inline int pod_to_node_direct(struct __sk_buff *skb, const struct node_cfg *cfg,
					      const struct route *route, const struct node *node)
{
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = route->node_ip };
	struct ethhdr *eth = pkt_data(skb);

	if ((void *)(eth + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (node->flags & NODE_NEXTHOP_VALID) {
		eth_set_macs(eth, node->nexthop_mac, cfg->underlay_mac);
		return bpf_redirect(cfg->underlay_ifindex, 0);
	}
	return bpf_redirect_neigh(cfg->underlay_ifindex, &nh, sizeof(nh), 0);
}

/* IPv4 + L4 header length of a GSO packet, to decide whether its segments fit after encap. */
static __always_inline __u32 pod_gso_hlen(struct __sk_buff *skb, __u32 ip_hlen, __u8 proto)
{
	struct tcphdr *tcp;

	if (!skb->gso_size)
		return 0;
	if (proto == IPPROTO_UDP)
		return ip_hlen + sizeof(struct udphdr);
	if (proto != IPPROTO_TCP)
		return ip_hlen;
	tcp = pkt_header(skb, ETH_HLEN + ip_hlen, sizeof(*tcp));
	return tcp ? ip_hlen + tcp->doff * 4 : ip_hlen + sizeof(*tcp);
}

static __always_inline int pod_to_remote(struct __sk_buff *skb, const struct node_cfg *cfg,
					 const struct route *route, __u32 ip_hlen, __u8 proto,
					 __u32 tot_len)
{
	struct node *node = node_lookup(route->node_ip);
	int ret;

	if (!node)
		return -DROP_UNKNOWN_NODE;
	if (route->encap == ROUTE_ENCAP_DIRECT)
		return pod_to_node_direct(skb, cfg, route, node);
	/* Redirecting skips the fragmentation and ICMP the host stack would do. */
	if (!skb->gso_size && tot_len > cfg->mtu)
		return -DROP_PKT_TOO_BIG;
	if (cfg->encap_mode == ENCAP_MODE_DEVICE) {
		ret = vxlan_set_tunnel(skb, cfg, route->node_ip, node);
		if (ret < 0)
			return ret;
		return bpf_redirect(cfg->vxlan_ifindex, 0);
	}
	return vxlan_encap_native(skb, cfg, route->node_ip, node, pod_gso_hlen(skb, ip_hlen, proto));
}

static __always_inline int pod_egress_ipv4(struct __sk_buff *skb, const struct node_cfg *cfg,
					   const struct iphdr *ip)
{
	__be32 daddr = ip->daddr;
	__u32 ip_hlen = ip->ihl * 4;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	__u8 proto = ip->protocol;
	struct endpoint *ep;
	struct route *route;

	/* A pod may only send from its own address, and only through its own veth. */
	ep = endpoint_lookup(ip->saddr);
	if (!ep || ep->ifindex != skb->ifindex)
		return -DROP_SPOOFED_SOURCE;

	ep = endpoint_lookup(daddr);
	if (ep)
		return fwd_to_endpoint(skb, ep);

	route = route_lookup(daddr);
	if (!route)
		return in_cidr(daddr, cfg->cluster_cidr, cfg->cluster_mask) ? -DROP_NO_ROUTE : TC_ACT_OK;
	if (route->flags & ROUTE_LOCAL)
		return -DROP_UNKNOWN_ENDPOINT;
	return pod_to_remote(skb, cfg, route, ip_hlen, proto, tot_len);
}

static __always_inline int pod_egress_handle(struct __sk_buff *skb)
{
	struct node_cfg *cfg = node_cfg_get();
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	if (!cfg)
		return -DROP_NOT_READY;
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret < 0)
		return ret;
	if (ret == L3_ARP)
		return TC_ACT_OK;
	if (ret != L3_IPV4)
		return -DROP_UNSUPPORTED_L3;
	return pod_egress_ipv4(skb, cfg, ip);
}

SEC("tc")
int pod_egress(struct __sk_buff *skb)
{
	return tc_exit(skb, DIR_POD_EGRESS, pod_egress_handle(skb));
}

char __license[] SEC("license") = "Dual BSD/GPL";
