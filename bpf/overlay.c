/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The collect_md VXLAN device "edgeplane.1".
 * overlay_ingress (tc ingress): what the kernel decapsulated (fragments, traffic to the host,
 *   frames node.c left to it): only from known nodes of reachable domains with our VNI; replies
 *   to translated cloud-host traffic get their destination back; local pods get a peer redirect.
 * overlay_egress (tc egress): host traffic routed into the device (the node's own, and cloud hosts'
 *   forwarded by a cloud gateway, and whatever the host forwards to a pod CIDR, e.g. a packet a
 *   gateway sent here for a pod this node does not own): sources outside the cluster CIDR are
 *   translated to the overlay address, then the tunnel key and inner MACs come from the maps
 *   (Flannel peers need their VTEP MAC as the inner destination). A destination on a direct
 *   route (a peer of this node's route-mode domain) is not tunnelled: the packet leaves the
 *   underlay NIC as it is, toward the next hop to the owning node (lib/direct.h), as pod_egress
 *   sends a pod's; so the node routes as its direct routes say (a routing loop a bad gateway route
 *   makes ends by TTL, the host's forwarding and the gateway's each decrementing it). The agent
 *   gives pod CIDRs of unreachable domains kernel "unreachable" routes, so host sockets fail at
 *   once and forwarded senders get ICMP from the kernel; the domain check here is the datapath's
 *   own backstop.
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
 *   A backend that is one of this node's own addresses (a host-network endpoint here: the FIB
 *   says the host would take it in) is delivered to the host stack as if it came from outside:
 *   the overlay-address source becomes HOST_HAIRPIN_IP, which the agent routes into this device,
 *   and the packet is redirected into the device's own ingress (marked, as icmp_return_to_host's
 *   errors, so that overlay_ingress lets it through). The host answers the hairpin address, so
 *   the answer comes back here, where the destination becomes the overlay address again and the
 *   service's translation is undone (lb_rev_overlay) before it goes into the ingress the same way.
 *   Delivering with the overlay address as source would not do: a local source arriving on a
 *   device is a martian, and the host's answer between two local addresses would go over lo,
 *   where no program reverses the translation.
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
#include "lib/nat_snat.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/fwd.h"
#include "lib/vxlan.h"
#include "lib/icmp.h"
#include "lib/nodeport.h"
#include "lib/ttl.h"
#include "lib/direct.h"
#include "lib/peer_answer.h"

/* The source of the node's own connections to a backend on one of its own addresses, as the host
 * stack sees them (the head of the file); pkg/datapath.HostHairpinIP, routed into this device by
 * the agent. Link-local like the pods' hairpin address (lib/lb_xlate.h), and next to it. */
#define HOST_HAIRPIN_IP bpf_htonl(0xa9fe2a02) /* 169.254.42.2 */

/* Whether the decapsulated frame from peer_ip, a node of a domain this node cannot reach, is that
 * node's answer for a sender behind this one (lib/peer_answer.h). */
static __always_inline int overlay_peer_answer(struct __sk_buff *skb, const struct node_cfg *cfg, __be32 peer_ip)
{
	struct icmphdr *icmp;
	struct ethhdr *eth;
	struct iphdr *ip;

	if (skb->gso_size || pkt_pull(skb, ETH_HLEN + sizeof(*ip) + sizeof(*icmp)) < 0)
		return 0;
	eth = pkt_data(skb);
	ip = (void *)(eth + 1);
	icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) > pkt_end(skb) || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return peer_answer(cfg, ip, icmp, peer_ip);
}

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
	if (bpf_skb_get_tunnel_key(skb, &key, TUNNEL_KEY_SIZE, 0) < 0)
		return -DROP_UNKNOWN_TUNNEL_SOURCE;
	peer = node_lookup(bpf_htonl(key.remote_ipv4)); /* remote_ipv4 is in host byte order */
	if (!peer)
		return -DROP_UNKNOWN_TUNNEL_SOURCE;
	if (key.tunnel_id != cfg->vni)
		return -DROP_VNI_MISMATCH;
	if (!domain_reachable(cfg, peer->domain) && !overlay_peer_answer(skb, cfg, bpf_htonl(key.remote_ipv4)))
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
	/* This node's hop (lib/ttl.h). An expired packet is dropped unanswered here: what reaches
	 * this device are GRO aggregates, packets with outer options and fragments, which node_ingress
	 * leaves to the kernel; traceroute's probes are answered there. */
	ret = ipv4_ttl_dec(skb, ETH_HLEN);
	if (ret < 0)
		return ret;
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

