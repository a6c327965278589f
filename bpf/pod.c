/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/endpoints.h"
#include "lib/routes.h"
#include "lib/nodes.h"
#include "lib/metrics.h"

SEC("tc")
int pod_egress(struct __sk_buff *skb)
{
	struct node_cfg *cfg = node_cfg_get();
	if (!cfg)
		return tc_exit(skb, DIR_POD_EGRESS, -DROP_NOT_READY);
	if (endpoint_lookup(0) || route_lookup(0) || node_lookup(0))
		return tc_exit(skb, DIR_POD_EGRESS, TC_ACT_OK);
	return tc_exit(skb, DIR_POD_EGRESS, TC_ACT_OK);
}


char __license[] SEC("license") = "Dual BSD/GPL";
