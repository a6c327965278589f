/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The underlay NIC.
 * node_ingress (tc ingress): VXLAN (UDP 8472) to the node IP is checked early (the outer IPv4
 *   and UDP headers as the kernel's receive path would, lib/vxlan.h; our VNI, a known node of a
 *   reachable network domain as outer source) and, when it carries IPv4 to a local pod,
 *   decapsulated here and peer-redirected; the rest of VXLAN goes on to the kernel's collect_md
 *   device. VXLAN to a multicast or broadcast address is dropped, to any other address left to
 *   the kernel (node_vxlan_for_node). Other traffic gets masquerade undone
 *   and, when it is for a local pod, a peer redirect. Other tunnels (Raven, UDP 4472) pass.
 *   What is delivered to a local pod gets the services' reverse translation first when it is a
 *   backend's reply (lib/lb_xlate.h).
 *   Services from outside (node_lb): TCP/UDP to a frontend of scope EXTERNAL (NodePort on this
 *   node's addresses, LoadBalancer IPs, externalIPs; lib/nodeport.h decides as node_xdp does) is
 *   translated to its backend: a local one gets the client's address, a remote one (eTP Cluster)
 *   the overlay address as source and goes through the tunnel; that backend's reply (or an ICMP
 *   error about the client's packet) comes back to the overlay address, is translated back twice
 *   and leaves through the NIC (node_lb_reply; overlay.c for what the kernel device decapsulates).
 *   VXLAN from a node of an unreachable domain is answered with "host unreachable" back through
 *   the tunnel, for the window in which that node has not applied a domain change yet
 *   (lib/tunnel_unreach.h).
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
#include "lib/nat_port.h"
#include "lib/nat_snat.h"
#include "lib/nat_rev.h"
#include "lib/icmp.h"
#include "lib/nodeport.h"
#include "lib/tunnel_unreach.h"
#include "lib/peer_answer.h"
#include "lib/ttl.h"
#include "lib/direct.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* ---- Services from outside the cluster (scope EXTERNAL: NodePort, LoadBalancer IPs,
 * externalIPs); see the top of the file and docs/architecture.md, Services. ---- */

/* Out of the NIC toward a client outside the cluster: the kernel's FIB and neighbour table give
 * the next hop (the host stack would drop a packet whose source is one of its own addresses
 * arriving from elsewhere, and node_egress would masquerade a pod's). */
static __always_inline int node_lb_to_client(const struct node_cfg *cfg)
{
	return bpf_redirect_neigh(cfg->underlay_ifindex, 0, 0, 0);
}

/* The frontend an outside client addressed (node_lb), for an answer about its translated packet. */
struct node_lb_front {
	__be32 addr;
	__be16 port;
	__u8 unreach; /* the backend is in a domain this node cannot reach: answer */
	__u8 too_big; /* the packet does not fit the overlay to the backend: answer if DF */
	__u8 ttl_exceeded; /* its TTL ran out delivering it to a local backend: answer */
};

/* IPv4 + L4 header length of t's packet, for the MTU decision on the way into the tunnel. */
static __always_inline __u32 node_lb_hlen(struct __sk_buff *skb, const struct lb_tuple *t)
{
	__u32 ip_hlen = t->l4_off - ETH_HLEN;
	struct tcphdr *tcp;

	if (t->proto == IPPROTO_UDP)
		return ip_hlen + sizeof(struct udphdr);
	tcp = pkt_header(skb, t->l4_off, sizeof(*tcp));
	return tcp ? ip_hlen + tcp->doff * 4 : ip_hlen + sizeof(*tcp);
}

/* The client's source becomes the overlay address (the first of this node's pod CIDR, inside the
 * cluster CIDR) with a port from the gateway's table (lib/nat_port.h, nat_snat_port: endpoint-dependent,
 * keyed by the backend), so that the backend's reply is routed through the tunnel back to this
 * node, where node_lb_reply undoes both translations. A packet of a flow whose mapping the LRU
 * evicted cannot open a new one (TCP without SYN): dropped rather than sent with the client's
 * address, whose reply would never come back here. */
