/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The underlay NIC.
 * node_ingress (tc ingress): VXLAN (UDP 8472) is checked early (our VNI, a known node of a
 *   reachable network domain as outer source) and, when it carries IPv4 to a local pod,
 *   decapsulated here and peer-redirected; the rest of VXLAN goes on to the kernel's collect_md
 *   device. Other traffic gets masquerade undone
 *   and, when it is for a local pod, a peer redirect. Other tunnels (Raven, UDP 4472) pass.
 *   What is delivered to a local pod gets the services' reverse translation first when it is a
 *   backend's reply (lib/lb_xlate.h).
 * node_egress (tc egress): masquerade of pod traffic leaving the cluster.
 * Both pass traffic while the agent has not configured the node: this is the node's only NIC, and
 * failing closed here would cut the agent off from the API server. */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/endpoints.h"
#include "lib/routes.h"
#include "lib/nodes.h"
#include "lib/domains.h"
#include "lib/lb.h"
#include "lib/lb_xlate.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/fwd.h"
#include "lib/vxlan.h"
#include "lib/nat.h"
#include "lib/icmp.h"

/* A VXLAN frame to port 8472 (outer IPv4 already validated, not a fragment). */
static __always_inline int node_vxlan_ingress(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	struct ethhdr *eth, *inner_eth;
	struct iphdr *outer, *inner;
	struct vxlanhdr *vx;
	struct endpoint *ep;
	struct node *peer;
	int ret;

	if (pkt_pull(skb, VXLAN_INNER_ETH_OFF) < 0)
		return -DROP_INVALID;
	eth = pkt_data(skb);
	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (outer->ihl != 5)
		return TC_ACT_OK; /* outer options: rare enough to leave to the kernel device */
	vx = pkt_data(skb) + VXLAN_HDR_OFF;
	if ((void *)(vx + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (!(vx->flags & VXLAN_FLAG_VNI) ||
	    (vx->vni & bpf_htonl(0xffffff00)) != bpf_htonl(cfg->vni << 8))
		return -DROP_VNI_MISMATCH;
	/* Anti-spoofing: only cluster nodes of reachable domains may inject into the overlay. */
	peer = node_lookup(outer->saddr);
	if (!peer)
		return -DROP_UNKNOWN_TUNNEL_SOURCE;
	if (!domain_reachable(cfg, peer->domain))
		return -DROP_DOMAIN_UNREACHABLE;

	if (pkt_pull(skb, VXLAN_INNER_IP_OFF) < 0)
		return -DROP_INVALID;
	inner_eth = pkt_data(skb) + VXLAN_INNER_ETH_OFF;
	if ((void *)(inner_eth + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (inner_eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (pkt_pull(skb, VXLAN_INNER_IP_OFF + sizeof(struct iphdr)) < 0)
		return -DROP_INVALID;
	inner = pkt_data(skb) + VXLAN_INNER_IP_OFF;
	if ((void *)(inner + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (inner->version != 4 || inner->ihl < 5)
		return -DROP_INVALID;

	ep = endpoint_lookup(inner->daddr);
	if (!ep)
		return TC_ACT_OK; /* to the host, or a pod that is gone: the device and routing decide */
	ret = vxlan_decap(skb);
	if (ret)
		return ret < 0 ? ret : TC_ACT_OK;
	ret = lb_rev_deliver(skb); /* a remote backend's reply to a local client */
	if (ret < 0)
		return ret;
	return fwd_to_endpoint(skb, ep);
}

/* Non-VXLAN: undo masquerade, then deliver to a local pod or let the host have it. A packet
 * routed here toward a pod of a domain this node cannot reach (a cloud host's, through the cloud
 * gateway) is dropped and answered (*unreach) rather than left to the host's unreachable route. */
static __always_inline int node_plain_ingress(struct __sk_buff *skb, const struct node_cfg *cfg,
					      __u8 *unreach)
{
	struct route *route;
	struct endpoint *ep;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : TC_ACT_OK;
	ret = nat_rnat(skb, cfg, ip);
	if (ret < 0)
		return ret;
	/* parse again: the rewrite invalidated the pointers */
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : TC_ACT_OK;
	ep = endpoint_lookup(ip->daddr);
	if (ep) {
		/* a backend's reply to a local client: direct routing, or a host-network backend's
		 * (the masquerade undone above) */
		ret = lb_rev_deliver(skb);
		if (ret < 0)
			return ret;
		return fwd_to_endpoint(skb, ep);
	}
	/* a host-network backend's reply to the node's own connection to a service (overlay.c) */
	if (ip->daddr == cfg->pod_cidr) {
		ret = lb_rev_deliver(skb);
		return ret < 0 ? ret : TC_ACT_OK;
	}
	if (!in_cidr(ip->daddr, cfg->cluster_cidr, cfg->cluster_mask))
		return TC_ACT_OK;
	route = route_lookup(ip->daddr);
	if (!route || (route->flags & ROUTE_LOCAL) || domain_reachable(cfg, route->domain))
		return TC_ACT_OK;
	*unreach = icmp_may_answer(skb, ip);
	return -DROP_DOMAIN_UNREACHABLE;
}

static __always_inline int node_ingress_handle(struct __sk_buff *skb, const struct node_cfg *cfg,
					       __u32 *dir, __u8 *unreach)
{
	struct udphdr *udp;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	if (!cfg)
		return TC_ACT_OK;
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : TC_ACT_OK;
	if (ip->protocol == IPPROTO_UDP && !ipv4_is_fragment(ip)) {
		udp = pkt_header(skb, ETH_HLEN + ip->ihl * 4, sizeof(*udp));
		if (!udp)
			return -DROP_INVALID;
		if (udp->dest == bpf_htons(VXLAN_PORT)) {
			*dir = DIR_OVERLAY_IN;
			return node_vxlan_ingress(skb, cfg);
		}
	}
	return node_plain_ingress(skb, cfg, unreach);
}

static __always_inline int node_egress_handle(struct __sk_buff *skb)
{
	struct node_cfg *cfg = node_cfg_get();
	int ret;

	if (!cfg)
		return TC_ACT_OK;
	ret = nat_snat(skb, cfg);
	return ret < 0 ? ret : TC_ACT_OK;
}

SEC("tc")
int node_ingress(struct __sk_buff *skb)
{
	struct node_cfg *cfg = node_cfg_get();
	__u32 dir = DIR_NODE_IN;
	__u8 unreach = 0;
	int ret = node_ingress_handle(skb, cfg, &dir, &unreach);

	if (ret == -DROP_DOMAIN_UNREACHABLE && unreach && cfg)
		return tc_exit_host_unreach_nic(skb, dir, cfg->node_ip);
	return tc_exit(skb, dir, ret);
}

SEC("tc")
int node_egress(struct __sk_buff *skb)
{
	return tc_exit(skb, DIR_NODE_OUT, node_egress_handle(skb));
}

char __license[] SEC("license") = "Dual BSD/GPL";
