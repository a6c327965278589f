// Package lab builds an edgeplane cluster out of network namespaces on one machine, for the
// end-to-end suite, the demo and the benchmarks.
//
// A lab is a set of namespaces named "<id>-<role>" where id is "ep" plus four random hex digits, so
// parallel or leftover labs never collide:
//
//	<id>-sw      the underlay "switch": one Linux bridge per network domain (br0 for the cloud,
//	             br-site-a, br-site-b) with one veth port per attached netns
//	<id>-api     etcd (on its own loopback) and kube-apiserver on 172.30.0.2:6443 (cloud)
//	<id>-out     a host outside the cluster, 172.30.0.100 (cloud), for masquerade checks
//	<id>-<node>  a node: eth0 (MTU 1500) into its domain's bridge at .(10+n), the agent, its pods' veths
//	<id>-p<k>    a pod netns, wired by the real CNI plugin through libcni run inside the node netns
//	<id>-rt      the router, only in a lab with domains: a leg at .1 on every domain's bridge
//
// Network domains (see domains.go): the cloud, 172.30.0.0/24 (UnderlayNet), where the API server
// runs; site-a, 172.31.0.0/24, joined to the cloud by a private line the router forwards unchanged
// while it is up (SetPrivateLine cuts and restores it); site-b, 172.32.0.0/24, with no private line.
// Between domains everything else goes over the "internet": node n has the public address
// 203.0.113.(10+n) and the API server 203.0.113.2, which the router maps 1:1 to the private ones
// with iptables (DNAT in, and for those connections SNAT of the source to its own public address),
// and every other crossing between domains is dropped. Nodes outside the cloud reach the API
// server at 203.0.113.2. The domains are built lazily, by EnableDomains or by AddNode of a node
// outside the cloud or with PublicIPOverwrite: a cloud-only lab has one bridge, no router and no
// default routes, exactly as before; once the router exists every host, earlier ones included,
// gets a default route through its domain's leg.
//
// Every veth is created directly between two lab namespaces (ip link add ... netns), so no lab
// address or link ever appears in the root namespace, and no packet leaves the lab. Each node has its
// own bpffs instance mounted under the lab directory (outside /sys, which `ip netns exec` would
// remount) and its own run directory.
//
// The test process itself stays in the root namespace: it reaches the API server and sends test
// traffic through sockets created inside a lab namespace by a thread that briefly enters it (see
// InNetns); sockets keep the namespace they were created in.
//
// Close tears everything down in reverse order of creation: process groups killed, pods deleted,
// namespaces removed, bpffs unmounted, the lab directory removed (kept, with the logs, when asked).
//
// Cleanup has one rule. What lives as long as the lab (a namespace, a mount, a process, a pod, a
// kubelet node) is put on the lab's closer list (onClose) as soon as it exists, and Close runs the
// list backwards; what lives for one call (a file, a context, a socket, a map handle) is closed in
// that call, by defer (right after use inside a loop). A constructor that fails part-way (New,
// AddPod, StartKubelet) also undoes its own work at once, in a deferred check of its error, so
// that the caller's lab goes on without a half-built thing; that undo is idempotent with the
// closer it registered. StartCluster is the exception: a failed bring-up is left to the lab's
// Close, its state kept for the logs.
package lab