static __always_inline int node_lb_snat(struct __sk_buff *skb, const struct node_cfg *cfg, struct lb_tuple *t)
{
	struct nat_tuple nt = {
		.saddr = t->saddr, .daddr = t->daddr, .sport = t->sport, .dport = t->dport,
		.proto = t->proto, .l4_off = t->l4_off,
		.opens_flow = t->proto == IPPROTO_UDP || (t->tcp_flags & (LB_TCP_SYN | LB_TCP_ACK)) == LB_TCP_SYN,
	};
	__be16 port;
	int ret;

	ret = nat_snat_port(skb, cfg, cfg->pod_cidr, &nt, &port);
	if (ret)
		return ret < 0 ? ret : -DROP_NAT_FAILED;
	ret = lb_rewrite(skb, t, 0, cfg->pod_cidr, port);
	return ret;
}

/* The translated packet t of a client outside the cluster to a backend on another node: the
 * client's source translated (node_lb_snat), then the pod path's way to a remote pod: route,
 * domain, VXLAN (native or through the device) or direct routing. A packet that does not fit the
 * overlay is dropped as PKT_TOO_BIG, answered with "fragmentation needed" when it has DF
 * (node_exit_answer). */
static __always_inline int node_lb_to_remote(struct __sk_buff *skb, const struct node_cfg *cfg, struct lb_tuple *t)
{
	struct route *route = route_lookup(t->daddr);
	struct node *node;
	struct iphdr *ip;
	__u32 hlen;
	int ret;

	if (!route)
		return -DROP_NO_ROUTE; /* not a pod: host-network backends are not done (docs) */
	if (route->flags & ROUTE_LOCAL)
		return -DROP_UNKNOWN_ENDPOINT;
	if (!domain_reachable(cfg, route->domain))
		return -DROP_DOMAIN_UNREACHABLE;
	node = node_lookup(route->node_ip);
	if (!node)
		return -DROP_UNKNOWN_NODE;
	/* this node's hop (lib/ttl.h): judged before the MTU, decremented once on the way out */
	ip = pkt_header(skb, ETH_HLEN, sizeof(*ip));
	if (!ip)
		return -DROP_INVALID;
	if (ip->ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	hlen = node_lb_hlen(skb, t);
	if (route->encap != ROUTE_ENCAP_DIRECT &&
	    (skb->gso_size ? hlen + skb->gso_size > cfg->mtu : skb->len - ETH_HLEN > cfg->mtu))
		return -DROP_PKT_TOO_BIG;
	ret = node_lb_snat(skb, cfg, t);
	if (ret < 0)
		return ret;
	ret = ipv4_ttl_dec(skb, ETH_HLEN);
	if (ret < 0)
		return ret;
	if (route->encap == ROUTE_ENCAP_DIRECT)
		return direct_redirect(skb, cfg, route->node_ip, node); /* lib/direct.h */
	if (cfg->encap_mode == ENCAP_MODE_DEVICE || !vxlan_native_fits(skb)) {
		ret = vxlan_set_tunnel(skb, cfg, route->node_ip, node);
		if (ret < 0)
			return ret;
		return bpf_redirect(cfg->vxlan_ifindex, 0);
	}
	return vxlan_encap_native(skb, cfg, route->node_ip, node, hlen);
}

/* A TCP/UDP packet from outside the cluster CIDR arriving on the NIC (not VXLAN, not a reply to a
 * masqueraded flow): when it is for a frontend of scope EXTERNAL (lib/nodeport.h, the same decision
 * as node_xdp), translated to its connection's backend (connection tracking as for pods, both
 * entries marked LB_CT_EXTERNAL) and delivered: a local backend gets it with the client's source
 * (its reply leaves through pod_egress, which restores the frontend and sends it out of the NIC);
 * a remote one with the source translated to the overlay address (node_lb_to_remote), except for
 * externalTrafficPolicy Local, whose backends are all local and never get a translated source.
 * Returns 0 when the packet is no service's (untouched), a verdict, or -reason: NODEPORT_CLOSED
 * (the TC fallback of node_xdp's drop), NO_SERVICE_BACKEND, INVALID for a TCP/UDP header cut short
 * (by the frame or by the IPv4 total length), DOMAIN_UNREACHABLE (front says what the client
 * addressed, for node_exit_answer). The caller's header pointers are
 * gone. Kept out of line (a BPF subprogram): inlined, clang reused a modified ctx pointer for the
 * entry program's packet accesses, which the verifier rejects. */
static __noinline int node_lb(struct __sk_buff *skb, const struct node_cfg *cfg, struct node_lb_front *front)
{
	struct endpoint *ep;
	struct lb_svc *svc;
	struct ethhdr *eth;
	struct lb_tuple t;
	struct iphdr *ip;
	int ret;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : 0;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	/* A header that ends past the datagram is truncated, whatever padding follows (node_xdp
	 * leaves these frames here). A later fragment has none (lb_parse: lib/frag.h). */
	if (!skb->gso_size && !ipv4_is_later_fragment(ip) &&
	    !ipv4_holds_l4(ip, ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr)))
		return -DROP_INVALID;
	/* Frontends are never pod addresses (nor the overlay address, unreachable from outside). */
	if (in_cidr(ip->daddr, cfg->cluster_cidr, cfg->cluster_mask))
		return 0;
	ret = lb_parse(skb, ip, &t);
	if (ret)
		return ret < 0 ? ret : 0;
	/* parse again: lb_parse may have pulled (nodeport_lookup wants the header for the FIB) */
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : 0;
	svc = nodeport_lookup(skb, cfg, ip, t.sport, t.dport, skb->ifindex);
	if (!svc)
		return 0;
	front->addr = t.daddr;
	front->port = t.dport;
	ret = lb_xlate_fwd_ct(skb, svc, &t, LB_CT_EXTERNAL);
	if (ret < 0)
		return ret;
	ep = endpoint_lookup(t.daddr);
	if (ep) {
		ret = ipv4_ttl_dec(skb, ETH_HLEN); /* this node's hop (lib/ttl.h) */
		if (ret < 0) {
			front->ttl_exceeded = ret == -DROP_TTL_EXCEEDED;
			return ret;
		}
		return fwd_to_endpoint(skb, ep);
	}
	if (svc->flags & LB_SVC_LOCAL)
		return -DROP_NO_SERVICE_BACKEND; /* the agent writes only local backends */
	ret = node_lb_to_remote(skb, cfg, &t);
	front->unreach = ret == -DROP_DOMAIN_UNREACHABLE; /* node_exit_answer answers */
	front->too_big = ret == -DROP_PKT_TOO_BIG;
	front->ttl_exceeded = ret == -DROP_TTL_EXCEEDED;
	return ret;
}