/* Into the host stack as if received by this device: the frame's destination is the device's own
 * MAC (the host built it; the device is NOARP, so both MACs are its own anyway), and the mark lets
 * it through overlay_ingress, as icmp_return_to_host's errors (lib/icmp.h). A redirect within one
 * network namespace keeps the mark; overlay_ingress clears it. */
static __always_inline int overlay_to_host(struct __sk_buff *skb)
{
	struct ethhdr *eth = pkt_data(skb);

	if ((void *)(eth + 1) > pkt_end(skb))
		return -DROP_INVALID;
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	skb->mark = ICMP_TO_HOST_MARK;
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* The node's own translated packet (source: the overlay address, after nat_snat_overlay) whose
 * backend is one of this node's addresses, as the FIB says (a host-network endpoint on this node):
 * the source becomes HOST_HAIRPIN_IP, port kept, and the packet goes into the host stack through
 * the device's ingress. The mapping is one address for one, so each of the node's connections stays
 * one to the backend, and the answer to it names the hairpin address (overlay_host_answer).
 * Returns 0 when the backend is not local (it leaves through the NIC), a verdict, or -reason. */
static __always_inline int overlay_to_host_backend(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	struct lb_tuple t;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : -DROP_INVALID;
	ret = lb_parse(skb, ip, &t);
	if (ret)
		return ret < 0 ? ret : -DROP_INVALID; /* translated, so TCP, UDP or SCTP */
	/* parse again: lb_parse may have pulled */
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : -DROP_INVALID;
	if (!nodeport_local_addr(skb, cfg, ip, t.sport, t.dport, skb->ifindex))
		return 0;
	/* A source inside the cluster CIDR other than the overlay address: the answer could not be
	 * told apart from the overlay address's. No host socket has one. */
	if (t.saddr != cfg->pod_cidr)
		return -DROP_NAT_FAILED;
	ret = lb_rewrite(skb, &t, 0, HOST_HAIRPIN_IP, t.sport);
	if (ret < 0)
		return ret;
	return overlay_to_host(skb);
}

/* An ICMP error (t: its tuple) the host sends about a packet from HOST_HAIRPIN_IP: the outer
 * destination and the quoted source become the overlay address again. The quoted address changes
 * together with the quoted IP checksum, which leaves the ICMP checksum unchanged (as
 * nat_rev_icmp_error); the outer one is not in it. */
static __always_inline int overlay_host_answer_icmp(struct __sk_buff *skb, const struct node_cfg *cfg,
						    const struct lb_tuple *t)
{
	__u32 in_ip_off = t->l4_off + sizeof(struct icmphdr);
	__be32 overlay = cfg->pod_cidr, hairpin = HOST_HAIRPIN_IP;
	struct iphdr *in_ip;

	in_ip = pkt_header(skb, in_ip_off, sizeof(*in_ip));
	if (!in_ip || in_ip->ihl != 5 || in_ip->saddr != hairpin)
		return -DROP_UNKNOWN_ENDPOINT;
	if (bpf_l3_csum_replace(skb, in_ip_off + offsetof(struct iphdr, check), hairpin, overlay, 4) < 0 ||
	    bpf_skb_store_bytes(skb, in_ip_off + offsetof(struct iphdr, saddr), &overlay, 4, 0) < 0 ||
	    bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), hairpin, overlay, 4) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr), &overlay, 4, 0) < 0)
		return -DROP_NAT_FAILED;
	return 0;
}

