/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The collect_md VXLAN device "edgeplane.1".
 * overlay_ingress (tc ingress): what the kernel decapsulated (fragments, traffic to the host,
 *   frames node.c left to it): only from known nodes of reachable domains with our VNI; replies
 *   to translated cloud-host traffic get their destination back; local pods get a peer redirect.
 * overlay_egress (tc egress): host traffic routed into the device (the node's own, and cloud hosts'
 *   forwarded by a cloud gateway): sources outside the cluster CIDR are translated to the overlay
 *   address, then the tunnel key and inner MACs come from the maps (Flannel peers need their VTEP
 *   MAC as the inner destination). The agent gives pod CIDRs of unreachable domains kernel
 *   "unreachable" routes, so host sockets fail at once and forwarded senders get ICMP from the
 *   kernel; the domain check here is the datapath's own backstop.
 * Services: the agent also routes the service CIDR into the device (src = the overlay address), so
 *   overlay_egress translates the node's own connections to frontends like pod_egress does a pod's
 *   (lib/lb_xlate.h): a remote backend goes on through the tunnel; a local one is delivered to its
 *   pod (redirect to the egress of its host veth); a backend outside the cluster CIDR (a host-network
 *   endpoint such as the API server behind the `kubernetes` Service) leaves through the underlay NIC,
 *   masqueraded there like pod traffic, and its replies are reverse-translated by node_ingress. The
 *   replies of remote backends come back through the tunnel to the overlay address: overlay_ingress
 *   reverse-translates everything it receives before delivering it, and sends those to clients
 *   outside the cluster (NodePort and friends, node.c) out of the underlay NIC, as node_ingress
 *   does with what it decapsulates itself.
 *   The agent routes externalIPs and LoadBalancer IPs here too (/32 each): their frontend ports are
 *   translated like a ClusterIP's; other ports of those addresses leave through the NIC as they
 *   would have without the route.
 *   A frontend without backends (none at all, or none for this node with internalTrafficPolicy
 *   Local) answers with ICMP "port unreachable" from its address, as pod_egress does for pods, so
 *   that connect() fails at once (kube-proxy REJECTs the first case; the second it DROPs, pods and
 *   host alike). The error goes back into the host stack through the device's own ingress
 *   (lib/icmp.h: icmp_return_to_host), which overlay_ingress lets through by its mark. */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/endpoints.h"
#include "lib/routes.h"
#include "lib/nodes.h"
#include "lib/domains.h"
#include "lib/lb.h"
#include "lib/lb_xlate.h"
#include "lib/nat.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/fwd.h"
#include "lib/vxlan.h"
#include "lib/icmp.h"

static __always_inline int overlay_ingress_handle(struct __sk_buff *skb)
{
	struct node_cfg *cfg = node_cfg_get();
	struct bpf_tunnel_key key = {};
	struct endpoint *ep;
	struct node *peer;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u16 ct_flags;
	int ret;

	if (!cfg)
		return -DROP_NOT_READY;
	/* No tunnel metadata: not from the wire, so from no known node. */
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return -DROP_UNKNOWN_TUNNEL_SOURCE;
	peer = node_lookup(bpf_htonl(key.remote_ipv4)); /* remote_ipv4 is in host byte order */
	if (!peer)
		return -DROP_UNKNOWN_TUNNEL_SOURCE;
	if (key.tunnel_id != cfg->vni)
		return -DROP_VNI_MISMATCH;
	if (!domain_reachable(cfg, peer->domain))
		return -DROP_DOMAIN_UNREACHABLE;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret < 0)
		return ret;
	if (ret != L3_IPV4)
		return TC_ACT_OK;
	/* a remote backend's reply, to a local pod, to the node's own connection, or to a client
	 * outside the cluster (node.c's NodePort path). The NIC decapsulates and sends the last ones
	 * itself, except what it leaves to the kernel device: GRO aggregates where
	 * bpf_skb_adjust_room cannot decapsulate them (lib/vxlan.h), outer IP options, fragments. */
	ret = lb_rev_overlay(skb, cfg, &ct_flags);
	if (ret < 0)
		return ret;
	if (ct_flags & LB_CT_EXTERNAL)
		return bpf_redirect_neigh(cfg->underlay_ifindex, 0, 0, 0);
	/* parse again: the rewrites invalidated the pointers */
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : TC_ACT_OK;
	ep = endpoint_lookup(ip->daddr);
	if (!ep)
		return TC_ACT_OK;
	return fwd_to_endpoint(skb, ep);
}

/* Host traffic to a service frontend. Returns 1 when translated, 0 when it is no service's, or
 * -reason (INVALID: a truncated TCP/UDP header, to any destination); for NO_SERVICE_BACKEND
 * *unreach_vip is the frontend's address, to answer from. */