/* The exit of node_ingress for a packet that is answered out of the NIC: one toward a domain this
 * node cannot reach ("host unreachable"): forwarded traffic (node_plain_ingress), or an outside
 * client's packet to a remote backend in such a domain (node_lb: the agent leaves those out; a
 * change of the domains reaches the maps a moment later); or an outside client's packet with DF
 * that does not fit the overlay to its remote backend ("fragmentation needed" with the pod MTU, as
 * a router on the path would say; TCP rarely gets there, the backend's MSS being the pod MTU's,
 * but a UDP client's path MTU discovery does). The error quotes what the client sent, so its
 * destination goes back to the frontend first (its source is still its own: node_lb_to_remote
 * checks domain and size before the SNAT). Out of line, so that icmp_error's stack does not add
 * to node_ingress's on top of node_lb's. */
static __noinline int node_exit_answer(struct __sk_buff *skb, __u32 dir, const struct node_cfg *cfg,
				       const struct node_lb_front *front, int reason)
{
	struct ethhdr *eth;
	struct lb_tuple t;
	struct iphdr *ip;

	if (front->unreach || front->too_big || front->ttl_exceeded) {
		if (parse_ipv4(skb, &eth, &ip) != L3_IPV4)
			return tc_exit(skb, dir, reason);
		if (front->too_big && (skb->gso_size || !(ip->frag_off & bpf_htons(IP_DF)) ||
				       !icmp_may_answer(skb, ip)))
			return tc_exit(skb, dir, reason); /* no DF: the drop stands (docs) */
		/* again: icmp_may_answer may have pulled the packet */
		if (front->ttl_exceeded &&
		    (parse_ipv4(skb, &eth, &ip) != L3_IPV4 || !icmp_may_answer(skb, ip)))
			return tc_exit(skb, dir, reason);
		/* again: icmp_may_answer may have pulled the packet */
		if (parse_ipv4(skb, &eth, &ip) != L3_IPV4 || lb_parse(skb, ip, &t) != 0 ||
		    lb_rewrite(skb, &t, 1, front->addr, front->port) < 0)
			return tc_exit(skb, dir, reason);
	}
	if (reason == -DROP_PKT_TOO_BIG)
		return tc_exit_frag_needed_nic(skb, dir, cfg->node_ip, cfg->mtu);
	if (reason == -DROP_TTL_EXCEEDED)
		return tc_exit_time_exceeded_nic(skb, dir, cfg->node_ip);
	return tc_exit_host_unreach_nic(skb, dir, cfg->node_ip);
}