/* The host's packet to HOST_HAIRPIN_IP (ip: its header): a host-network backend's answer to one of
 * the node's own connections (overlay_to_host_backend), or an ICMP error about its packet. The
 * destination becomes the overlay address, then both translations of the connection are undone as
 * for a remote backend's answer (lb_rev_overlay: the gateway's for a client outside the cluster
 * CIDR, then the service's), and the answer goes into the host stack to the client's socket. Only
 * answers to live connections: anything else to the hairpin address is dropped as UNKNOWN_ENDPOINT,
 * as pod_egress does with the pods' one. */
static __always_inline int overlay_host_answer(struct __sk_buff *skb, const struct node_cfg *cfg,
					       const struct iphdr *ip)
{
	struct lb_tuple t;
	__u16 ct_flags;
	int ret;

	ret = lb_parse(skb, ip, &t);
	if (ret < 0)
		return ret;
	if (ret == LB_SKIP)
		return -DROP_UNKNOWN_ENDPOINT;
	if (ret == LB_ICMP_ERROR)
		ret = overlay_host_answer_icmp(skb, cfg, &t);
	else
		ret = lb_rewrite(skb, &t, 1, cfg->pod_cidr, t.dport);
	if (ret < 0)
		return ret;
	ret = lb_rev_overlay(skb, cfg, &ct_flags);
	if (ret <= 0)
		return ret < 0 ? ret : -DROP_UNKNOWN_ENDPOINT;
	return overlay_to_host(skb);
}

/* A host connection's backend that is not behind the tunnel (route: none or this node's pod
 * CIDR), or a destination outside the cluster CIDR that is no frontend (xlated 0). A client outside
 * the cluster CIDR (a cloud host through the gateway, a socket bound to the node IP) is translated
 * to the overlay address first, as for remote pods, so that the reply comes back where both
 * translations are undone: pod_egress (a local pod), overlay_host_answer (a host-network backend on
 * this node) or node_ingress (one elsewhere, after the masquerade). */
static __always_inline int overlay_to_backend(struct __sk_buff *skb, const struct node_cfg *cfg,
					      __be32 daddr, const struct route *route, int xlated)
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
	if (xlated) {
		ret = overlay_to_host_backend(skb, cfg);
		if (ret)
			return ret;
	}
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
	if (bpf_skb_get_tunnel_key(skb, &key, TUNNEL_KEY_SIZE, 0) == 0)
		return TC_ACT_OK;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret < 0)
		return ret;
	if (ret != L3_IPV4)
		return -DROP_UNSUPPORTED_L3;
	if (ip->daddr == HOST_HAIRPIN_IP)
		return overlay_host_answer(skb, cfg, ip);
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
		return overlay_to_backend(skb, cfg, ip->daddr, route, 0);
	if (!route || (route->flags & ROUTE_LOCAL))
		return xlated ? overlay_to_backend(skb, cfg, ip->daddr, route, 1) : -DROP_NO_ROUTE;
	if (!domain_reachable(cfg, route->domain))
		return -DROP_DOMAIN_UNREACHABLE;
	node = node_lookup(route->node_ip);
	if (!node)
		return -DROP_UNKNOWN_NODE;
	ret = nat_snat_overlay(skb, cfg);
	if (ret < 0)
		return ret;
	if (route->encap == ROUTE_ENCAP_DIRECT)
		return direct_redirect(skb, cfg, route->node_ip, node); /* lib/direct.h */
	ret = vxlan_set_tunnel(skb, cfg, route->node_ip, node);
	return ret < 0 ? ret : TC_ACT_OK;
}

SEC("tc")
int overlay_ingress(struct __sk_buff *skb)
{
	/* what overlay_egress turned around into the host stack (an error, or the node's own
	 * connection to a host-network backend on this node and its answer), counted there */
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