static __always_inline int overlay_lb(struct __sk_buff *skb, const struct node_cfg *cfg,
				      const struct iphdr *ip, __be32 *unreach_vip)
{
	struct lb_tuple t;
	struct lb_svc *svc;
	__be32 vip;
	int ret;

	/* Parsed for every destination, pods' too: a truncated TCP/UDP header is dropped as INVALID
	 * here as on every other path, not tunnelled (host traffic includes what the node forwards). */
	ret = lb_parse(skb, ip, &t);
	if (ret)
		return ret < 0 ? ret : 0;
	if (in_cidr(t.daddr, cfg->cluster_cidr, cfg->cluster_mask))
		return 0;
	svc = lb_svc_lookup(t.daddr, t.dport, t.proto, LB_SCOPE_INTERNAL);
	if (!svc)
		return 0;
	vip = t.daddr;
	ret = lb_xlate_fwd(skb, svc, &t);
	if (ret == -DROP_NO_SERVICE_BACKEND)
		*unreach_vip = vip; /* nothing rewritten yet: the answer quotes what the host sent */
	return ret < 0 ? ret : 1;
}

/* A host connection's backend that is not behind the tunnel (route: none or this node's pod
 * CIDR), or a destination outside the cluster CIDR that is no frontend. A client outside the cluster CIDR (a cloud host through the gateway, a socket bound to the
 * node IP) is translated to the overlay address first, as for remote pods, so that the reply comes
 * back where both translations are undone: pod_egress (a local pod) or node_ingress (a host-network
 * backend, after the masquerade). */
static __always_inline int overlay_to_backend(struct __sk_buff *skb, const struct node_cfg *cfg,
					      __be32 daddr, const struct route *route)
{
	struct endpoint *ep = endpoint_lookup(daddr);
	int ret;

	if (!ep && route)
		return -DROP_UNKNOWN_ENDPOINT; /* a local pod that is gone */
	if (!ep && in_cidr(daddr, cfg->cluster_cidr, cfg->cluster_mask))
		return -DROP_NO_ROUTE;
	ret = nat_snat_overlay(skb, cfg);
	if (ret < 0)
		return ret;
	if (ep)
		return fwd_to_endpoint_egress(skb, ep);
	/* Outside the cluster: the FIB's next hop on the underlay NIC, whose egress masquerades the
	 * overlay address (it is in this node's pod CIDR) like pod traffic. */
	return bpf_redirect_neigh(cfg->underlay_ifindex, 0, 0, 0);
}

static __always_inline int overlay_egress_handle(struct __sk_buff *skb, __be32 *unreach_vip)
{
	struct node_cfg *cfg = node_cfg_get();
	struct bpf_tunnel_key key = {};
	struct route *route;
	struct node *node;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret, xlated;

	if (!cfg)
		return -DROP_NOT_READY;
	/* Pod traffic redirected here by pod_egress (device mode) already has its key. */
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0)
		return TC_ACT_OK;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret < 0)
		return ret;
	if (ret != L3_IPV4)
		return -DROP_UNSUPPORTED_L3;
	xlated = overlay_lb(skb, cfg, ip, unreach_vip);
	if (xlated < 0)
		return xlated;
	/* parse again: parsing L4 may have pulled, translating rewrote */
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : -DROP_INVALID;
	route = route_lookup(ip->daddr);
	/* Not translated and outside the cluster CIDR: a port of an externalIP or LoadBalancer IP
	 * (routed here by the agent for its frontends) or of the service CIDR that is no frontend.
	 * It leaves through the NIC as it would have without the route. */
	if (!route && !xlated && !in_cidr(ip->daddr, cfg->cluster_cidr, cfg->cluster_mask))
		return overlay_to_backend(skb, cfg, ip->daddr, route);
	if (!route || (route->flags & ROUTE_LOCAL))
		return xlated ? overlay_to_backend(skb, cfg, ip->daddr, route) : -DROP_NO_ROUTE;
	if (!domain_reachable(cfg, route->domain))
		return -DROP_DOMAIN_UNREACHABLE;
	node = node_lookup(route->node_ip);
	if (!node)
		return -DROP_UNKNOWN_NODE;
	ret = nat_snat_overlay(skb, cfg);
	if (ret < 0)
		return ret;
	ret = vxlan_set_tunnel(skb, cfg, route->node_ip, node);
	return ret < 0 ? ret : TC_ACT_OK;
}

SEC("tc")
int overlay_ingress(struct __sk_buff *skb)
{
	/* overlay_egress's answer to the host, already counted there as ICMP_SENT */
	if (icmp_returned_to_host(skb))
		return TC_ACT_OK;
	return tc_exit(skb, DIR_OVERLAY_IN, overlay_ingress_handle(skb));
}

SEC("tc")
int overlay_egress(struct __sk_buff *skb)
{
	__be32 unreach_vip = 0;
	int ret = overlay_egress_handle(skb, &unreach_vip);

	if (ret == -DROP_NO_SERVICE_BACKEND && unreach_vip)
		return tc_exit_port_unreach_host(skb, DIR_OVERLAY_OUT, unreach_vip);
	return tc_exit(skb, DIR_OVERLAY_OUT, ret);
}

char __license[] SEC("license") = "Dual BSD/GPL";