/* Whether the IPv4 packet at ip_off (to the overlay address) is a remote backend's reply to a client
 * outside the cluster that node_lb_to_remote translated, or an ICMP error about such a client's
 * packet (the backend's port unreachable, a fragmentation needed on the way): the gateway's table
 * names a client outside the cluster CIDR and the service's REV entry for it is EXTERNAL. Only
 * looks: the overlay address also receives the node's own traffic, which keeps its way into the
 * host. That includes a reply to the node's own connection to a frontend whose tuple a stale
 * mapping of the gateway still names (lb_host_reply: the host's live connection is the one the
 * backend answers); only packets that would otherwise leave toward a client pay that lookup. */
static __always_inline int node_lb_is_reply(struct __sk_buff *skb, const struct node_cfg *cfg, __u32 ip_off)
{
	struct nat_rev_key rk;
	struct nat_rev_val *rv;
	struct lb_ct_key ck;
	struct lb_ct *ct;

	if (!nat_overlay_reply_key(skb, cfg, ip_off, &rk))
		return 0;
	rv = bpf_map_lookup_elem(&nat_rev_map, &rk);
	if (!rv || in_cidr(rv->pod_ip, cfg->cluster_cidr, cfg->cluster_mask))
		return 0;
	lb_ct_rev_key(&ck, rk.remote_ip, rk.remote_port, rv->pod_ip, rv->pod_port, rk.proto);
	ct = bpf_map_lookup_elem(&lb_ct_map, &ck);
	if (!ct || !(ct->flags & LB_CT_EXTERNAL))
		return 0;
	return !nat_host_svc_conn(rk.remote_ip, rk.remote_port, cfg->pod_cidr, rk.node_port, rk.proto);
}

/* A remote backend's reply or ICMP error (node_lb_is_reply, Ethernet + IPv4 at offset 0): the
 * gateway's translation undone (destination: the client), then the service's (source: the
 * frontend), and out of the NIC toward the client. node_lb_is_reply has ruled out the host's own
 * connections: lb_rev_overlay does not look again. */
static __noinline int node_lb_reply(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	__u16 ct_flags;
	int ret;

	ret = lb_rev_overlay_checked(skb, cfg, &ct_flags, 1);
	if (ret < 0)
		return ret;
	if (!(ct_flags & LB_CT_EXTERNAL))
		return -DROP_NAT_FAILED; /* node_lb_is_reply found the entry, but it is no longer alive */
	return node_lb_to_client(cfg);
}

