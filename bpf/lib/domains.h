/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Network domains as this node sees them: which domains its pods may reach. Written by the agent
 * from node pools and the connectivity table (public/private per pair of domains); read by the
 * programs only for peers outside the node's own domain, so same-domain traffic pays nothing.
 * Mirrored in Go by pkg/maps/domainsmap.
 *
 * Domain IDs are the same on every node: 0 is the default domain (nodes in no pool), any other
 * is the FNV-1a hash of the domain's name (the agent refuses names whose hashes collide). The name
 * is stored for edgeplanectl, which reads the maps without the agent. */
#ifndef EDGEPLANE_DOMAINS_H
#define EDGEPLANE_DOMAINS_H

#include "common.h"
#include "config.h"

#define DOMAINS_MAX 1024
#define DOMAIN_NAME_LEN 64

enum domain_flags {
	DOMAIN_REACHABLE = 1 << 0, /* this node's own domain, or joined to it by a private line */
	DOMAIN_LOCAL = 1 << 1,     /* this node's own domain */
};

struct domain {
	__u32 flags;                /* enum domain_flags */
	char name[DOMAIN_NAME_LEN]; /* NUL-padded */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct domain);
	__uint(max_entries, DOMAINS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} domains_map SEC(".maps");

/* Whether traffic may cross between this node and a node of domain id. A domain the agent has not
 * written is unreachable: public is the default between domains. */
static __always_inline int domain_reachable(const struct node_cfg *cfg, __u32 id)
{
	struct domain *d;

	if (id == cfg->domain)
		return 1;
	d = bpf_map_lookup_elem(&domains_map, &id);
	return d && (d->flags & DOMAIN_REACHABLE);
}

#endif
