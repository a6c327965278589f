/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* pod_egress: TC ingress of a pod's host-side veth, i.e. every packet a pod sends.
 * Anti-spoofing, then: local pod -> peer redirect; remote pod -> VXLAN (native or through the
 * device) or direct routing; anything outside the cluster -> the host stack (masqueraded on the
 * underlay NIC's egress by node.c).
 *
 * Path MTU: redirecting skips the MTU check, fragmentation and ICMP of the host's forwarding path,
 * so for VXLAN destinations pod_egress does what that path would do with a packet (or a GSO
 * packet's segments) longer than cfg->mtu, the overlay's MTU:
 *   DF set  -> dropped as DROP_PKT_TOO_BIG and answered with ICMP "fragmentation needed", MTU
 *              cfg->mtu, from cfg->node_ip (lib/icmp.h), so the pod's PMTU discovery converges
 *   no DF   -> TC_ACT_OK: the host forwards it along `clusterCIDR dev edgeplane.1` (MTU = pod MTU),
 *              fragmenting it (software-segmenting GSO first), and overlay_egress puts each
 *              fragment in the tunnel; the outer packets fit the underlay.
 * Direct routes carry the packet unencapsulated and are checked against the underlay NIC's MTU.
 *
 * Network domains (lib/domains.h): a destination owned by a node of a domain this node's domain
 * has no private line to is dropped as DROP_DOMAIN_UNREACHABLE and answered with ICMP "host
 * unreachable" from the node IP, so the pod's connect() fails at once instead of timing out.
 *
 * The error's source is the node IP, not the pods' gateway 169.254.1.1: Linux accepts a
 * "fragmentation needed" from any source (it matches the quoted header to a socket), and the node
 * IP is what the kernel itself answers from when it forwards such a packet (icmp_send picks the
 * source of the route back to the pod, whose veth has no address: the node's primary one). So the
 * fast and slow paths look alike, and tracepath in a pod names the node, not a 169.254.1.1 that
 * every node shares. */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/endpoints.h"
#include "lib/routes.h"
#include "lib/nodes.h"
#include "lib/domains.h"
#include "lib/lb.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/fwd.h"
#include "lib/vxlan.h"
#include "lib/icmp.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* What the exit does besides counting: answer a drop with ICMP. */
struct pod_verdict {
	__u16 frag_mtu; /* next-hop MTU for "fragmentation needed" (DROP_PKT_TOO_BIG) */
	__u8 unreach;   /* "host unreachable" (DROP_DOMAIN_UNREACHABLE) */
};

/* IPv4 + L4 header length of a GSO packet, to decide whether its segments fit. */
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

/* A packet that does not fit the next hop: what a router does (see the top of the file). */
static __always_inline int pod_too_big(__be16 df, __u16 mtu, struct pod_verdict *v)
{
	if (!df)
		return TC_ACT_OK;
	v->frag_mtu = mtu;
	return -DROP_PKT_TOO_BIG;
}

/* Route mode: the packet crosses the underlay as it is, to the owning node (or a router that
 * knows the pod CIDR). */
static __always_inline int pod_to_node_direct(struct __sk_buff *skb, const struct node_cfg *cfg,
					      const struct route *route, const struct node *node,
					      __be16 df, struct pod_verdict *v)
{
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = route->node_ip };
	struct ethhdr *eth;
	__u32 mtu = 0;

	/* The NIC's MTU, per segment for GSO. An error (no such device) is left to the redirect. */
	if (bpf_check_mtu(skb, cfg->underlay_ifindex, &mtu, 0, BPF_MTU_CHK_SEGS) > 0)
		return pod_too_big(df, mtu, v);
	eth = pkt_data(skb);
	if ((void *)(eth + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (node->flags & NODE_NEXTHOP_VALID) {
		eth_set_macs(eth, node->nexthop_mac, cfg->underlay_mac);
		return bpf_redirect(cfg->underlay_ifindex, 0);
	}
	return bpf_redirect_neigh(cfg->underlay_ifindex, &nh, sizeof(nh), 0);
}

static __always_inline int pod_to_remote(struct __sk_buff *skb, const struct node_cfg *cfg,
					 const struct route *route, __u32 ip_hlen, __u8 proto,
					 __u32 tot_len, __be16 df, struct pod_verdict *v)
{
	struct node *node = node_lookup(route->node_ip);
	__u32 gso_hlen;
	int ret;

	if (!node)
		return -DROP_UNKNOWN_NODE;
	if (route->encap == ROUTE_ENCAP_DIRECT)
		return pod_to_node_direct(skb, cfg, route, node, df, v);
	gso_hlen = pod_gso_hlen(skb, ip_hlen, proto);
	if (skb->gso_size ? gso_hlen + skb->gso_size > cfg->mtu : tot_len > cfg->mtu)
		return pod_too_big(df, cfg->mtu, v);
	if (cfg->encap_mode == ENCAP_MODE_DEVICE) {
		ret = vxlan_set_tunnel(skb, cfg, route->node_ip, node);
		if (ret < 0)
			return ret;
		return bpf_redirect(cfg->vxlan_ifindex, 0);
	}
	return vxlan_encap_native(skb, cfg, route->node_ip, node, gso_hlen);
}

static __always_inline int pod_egress_ipv4(struct __sk_buff *skb, const struct node_cfg *cfg,
					   const struct iphdr *ip, struct pod_verdict *v)
{
	__be32 daddr = ip->daddr;
	__be16 df = ip->frag_off & bpf_htons(IP_DF);
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
	/* Public connectivity between the domains: nothing would arrive, so say so at once. */
	if (!domain_reachable(cfg, route->domain)) {
		v->unreach = icmp_may_answer(skb, ip);
		return -DROP_DOMAIN_UNREACHABLE;
	}
	return pod_to_remote(skb, cfg, route, ip_hlen, proto, tot_len, df, v);
}

static __always_inline int pod_egress_handle(struct __sk_buff *skb, const struct node_cfg *cfg,
					     struct pod_verdict *v)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret < 0)
		return ret;
	if (ret == L3_ARP)
		return TC_ACT_OK;
	if (ret != L3_IPV4)
		return -DROP_UNSUPPORTED_L3;
	return pod_egress_ipv4(skb, cfg, ip, v);
}

SEC("tc")
int pod_egress(struct __sk_buff *skb)
{
	struct node_cfg *cfg = node_cfg_get();
	struct pod_verdict v = {};
	int ret;

	if (!cfg)
		return tc_exit(skb, DIR_POD_EGRESS, -DROP_NOT_READY);
	ret = pod_egress_handle(skb, cfg, &v);
	if (ret == -DROP_PKT_TOO_BIG && v.frag_mtu)
		return tc_exit_frag_needed(skb, DIR_POD_EGRESS, cfg->node_ip, v.frag_mtu);
	if (ret == -DROP_DOMAIN_UNREACHABLE && v.unreach)
		return tc_exit_host_unreach(skb, DIR_POD_EGRESS, cfg->node_ip);
	return tc_exit(skb, DIR_POD_EGRESS, ret);
}

char __license[] SEC("license") = "Dual BSD/GPL";