/* Whether the inner IPv4 packet at VXLAN_INNER_IP_OFF lies within the outer datagram of the
 * frame (lib/vxlan.h has checked that the outer lengths agree and reach the inner Ethernet header):
 * its header and, by its own total length, all of it. What follows the outer datagram in the
 * frame is padding, not the inner packet's. GRO aggregates carry aggregate lengths: not checked. */
static __always_inline int node_vxlan_inner_fits(const struct __sk_buff *skb, const struct iphdr *outer,
						 const struct iphdr *inner)
{
	__u32 room;

	if (skb->gso_size)
		return 1;
	room = bpf_ntohs(outer->tot_len) - ENCAP_OVERHEAD;
	return room >= sizeof(struct iphdr) && bpf_ntohs(inner->tot_len) <= room;
}

/* Whether the VXLAN frame (option-less outer IPv4) from a node of a domain this node cannot reach
 * carries that node's answer for a sender behind this one (lib/peer_answer.h). */
static __always_inline int node_vxlan_peer_answer(struct __sk_buff *skb, const struct node_cfg *cfg)
{
	struct ethhdr *inner_eth;
	struct iphdr *outer, *inner;
	struct icmphdr *icmp;

	if (skb->gso_size || pkt_pull(skb, VXLAN_INNER_IP_OFF + sizeof(*inner) + sizeof(*icmp)) < 0)
		return 0;
	outer = pkt_data(skb) + VXLAN_OUTER_IP_OFF;
	inner_eth = pkt_data(skb) + VXLAN_INNER_ETH_OFF;
	inner = (void *)(inner_eth + 1);
	icmp = (void *)(inner + 1);
	if ((void *)(icmp + 1) > pkt_end(skb) || inner_eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return peer_answer(cfg, inner, icmp, outer->saddr);
}

/* A VXLAN frame to port 8472 of the node IP (outer IPv4 parsed, not a fragment). */
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
	ret = vxlan_outer_check(skb);
	if (ret)
		return ret < 0 ? ret : TC_ACT_OK;
	/* again: the checks' helpers invalidated the pointers */
	outer = pkt_data(skb) + VXLAN_OUTER_IP_OFF;
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
	if (!domain_reachable(cfg, peer->domain) && !node_vxlan_peer_answer(skb, cfg))
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
	outer = pkt_data(skb) + VXLAN_OUTER_IP_OFF;
	inner = pkt_data(skb) + VXLAN_INNER_IP_OFF;
	if ((void *)(inner + 1) > pkt_end(skb))
		return -DROP_INVALID;
	if (inner->version != 4 || inner->ihl < 5 || !node_vxlan_inner_fits(skb, outer, inner))
		return -DROP_INVALID;

	ep = endpoint_lookup(inner->daddr);
	if (!ep) {
		/* a remote backend's reply to a client outside the cluster (node_lb_to_remote) */
		if (inner->daddr == cfg->pod_cidr && node_lb_is_reply(skb, cfg, VXLAN_INNER_IP_OFF)) {
			ret = vxlan_decap(skb);
			if (ret)
				return ret < 0 ? ret : TC_ACT_OK;
			return node_lb_reply(skb, cfg);
		}
		return TC_ACT_OK; /* to the host, or a pod that is gone: the device and routing decide */
	}
	/* This node's hop (lib/ttl.h): an expired packet is answered through the tunnel, so it is
	 * judged before the decapsulation. */
	if (inner->ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	ret = vxlan_decap(skb);
	if (ret)
		return ret < 0 ? ret : TC_ACT_OK;
	ret = ipv4_ttl_dec(skb, ETH_HLEN);
	if (ret < 0)
		return ret;
	ret = lb_rev_deliver(skb); /* a remote backend's reply to a local client */
	if (ret < 0)
		return ret;
	return fwd_to_endpoint(skb, ep);
}

/* Anti-spoofing of route mode (lib/direct.h): a packet that reaches a local pod without
 * encapsulation and claims a pod source is held to the domain matrix as VXLAN is (node_vxlan_ingress
 * checks the sending node's domain): the source's pod CIDR must be a node's of a domain this one
 * may reach, else DOMAIN_UNREACHABLE (unanswered: the source is only a claim). This node's own
 * pods never come from the NIC, and a pod address no node owns comes from nowhere:
 * SPOOFED_SOURCE. A VXLAN route's source is let through, as VXLAN from a reachable node may carry
 * any inner source: while a domain switches from vxlan to route, a node that switched first sends
 * plain before this one knows. Sources outside the cluster CIDR (clients, cloud hosts through the
 * gateway) are not pods' and pass. */
static __always_inline int node_direct_source(const struct node_cfg *cfg, __be32 saddr)
{
	struct route *route;

	if (!in_cidr(saddr, cfg->cluster_cidr, cfg->cluster_mask))
		return 0;
	route = route_lookup(saddr);
	if (!route || (route->flags & ROUTE_LOCAL))
		return -DROP_SPOOFED_SOURCE;
	if (!domain_reachable(cfg, route->domain))
		return -DROP_DOMAIN_UNREACHABLE;
	return 0;
}

/* Non-VXLAN: undo masquerade, then deliver to a local pod or let the host have it. A reply to a
 * masqueraded flow goes to the host stack, which routes it to the pod: the flow left through the
 * host stack (pod_egress hands it there, node_egress masquerades it after netfilter), so netfilter's
 * conntrack must see its replies too, or it holds a half-seen flow whose next packets are INVALID,
 * which kube-proxy's KUBE-FORWARD and many host firewalls drop, and whose state never advances (a
 * half-closed connection never shows CLOSE_WAIT). A Service's answer from a remote host-network
 * backend (masqueraded on its way out too) gets its source turned back into the frontend on the
 * pod's veth (pod_ingress), after netfilter, for the same reason; the node's own connections
 * (from the overlay address) get theirs here, before the host stack they end in. A packet routed
 * here toward a pod of a domain this node cannot reach (a cloud host's, through the cloud gateway)
 * is dropped and answered (*unreach) rather than left to the host's unreachable route. */
static __always_inline int node_plain_ingress(struct __sk_buff *skb, const struct node_cfg *cfg,
					      __u8 *unreach, struct node_lb_front *front)
{
	struct route *route;
	struct endpoint *ep;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 daddr;
	int ret;

	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : TC_ACT_OK;
	daddr = ip->daddr;
	ret = nat_rnat(skb, cfg, ip);
	if (ret < 0)
		return ret;
	/* parse again: the rewrite invalidated the pointers */
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : TC_ACT_OK;
	if (ip->daddr == daddr) { /* not a reply to a masqueraded flow: maybe a service's client */
		ret = node_lb(skb, cfg, front);
		if (ret)
			return ret;
		ret = parse_ipv4(skb, &eth, &ip);
		if (ret != L3_IPV4)
			return ret < 0 ? ret : TC_ACT_OK;
	} else if (ip->daddr != cfg->pod_cidr) {
		return TC_ACT_OK; /* a reply to a pod's masqueraded flow: through the host stack */
	}
	ep = endpoint_lookup(ip->daddr);
	if (ep) {
		ret = node_direct_source(cfg, ip->saddr);
		if (ret < 0)
			return ret;
		/* this node's hop (lib/ttl.h); then a backend's reply to a local client, direct routing */
		if (ip->ttl <= 1) {
			*unreach = icmp_may_answer(skb, ip);
			return -DROP_TTL_EXCEEDED;
		}
		ret = ipv4_ttl_dec(skb, ETH_HLEN);
		if (ret < 0)
			return ret;
		ret = lb_rev_deliver(skb);
		if (ret < 0)
			return ret;
		return fwd_to_endpoint(skb, ep);
	}
	if (ip->daddr == cfg->pod_cidr) {
		/* a remote backend's reply to a client outside the cluster, direct routing */
		if (node_lb_is_reply(skb, cfg, ETH_HLEN))
			return node_lb_reply(skb, cfg);
		/* a host-network backend's reply to the node's own connection to a service (overlay.c) */
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

/* Whether VXLAN to daddr is this node's to decapsulate: 0 for the node IP (where peers
 * send it), -VXLAN_NOT_UNICAST for multicast and broadcast, which no peer sends, 1 for any other
 * address: not decapsulated here but left to the kernel, which forwards it when the node routes
 * for others (the packet is another host's) or, when the address is another of the node's own
 * (a tunnel endpoint such as public-ip-overwrite bound to the NIC), gives it to its VXLAN device,
 * whose overlay_ingress checks the source and VNI from the tunnel metadata. Dropping those would
 * cut such nodes off. A subnet broadcast is one of those "other" addresses (telling it apart
 * would take a FIB lookup per frame): the kernel device decides on it as on any. */
static __always_inline int node_vxlan_for_node(__be32 daddr, const struct node_cfg *cfg)
{
	if (daddr == cfg->node_ip)
		return 0;
	if (ipv4_is_mcast_or_bcast(daddr))
		return -DROP_VXLAN_NOT_UNICAST;
	return 1;
}

static __always_inline int node_ingress_handle(struct __sk_buff *skb, const struct node_cfg *cfg,
					       __u32 *dir, __u8 *unreach, struct node_lb_front *front)
{
	struct udphdr *udp;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 daddr;
	int ret;

	if (!cfg)
		return TC_ACT_OK;
	ret = parse_ipv4(skb, &eth, &ip);
	if (ret != L3_IPV4)
		return ret < 0 ? ret : TC_ACT_OK;
	if (ip->protocol == IPPROTO_UDP && !ipv4_is_fragment(ip)) {
		daddr = ip->daddr;
		udp = pkt_header(skb, ETH_HLEN + ip->ihl * 4, sizeof(*udp));
		if (!udp)
			return -DROP_INVALID;
		if (udp->dest == bpf_htons(VXLAN_PORT)) {
			ret = node_vxlan_for_node(daddr, cfg);
			if (ret > 0)
				return TC_ACT_OK;
			*dir = DIR_OVERLAY_IN;
			return ret < 0 ? ret : node_vxlan_ingress(skb, cfg);
		}
	}
	return node_plain_ingress(skb, cfg, unreach, front);
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
	struct node_lb_front front = {};
	__u32 dir = DIR_NODE_IN;
	__u8 unreach = 0;
	int ret = node_ingress_handle(skb, cfg, &dir, &unreach, &front);

	if (ret == -DROP_DOMAIN_UNREACHABLE && (unreach || front.unreach) && cfg)
		return node_exit_answer(skb, dir, cfg, &front, ret);
	if (ret == -DROP_PKT_TOO_BIG && front.too_big && cfg)
		return node_exit_answer(skb, dir, cfg, &front, ret);
	if (ret == -DROP_TTL_EXCEEDED && dir == DIR_OVERLAY_IN && cfg)
		return tc_exit_tunnel_time_exceeded(skb, dir, cfg);
	if (ret == -DROP_TTL_EXCEEDED && (unreach || front.ttl_exceeded) && cfg)
		return node_exit_answer(skb, dir, cfg, &front, ret);
	if (ret == -DROP_DOMAIN_UNREACHABLE && dir == DIR_OVERLAY_IN && cfg)
		return tc_exit_tunnel_unreach(skb, dir, cfg); /* a peer that has not applied a change yet */
	return tc_exit(skb, dir, ret);
}

SEC("tc")
int node_egress(struct __sk_buff *skb)
{
	return tc_exit(skb, DIR_NODE_OUT, node_egress_handle(skb));
}

char __license[] SEC("license") = "Dual BSD/GPL";
