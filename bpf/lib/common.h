/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared includes, constants and the few kernel definitions newer than the build host's UAPI headers. */
#ifndef EDGEPLANE_COMMON_H
#define EDGEPLANE_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf_helpers.h>
#include <bpf_endian.h>

/* Added in Linux 6.3 (Debian 12's linux-libc-dev is 6.1). */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif

/* The size of struct bpf_tunnel_key passed to bpf_skb_{get,set}_tunnel_key: up to local_ipv4,
 * which Linux 6.0 appended. Every kernel takes this size (6.0+ as a compat layout), while kernels
 * before 6.0 refuse the newer struct's sizeof with -EINVAL: on 5.10 overlay_ingress saw no
 * tunnel key and dropped everything, and device-mode encapsulation failed. Nothing here uses the
 * local address (the kernel picks the source). */
#define TUNNEL_KEY_SIZE __builtin_offsetof(struct bpf_tunnel_key, local_ipv4)

#define VXLAN_PORT 8472 /* Flannel's (and Linux's legacy) VXLAN port */
#define VXLAN_VNI 1
#define VXLAN_HLEN 8
/* outer IPv4 + UDP + VXLAN + inner Ethernet: what encapsulation adds in front of the inner IP header */
#define ENCAP_OVERHEAD (sizeof(struct iphdr) + sizeof(struct udphdr) + VXLAN_HLEN + ETH_HLEN)

#ifndef ETH_ALEN
#define ETH_ALEN 6
#endif

/* <linux/icmp.h> drags in libc through <linux/if.h>; the little we need of it: */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		__be32 gateway;
		struct {
			__be16 __unused;
			__be16 mtu;
		} frag;
	} un;
};
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_FRAG_NEEDED 4
#define ICMP_HOST_UNREACH 1
#define ICMP_PORT_UNREACH 3
#define ICMP_NET_UNREACH 0
#define ICMP_PKT_FILTERED 13

struct vxlanhdr {
	__be32 flags; /* 0x08000000: the VNI is valid */
	__be32 vni;   /* VNI << 8 */
};
#define VXLAN_FLAG_VNI bpf_htonl(0x08000000)

#endif
