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
 *              cfg->mtu, from cfg->node_ip (lib/icmp.h), so the pod's PMTU discovery converges;
 *              not answered when it is itself an ICMP error or a later fragment (icmp_may_answer,
 *              RFC 1122 3.2.2, as Linux's icmp_send)
 *   no DF   -> TC_ACT_OK: the host forwards it along `clusterCIDR dev edgeplane.1` (MTU = pod MTU),
 *              fragmenting it (software-segmenting GSO first), and overlay_egress puts each
 *              fragment in the tunnel; the outer packets fit the underlay.
 * Direct routes carry the packet unencapsulated and are checked against the underlay NIC's MTU.
 *
 * Network domains (lib/domains.h): a destination owned by a node of a domain this node's domain
 * has no private line to is dropped as DROP_DOMAIN_UNREACHABLE and answered with ICMP "host
 * unreachable" from the node IP, so the pod's connect() fails at once instead of timing out.
 * A server's SYN-ACK dropped so (a domain change applied here after the client's SYN got in) is
 * answered to the client instead, through the tunnel (lib/tunnel_unreach.h).
 *
 * The error's source is the node IP, not the pods' gateway 169.254.1.1: Linux accepts a
 * "fragmentation needed" from any source (it matches the quoted header to a socket), and the node
 * IP is what the kernel itself answers from when it forwards such a packet (icmp_send picks the
 * source of the route back to the pod, whose veth has no address: the node's primary one). So the
 * fast and slow paths look alike, and tracepath in a pod names the node, not a 169.254.1.1 that
 * every node shares.
 *
 * Services (lib/lb_xlate.h, docs/architecture.md): a TCP/UDP packet to a frontend of scope INTERNAL
 * is translated to its connection's backend before the route lookup and then goes wherever the
 * backend is; so is one to a node port of this node's addresses (pod_nodeport). A frontend
 * without backends answers with ICMP "port unreachable" from its address. The errors above about
 * a translated packet quote it as the pod sent it, to the frontend (pod_error_quotes_frontend).
 * Every packet delivered to a local pod first gets the reverse translation if it is a backend's
 * reply (one failed LRU lookup otherwise); so do replies to the hairpin address (a pod that reached
 * itself through a service) and to the node's overlay address (the node's own connections to
 * services whose backend is here), which then go to the host. */
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
#include "lib/icmp.h"
#include "lib/nat_rev.h"
#include "lib/nodeport.h"
#include "lib/tunnel_unreach.h"
#include "lib/ttl.h"
#include "lib/direct.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* What the exit does besides counting: answer a drop with ICMP. */
struct pod_verdict {
	__u16 frag_mtu;     /* next-hop MTU for "fragmentation needed" (DROP_PKT_TOO_BIG) */
	__u8 unreach;       /* "host unreachable" (DROP_DOMAIN_UNREACHABLE) */
	__u8 port_unreach;  /* "port unreachable" from vip (DROP_NO_SERVICE_BACKEND) */
	__be32 vip;         /* the frontend the pod addressed (pod_lb) */
	__be16 vport;
	__u8 xlated;        /* the packet was translated to a backend */
	__u8 time_exceeded; /* "time exceeded in transit" (DROP_TTL_EXCEEDED) */
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

/* Whether the kernel has bpf_check_mtu (Linux 5.12): the loader sets it from its probe
 * (pkg/datapath, Features.CheckMTU). It is read-only data the verifier knows, so on a kernel
 * without the helper the branch that calls it is dead code, never checked and removed. */
volatile const __u8 HAVE_CHECK_MTU = 1;

/* Whether a direct route's packet (or each segment of a GSO packet) is longer than the underlay
 * NIC's MTU, which *mtu is set to. bpf_check_mtu asks the kernel for the NIC's; an error (no such
 * device) is left to the redirect. Without the helper the MTU is what the node config implies,
 * the pod MTU plus VXLAN's overhead: the NIC's unless the agent was given a smaller --mtu, in
 * which case the check is stricter than the NIC. */
static __always_inline int pod_direct_too_big(struct __sk_buff *skb, const struct node_cfg *cfg,
					      __u32 gso_hlen, __u32 tot_len, __u32 *mtu)
{
	/* A packet that fits the overlay fits the NIC, whose MTU is the overlay's plus VXLAN's
	 * overhead or more (the agent derives the one from the other, or was given a smaller --mtu):
	 * most packets are not asked about (bpf_check_mtu looks the device up by index every call). */
	if (!skb->gso_size && tot_len <= cfg->mtu)
		return 0;
	if (HAVE_CHECK_MTU)
		return bpf_check_mtu(skb, cfg->underlay_ifindex, mtu, 0, BPF_MTU_CHK_SEGS) > 0;
	*mtu = cfg->mtu + ENCAP_OVERHEAD;
	return skb->gso_size ? gso_hlen + skb->gso_size > *mtu : tot_len > *mtu;
}

/* Route mode: the packet crosses the underlay as it is, to the owning node (or a router that
 * knows the pod CIDR). */
static __always_inline int pod_to_node_direct(struct __sk_buff *skb, const struct node_cfg *cfg,
					      const struct route *route, const struct node *node,
					      __u32 gso_hlen, __u32 tot_len, __be16 df, struct pod_verdict *v)
{
	__u32 mtu = 0;

	if (pod_direct_too_big(skb, cfg, gso_hlen, tot_len, &mtu))
		return pod_too_big(df, mtu, v);
	if (ipv4_ttl_dec(skb, ETH_HLEN) < 0) /* pod_ttl_check judged the TTL */
		return -DROP_INVALID;
	return direct_redirect(skb, cfg, route->node_ip, node); /* lib/direct.h */
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
	gso_hlen = pod_gso_hlen(skb, ip_hlen, proto);
	if (route->encap == ROUTE_ENCAP_DIRECT)
		return pod_to_node_direct(skb, cfg, route, node, gso_hlen, tot_len, df, v);
	if (skb->gso_size ? gso_hlen + skb->gso_size > cfg->mtu : tot_len > cfg->mtu)
		return pod_too_big(df, cfg->mtu, v);
	if (ipv4_ttl_dec(skb, ETH_HLEN) < 0) /* pod_ttl_check judged the TTL */
		return -DROP_INVALID;
	if (cfg->encap_mode == ENCAP_MODE_DEVICE || !vxlan_native_fits(skb)) {
		ret = vxlan_set_tunnel(skb, cfg, route->node_ip, node);
		if (ret < 0)
			return ret;
		return bpf_redirect(cfg->vxlan_ifindex, 0);
	}
	return vxlan_encap_native(skb, cfg, route->node_ip, node, gso_hlen);
}

/* A pod's packet to a node port of one of this node's addresses (the node IP, else what the FIB
 * calls local, as node_ingress decides: lib/nodeport.h) gets this node's NodePort frontend, as
 * kube-proxy DNATs pods' traffic to local addresses. It is then translated like a ClusterIP
 * connection (no LB_CT_EXTERNAL: the pod's address is kept, the reply comes back to it), and a
 * node port this node does not listen on (NodePort isolation) stays closed: dropped without an
 * answer, as on the NIC. Other nodes' ports are
 * theirs: the packet goes through the host, masqueraded, and that node's node_ingress decides.
 * Only packets to a port that is a NodePort here pay for the second lookup (and the FIB's). */
static __always_inline struct lb_svc *pod_nodeport(struct __sk_buff *skb, const struct node_cfg *cfg,
						   const struct lb_tuple *t)
{
	struct lb_svc *svc = lb_svc_lookup(0, t->dport, t->proto, LB_SCOPE_EXTERNAL);
	struct ethhdr *eth;
	struct iphdr *ip;

	if (!svc || t->daddr == cfg->node_ip)
		return svc;
	if (parse_ipv4(skb, &eth, &ip) != L3_IPV4)
		return 0;
	return nodeport_local_addr(skb, cfg, ip, t->sport, t->dport, skb->ifindex) ? svc : 0;
}

/* Service translation of a pod's TCP/UDP packet t to a frontend. Clears *rev when it translated
 * (the packet is a client's, not a reply). Returns 0 or -reason. */
static __always_inline int pod_lb(struct __sk_buff *skb, const struct node_cfg *cfg, struct lb_tuple *t,
				  int *rev, struct pod_verdict *v)
{
	struct lb_svc *svc;
	int ret;

	/* Frontends are never pod addresses: traffic inside the cluster CIDR skips the lookup. */
	if (in_cidr(t->daddr, cfg->cluster_cidr, cfg->cluster_mask) || t->daddr == LB_HAIRPIN_IP)
		return 0;
	svc = lb_svc_lookup(t->daddr, t->dport, t->proto, LB_SCOPE_INTERNAL);
	if (!svc)
		svc = pod_nodeport(skb, cfg, t);
	if (!svc)
		return 0;
	*rev = 0;
	v->vip = t->daddr;
	v->vport = t->dport;
	ret = lb_xlate_fwd(skb, svc, t);
	if (ret == -DROP_NO_SERVICE_BACKEND)
		v->port_unreach = 1; /* nothing rewritten yet: the answer quotes what the pod sent */
	v->xlated = ret == 0;
	return ret;
}

/* An ICMP error about a packet translated to a service backend (host unreachable toward the
 * backend's domain, fragmentation needed on the way to it) quotes what the pod sent: the pod's
 * socket knows pod -> frontend, and an error quoting the backend matches nothing (its connect()
 * would time out, its path MTU to the frontend would never shrink). So the destination becomes the
 * frontend again before the error is built from the packet; if that fails the drop stands
 * unanswered. Returns ret. */
static __always_inline int pod_error_quotes_frontend(struct __sk_buff *skb, struct lb_tuple *t,
						     struct pod_verdict *v, int ret)
{
	if (!v->xlated || !((ret == -DROP_DOMAIN_UNREACHABLE && v->unreach) ||
			    (ret == -DROP_PKT_TOO_BIG && v->frag_mtu) ||
			    (ret == -DROP_TTL_EXCEEDED && v->time_exceeded)))
		return ret;
	if (lb_rewrite(skb, t, 1, v->vip, v->vport) < 0) {
		v->unreach = 0;
		v->frag_mtu = 0;
		v->time_exceeded = 0;
	}
	return ret;
}

/* To the node's overlay address (the first of its pod CIDR, edgeplane.1's): the host stack's.
 * Besides pods talking to the node, these are the replies of local backends to connections the
 * node made (overlay_egress): first the gateway's translation of an outside client to the overlay
 * address is undone (lib/nat_rev.h), then the service's. */
static __always_inline int pod_to_host_overlay(struct __sk_buff *skb, const struct node_cfg *cfg, int rev)
{
	__u16 ct_flags;
	int ret;

	if (!rev)
		return TC_ACT_OK;
	ret = lb_rev_overlay(skb, cfg, &ct_flags);
	return ret < 0 ? ret : TC_ACT_OK;
}

/* To an address outside the cluster CIDR: the host stack's (masqueraded by node_egress), except a
 * local backend's reply (or ICMP error) to a client that came in through the underlay NIC (node.c:
 * NodePort, LoadBalancer IP, externalIP; REV entry marked LB_CT_EXTERNAL). That one gets the
 * frontend back as its source and leaves through the NIC at once: the host would drop a packet
 * from its own address coming from a veth (martian source), and must not masquerade it. Other
 * traffic pays one failed REV lookup. */
static __always_inline int pod_to_outside(struct __sk_buff *skb, const struct node_cfg *cfg, struct lb_tuple *t,
					  int rev)
{
	__u16 ct_flags = 0;
	int ret;

	if (!rev)
		return TC_ACT_OK;
	ret = lb_xlate_rev_ct(skb, t, &ct_flags);
	if (ret <= 0)
		return ret < 0 ? ret : TC_ACT_OK;
	if (!(ct_flags & LB_CT_EXTERNAL))
		return TC_ACT_OK;
	return bpf_redirect_neigh(cfg->underlay_ifindex, 0, 0, 0);
}

/* icmp_may_answer for a packet whose header pointers are gone. */
static __always_inline __u8 pod_may_answer(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;

	if (parse_ipv4(skb, &eth, &ip) != L3_IPV4)
		return 0;
	return icmp_may_answer(skb, ip);
}

/* This node's hop for a packet it routes (lib/ttl.h), in the kernel's order (ip_forward): an
 * expired TTL is answered first ("time exceeded", quoting the frontend if translated), before any
 * MTU decision; the TTL is decremented only when the packet is redirected (pod_to_remote, local
 * delivery): what goes to the host stack instead is the kernel's to decrement. */
static __always_inline int pod_ttl_check(struct __sk_buff *skb, struct lb_tuple *t, struct pod_verdict *v)
{
	struct iphdr *ip = pkt_header(skb, ETH_HLEN, sizeof(*ip));

	if (!ip)
		return -DROP_INVALID;
	if (ip->ttl > 1)
		return 0;
	v->time_exceeded = pod_may_answer(skb);
	return pod_error_quotes_frontend(skb, t, v, -DROP_TTL_EXCEEDED);
}

/* To a pod of another node, by its route: the domain matrix, this node's hop, then the way
 * pod_to_remote sends it. */
static __always_inline int pod_egress_remote(struct __sk_buff *skb, const struct node_cfg *cfg, struct lb_tuple *t,
					     const struct route *route, __u32 ip_hlen, __u8 proto, __u32 tot_len,
					     __be16 df, struct pod_verdict *v)
{
	int ret;

	/* Public connectivity between the domains: nothing would arrive, so say so at once. */
	if (!domain_reachable(cfg, route->domain)) {
		v->unreach = pod_may_answer(skb);
		return pod_error_quotes_frontend(skb, t, v, -DROP_DOMAIN_UNREACHABLE);
	}
	ret = pod_ttl_check(skb, t, v);
	if (ret < 0)
		return ret;
	ret = pod_to_remote(skb, cfg, route, ip_hlen, proto, tot_len, df, v);
	return pod_error_quotes_frontend(skb, t, v, ret);
}

static __always_inline int pod_egress_ipv4(struct __sk_buff *skb, const struct node_cfg *cfg,
					   const struct iphdr *ip, struct pod_verdict *v)
{
	__be16 df = ip->frag_off & bpf_htons(IP_DF);
	__u32 ip_hlen = ip->ihl * 4;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	__u8 proto = ip->protocol;
	struct endpoint *ep, *src;
	struct route *route;
	struct lb_tuple t;
	int ret, rev;

	/* A pod may only send from its own address, and only through its own veth. */
	src = endpoint_lookup(ip->saddr);
	if (!src || src->ifindex != skb->ifindex)
		return -DROP_SPOOFED_SOURCE;

	/* From here on the packet is t (ip is gone: parsing may pull, translating rewrites). */
	ret = lb_parse(skb, ip, &t);
	if (ret < 0)
		return ret;
	rev = ret != LB_SKIP; /* maybe a reply (or an ICMP error) to reverse-translate at delivery */
	if (ret == 0) {
		ret = pod_lb(skb, cfg, &t, &rev, v);
		if (ret < 0)
			return ret;
	}

	/* Another node's pod: an address of the cluster CIDR outside this node's pod CIDR that a
	 * remote node's route covers is that node's, so it is not looked up among the local pods
	 * (where it would miss); an address of a local pod outside the node's pod CIDR (an operator's
	 * IPAM ranges) is one no other node's route covers. A pod that reached itself through a service
	 * answers the hairpin address: back to itself. */
	route = 0;
	if (in_cidr(t.daddr, cfg->cluster_cidr, cfg->cluster_mask) && !in_cidr(t.daddr, cfg->pod_cidr, cfg->pod_mask)) {
		route = route_lookup(t.daddr);
		if (route && (route->flags & ROUTE_LOCAL))
			route = 0;
	}
	ep = 0;
	if (!route)
		ep = t.daddr == LB_HAIRPIN_IP ? src : endpoint_lookup(t.daddr);
	if (ep) {
		if (rev) {
			ret = lb_xlate_rev(skb, &t);
			if (ret < 0)
				return ret;
		}
		/* The hairpin address only answers connections that are still tracked. */
		if (t.daddr == LB_HAIRPIN_IP)
			return -DROP_UNKNOWN_ENDPOINT;
		ret = pod_ttl_check(skb, &t, v);
		if (ret < 0)
			return ret;
		ret = ipv4_ttl_dec(skb, ETH_HLEN);
		if (ret < 0)
			return ret;
		return fwd_to_endpoint(skb, ep);
	}
	if (t.daddr == cfg->pod_cidr)
		return pod_to_host_overlay(skb, cfg, rev);

	if (!route)
		route = route_lookup(t.daddr);
	if (!route)
		return in_cidr(t.daddr, cfg->cluster_cidr, cfg->cluster_mask) ? -DROP_NO_ROUTE :
										    pod_to_outside(skb, cfg, &t, rev);
	if (route->flags & ROUTE_LOCAL)
		return -DROP_UNKNOWN_ENDPOINT;
	return pod_egress_remote(skb, cfg, &t, route, ip_hlen, proto, tot_len, df, v);
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
	if (ret == -DROP_PKT_TOO_BIG && v.frag_mtu && pod_may_answer(skb))
		return tc_exit_frag_needed(skb, DIR_POD_EGRESS, cfg->node_ip, v.frag_mtu);
	if (ret == -DROP_DOMAIN_UNREACHABLE && v.unreach) {
		/* a SYN-ACK: answer the client, through the tunnel (lib/tunnel_unreach.h) */
		int synack = tc_exit_synack_unreach(skb, DIR_POD_EGRESS, cfg);

		if (synack >= 0)
			return synack;
		return tc_exit_host_unreach(skb, DIR_POD_EGRESS, cfg->node_ip);
	}
	if (ret == -DROP_NO_SERVICE_BACKEND && v.port_unreach)
		return tc_exit_port_unreach(skb, DIR_POD_EGRESS, v.vip);
	if (ret == -DROP_TTL_EXCEEDED && v.time_exceeded)
		return tc_exit_time_exceeded(skb, DIR_POD_EGRESS, cfg->node_ip);
	return tc_exit(skb, DIR_POD_EGRESS, ret);
}

/* pod_ingress: TC egress of a pod's host-side veth, i.e. what the host stack sends into the pod
 * (Cilium's cil_to_container on lxc egress). The datapath's own deliveries do not pass here:
 * pod_egress, overlay_ingress and node_ingress hand packets to the pod's eth0 with
 * bpf_redirect_peer, which skips this hook; only overlay_egress's redirect of the node's own
 * connections to a local pod comes through (nothing to undo: they are client packets). What the
 * host routes here along `podIP/32 dev <host veth>` is its own traffic to the pod (kubelet probes,
 * host daemons) and the answers of host-network backends on this node: pod_egress translated the
 * pod's packet frontend -> one of this node's addresses and gave it to the host stack, whose
 * answer comes back from that address. A live REV entry turns its source back into the frontend
 * (lb_xlate_rev, as on every other delivery path), and an ICMP error about such a connection (port
 * unreachable from a UDP host backend) gets its quote and source translated, so the pod's socket
 * matches both. Everything else pays the one failed lookup. */
SEC("tc")
int pod_ingress(struct __sk_buff *skb)
{
	return tc_exit(skb, DIR_POD_INGRESS, lb_rev_deliver(skb));
}

char __license[] SEC("license") = "Dual BSD/GPL";
