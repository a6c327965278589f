package agent

import (
	"context"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/domain"
)

// BIG TCP for IPv4 (--ipv4-big-tcp, Linux 6.3): TCP builds GSO packets of up to 192 KiB instead
// of 64 KiB, a third of the packets for the same bytes through every hook, program and device on
// the way. Two things must take them: the underlay NIC, whose TSO cuts them into frames (the
// agent raises its GSO and GRO sizes, as Cilium does, and only if its TSO limit allows: a NIC
// that cannot would have the kernel segment every such packet in software before it, which is
// slower than no BIG TCP), and every device between the pod and the NIC: the pod's veth pair,
// which the CNI plugin sizes from node.json when the agent says so.
//
// The agent says so only in a route-mode domain, where a pod's packets to other pods leave as
// they are (as for the pod MTU, podMTU). VXLAN cannot carry them: its outer IPv4 and UDP length
// fields end at 64 KiB, and the kernel's own VXLAN device caps its GSO size there too. A pod that
// has the size and sends to a VXLAN destination (another domain over a private line, or its own
// domain switched back to vxlan since the pod was created) still gets its packets through:
// pod_egress gives such a packet to the host stack, which segments it for the VXLAN device
// (bpf/pod.c, pod_to_remote). Pods keep the size they were created with, as their MTU.

// ensureBigTCP converges the underlay NIC's IPv4 GSO/GRO size when --ipv4-big-tcp asks for BIG
// TCP, and records the size in effect; a NIC or kernel that refuses is logged once and leaves BIG
// TCP off (the agent runs as before). Without the flag the NIC is left as it is.
func (a *Agent) ensureBigTCP(ctx context.Context) {
	if !a.cfg.IPv4BigTCP {
		return
	}
	size, err := netdev.EnsureBigTCPv4(a.underlay.Index, netdev.BigTCPv4Size)
	a.bigTCP.Store(int32(size))
	refusal := ""
	if err != nil {
		refusal = err.Error()
	}
	if refusal == a.bigTCPRefusal {
		return
	}
	a.bigTCPRefusal = refusal
	if err != nil {
		klog.FromContext(ctx).Error(err, "BIG TCP stays off: the underlay NIC cannot take its packets", "underlay", a.underlay.Name)
		return
	}
	klog.FromContext(ctx).Info("BIG TCP on the underlay NIC", "underlay", a.underlay.Name, "gsoIPv4MaxSize", size)
}

// podGSOIPv4MaxSize is the IPv4 GSO/GRO size of new pods' veth pairs: BIG TCP's when the NIC
// took it and this node's domain is in route mode, else 0 (the kernel's default, 64 KiB).
func (a *Agent) podGSOIPv4MaxSize() int {
	size := int(a.bigTCP.Load())
	if size == 0 {
		return 0
	}
	if r := a.routing.Load(); r == nil || r.Encapsulation != domain.Route {
		return 0
	}
	return size
}
