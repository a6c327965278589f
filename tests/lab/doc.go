// Package lab builds an edgeplane cluster out of network namespaces on one machine, for the
// end-to-end suite, the demo and the benchmarks.
//
// A lab is a set of namespaces named "<id>-<role>" where id is "ep" plus four random hex digits, so
// parallel or leftover labs never collide:
//
//	<id>-sw      the underlay "switch": a Linux bridge br0 with one veth port per attached netns
//	<id>-api     etcd (on its own loopback) and kube-apiserver on 172.30.0.2:6443
//	<id>-out     a host outside the cluster, 172.30.0.100, for masquerade checks
//	<id>-<node>  a node: eth0 (MTU 1500) into the switch at 172.30.0.(10+n), the agent, its pods' veths
//	<id>-p<k>    a pod netns, wired by the real CNI plugin through libcni run inside the node netns
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
package lab
