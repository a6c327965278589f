/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksums. Headers we build from scratch (the outer IPv4 header of VXLAN) are summed
 * here; fields rewritten in place (NAT) go through bpf_l3/l4_csum_replace so that the kernel also
 * keeps skb->csum (CHECKSUM_COMPLETE) and CHECKSUM_PARTIAL offload state right. */
#ifndef EDGEPLANE_CSUM_H
#define EDGEPLANE_CSUM_H

#include "common.h"

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Checksum of an option-less IPv4 header; the check field must be 0 when called (or, summed with
 * a right check field in place, the result is 0: vxlan_ip_csum_ok). */
static __always_inline __sum16 ipv4_hdr_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += w[i];
	return (__sum16)csum_fold32(sum);
}

#endif
