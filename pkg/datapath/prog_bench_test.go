package datapath

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/containernetworking/plugins/pkg/ns"
)

// benchRun reports the kernel-measured run time per packet ("ns/pkt"). test_run repeats a program
// on one skb, and the encap/decap paths change that skb (the second run would see a VXLAN packet
// coming from a pod), so every packet is a fresh run with repeat=1; the duration the kernel
// returns covers the program only, not the syscall. A single timed run still carries the test
// harness's fixed cost (timer, skb setup around the run), so the same loop over a program that
// only returns TC_ACT_OK is subtracted: "ns/pkt" is what our program adds.
func benchRun(b *testing.B, prog *ebpf.Program, pkt []byte, want uint32) {
	b.Helper()
	benchRunSetup(b, prog, pkt, want, nil)
}

// benchRunSetup is benchRun with setup called before every timed run of prog (outside the
// kernel's timing), e.g. to make every packet open a new connection.
func benchRunSetup(b *testing.B, prog *ebpf.Program, pkt []byte, want uint32, setup func()) {
	b.Helper()
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()

	measure := func(p *ebpf.Program, want uint32) (total, median time.Duration) {
		runs := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			if setup != nil && p == prog {
				setup()
			}
			ret, d, err := p.Benchmark(pkt, 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			if ret != want {
				b.Fatalf("verdict %d, want %d", ret, want)
			}
			total += d
			runs = append(runs, d)
		}
		slices.Sort(runs)
		return total, runs[len(runs)/2]
	}
	b.ResetTimer()
	total, median := measure(prog, want)
	b.StopTimer()
	base, baseMedian := measure(empty, 0)
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt-raw")
	b.ReportMetric(float64((total-base).Nanoseconds())/float64(b.N), "ns/pkt")
	// The medians' difference: a run the host preempted (a loaded machine, a VM under emulation,
	// make bench-kernels) moves the mean, not the median.
	b.ReportMetric(float64((median - baseMedian).Nanoseconds()), "ns/pkt-p50")
}

func BenchmarkPodEgressLocal(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	benchRun(b, coll.Programs["pod_egress"], podUDP(podA, podB, 64), tcActRedirect)
}

// The same path with the kernel's own repeat loop (idempotent but for the TTL: benchRepeat), as a
// cross-check of the per-run numbers without the timer overhead of single runs.
func BenchmarkPodEgressLocalRepeat(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	benchRepeat(b, coll.Programs["pod_egress"], podUDP(podA, podB, 64), tcActRedirect)
}

func BenchmarkPodEgressRemoteEncap(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	benchRun(b, coll.Programs["pod_egress"], podUDP(podA, remotePod, 1024), tcActRedirect)
}

func BenchmarkPodEgressRemoteDevice(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll, withEncap(1))
	benchRun(b, coll.Programs["pod_egress"], podUDP(podA, remotePod, 1024), tcActRedirect)
}

func BenchmarkPodEgressOutside(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	benchRun(b, coll.Programs["pod_egress"], podUDP(podA, internetIP, 1024), tcActOK)
}

// The same with the kernel's repeat loop (the path does not change the packet): what every
// packet leaving the cluster pays with warm caches, the service lookup that misses included.
func BenchmarkPodEgressOutsideRepeat(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	ret, d, err := coll.Programs["pod_egress"].Benchmark(podUDP(podA, internetIP, 1024), b.N, b.ResetTimer)
	if err != nil || ret != tcActOK {
		b.Fatalf("verdict %d, %v", ret, err)
	}
	b.ReportMetric(float64(d.Nanoseconds()), "ns/pkt")
}

// ---- services (bpf/lib/lb_xlate.h) ----

// A pod's UDP packet to a frontend whose backend is pod B (local) or a remote pod.
func benchService(b *testing.B, backends ...backend) (*ebpf.Collection, []byte) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	putSvc(b, coll, svcVIP, 80, protoUDP, 1, 0, 0, backends...)
	return coll, podUDPPorts(podA, 40000, svcVIP, 80, 64)
}

func podUDPPorts(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, payloadLen int) []byte {
	return podPacket(src, dst, udpSeg(src, dst, sport, dport, make([]byte, payloadLen), true), protoUDP, true)
}

// Every packet opens a connection: backend pick, both entries written, DNAT, local delivery.
func BenchmarkPodEgressServiceNew(b *testing.B) {
	coll, pkt := benchService(b, backend{podB, 8080})
	fwd := ctKey(podA, 40000, svcVIP, 80, protoUDP, ctFwd)
	benchRunSetup(b, coll.Programs["pod_egress"], pkt, tcActRedirect, func() { coll.Maps["lb_ct_map"].Delete(fwd) })
}

// The same with 10,000 other frontends of 10 backends each in the maps (BenchmarkServices in
// tests/bench programs as many): the lookups are hashes, so this should cost what
// BenchmarkPodEgressServiceNew does.
func BenchmarkPodEgressServiceNew10k(b *testing.B) {
	coll, pkt := benchService(b, backend{podB, 8080})
	for i := range 10000 {
		vip := netip.AddrFrom4([4]byte{10, 97, byte(i >> 8), byte(i)})
		bs := make([]backend, 10)
		for e := range bs {
			bs[e] = backend{netip.AddrFrom4([4]byte{100, 64 + byte(i>>12), byte(i >> 4), byte(i<<4 | e)}), 8080}
		}
		putSvc(b, coll, vip, 80, protoTCP, uint32(2+i), 0, 0, bs...)
	}
	fwd := ctKey(podA, 40000, svcVIP, 80, protoUDP, ctFwd)
	benchRunSetup(b, coll.Programs["pod_egress"], pkt, tcActRedirect, func() { coll.Maps["lb_ct_map"].Delete(fwd) })
}

// An established connection: the FWD entry's backend, DNAT, local delivery. Compare with
// BenchmarkPodEgressLocal (the same delivery without a service).
func BenchmarkPodEgressServiceEstablished(b *testing.B) {
	coll, pkt := benchService(b, backend{podB, 8080})
	run(b, coll.Programs["pod_egress"], pkt, nil)
	benchRun(b, coll.Programs["pod_egress"], pkt, tcActRedirect)
}

// The same toward a remote backend (1024-byte payload): compare with BenchmarkPodEgressRemoteEncap.
func BenchmarkPodEgressServiceEstablishedRemote(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	putSvc(b, coll, svcVIP, 80, protoUDP, 1, 0, 0, backend{remotePod, 8080})
	pkt := podUDPPorts(podA, 40000, svcVIP, 80, 1024)
	run(b, coll.Programs["pod_egress"], pkt, nil)
	benchRun(b, coll.Programs["pod_egress"], pkt, tcActRedirect)
}

// The local backend's reply: the REV entry, source back to the frontend, local delivery.
func BenchmarkPodEgressServiceReply(b *testing.B) {
	coll, pkt := benchService(b, backend{podB, 8080})
	run(b, coll.Programs["pod_egress"], pkt, nil)
	sendAs(b, coll, podB)
	reply := podUDPPorts(podB, 8080, podA, 40000, 64)
	run(b, coll.Programs["pod_egress"], reply, nil)
	benchRun(b, coll.Programs["pod_egress"], reply, tcActRedirect)
}

// repeatChunk is how many times benchRepeat lets the kernel run a program on one skb: a delivery
// to a pod is a routing hop (lib/ttl.h) and lowers the TTL the skb keeps between runs, so a
// packet with TTL 64 would be dropped as TTL_EXCEEDED at its 64th run.
const repeatChunk = 32

// benchRepeat is the kernel's repeat loop over pkt, for paths that leave the packet as it was but
// for its TTL: chunks of repeatChunk runs, each on a fresh copy of pkt.
func benchRepeat(b *testing.B, prog *ebpf.Program, pkt []byte, want uint32) {
	b.Helper()
	var total time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(repeatChunk, b.N-done)
		ret, d, err := prog.Benchmark(pkt, n, nil) // test_run copies pkt into a new skb
		if err != nil || ret != want {
			b.Fatalf("verdict %d, want %d: %v", ret, want, err)
		}
		total += d * time.Duration(n)
		done += n
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt")
}

// The service path with warm caches, through the repeat loop: the frontend's backend is its own
// address and port, so the translation (lookups, clock, checksum and store helpers) runs in full
// and leaves the packet as it was. Compare with BenchmarkPodEgressOutsideRepeat, the same packet
// to an address without a frontend.
func BenchmarkPodEgressServiceEstablishedRepeat(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	putSvc(b, coll, internetIP, 53, protoUDP, 1, 0, 0, backend{internetIP, 53})
	pkt := podUDPPorts(podA, 40000, internetIP, 53, 1024)
	run(b, coll.Programs["pod_egress"], pkt, nil)
	benchRepeat(b, coll.Programs["pod_egress"], pkt, tcActOK)
}

// A reply's reverse translation with warm caches: the REV entry names the backend itself as the
// frontend. Compare with BenchmarkPodEgressLocalRepeat (the same delivery, the lookup missing).
func BenchmarkPodEgressServiceReplyRepeat(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	sendAs(b, coll, podB)
	put(b, coll, "lb_ct_map", ctKey(podB, 8080, podA, 40000, protoUDP, ctRev),
		podLbCt{Addr: be32(podB), Port: be16(8080), Flags: ctSeenReply, SvcId: 1, LastSeen: bootNow(b)})
	benchRepeat(b, coll.Programs["pod_egress"], podUDPPorts(podB, 8080, podA, 40000, 64), tcActRedirect)
}

// A remote backend's reply through VXLAN: decapsulation, the REV entry, local delivery. Compare
// with BenchmarkNodeIngressDecap.
func BenchmarkNodeIngressDecapServiceReply(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll)
	put(b, coll, "lb_ct_map", ctKey(remotePod, 1234, podA, 5678, protoUDP, ctRev),
		podLbCt{Addr: be32(svcVIP), Port: be16(80), Flags: ctSeenReply, SvcId: 1, LastSeen: bootNow(b)})
	in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), innerFrame(remotePod, podA))
	benchRun(b, coll.Programs["node_ingress"], in, tcActRedirect)
}

func BenchmarkNodeIngressDecap(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll)
	in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), innerFrame(remotePod, podA))
	benchRun(b, coll.Programs["node_ingress"], in, tcActRedirect)
}

func BenchmarkNodeIngressHostTraffic(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll, withMasquerade())
	in := toNode(strangerIP, protoTCP, tcpSeg(strangerIP, nodeIP, 5555, 22, tcpACK, make([]byte, 1024)))
	benchRun(b, coll.Programs["node_ingress"], in, tcActOK)
}

func BenchmarkNodeEgressMasquerade(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll, withMasquerade())
	prog := coll.Programs["node_egress"]
	// The first packet creates the mapping; the benchmark measures established-flow packets.
	run(b, prog, fromPod(podA, internetIP, protoTCP, tcpSeg(podA, internetIP, 40000, 443, tcpSYN, nil)), nil)
	benchRun(b, prog, fromPod(podA, internetIP, protoTCP, tcpSeg(podA, internetIP, 40000, 443, tcpACK, make([]byte, 1024))), tcActOK)
}

// The cost of `edgeplanectl monitor` on a drop (NO_ROUTE) and on a forwarded packet: nobody
// listening (one inlined load of monitor_cfg_map), listening with a reader draining the ring buffer,
// and listening with the buffer full (the event is counted as lost).
func benchMonitor(b *testing.B, pkt []byte, want uint32, flags uint32, drain bool) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	setMonitor(b, coll, flags)
	rd := eventReader(b, coll)
	if drain {
		go func() {
			var rec ringbuf.Record
			for rd.ReadInto(&rec) == nil {
			}
		}()
	} else if flags != 0 { // fill the buffer first
		n := rd.BufferSize()/64 + 1
		if _, _, err := coll.Programs["pod_egress"].Benchmark(pkt, n, nil); err != nil {
			b.Fatal(err)
		}
	}
	benchRun(b, coll.Programs["pod_egress"], pkt, want)
}

func BenchmarkPodEgressDropMonitorOff(b *testing.B) {
	benchMonitor(b, podUDP(podA, netip.MustParseAddr("10.244.9.9"), 64), tcActShot, 0, false)
}

func BenchmarkPodEgressDropMonitorOn(b *testing.B) {
	benchMonitor(b, podUDP(podA, netip.MustParseAddr("10.244.9.9"), 64), tcActShot, monitorDrops, true)
}

func BenchmarkPodEgressDropMonitorFull(b *testing.B) {
	benchMonitor(b, podUDP(podA, netip.MustParseAddr("10.244.9.9"), 64), tcActShot, monitorDrops, false)
}

func BenchmarkPodEgressLocalTraceOff(b *testing.B) {
	benchMonitor(b, podUDP(podA, podB, 64), tcActRedirect, 0, false)
}

func BenchmarkPodEgressLocalTraceOn(b *testing.B) {
	benchMonitor(b, podUDP(podA, podB, 64), tcActRedirect, monitorTrace, true)
}

// benchXDP reports what node_xdp costs per packet with the kernel's repeat loop (the program
// does not change the packet, so every run sees the same one): "ns/pkt" above an XDP program
// that only returns, "ns/pkt-raw" with the loop's own cost, and the rate one core sustains at
// that raw cost ("Mpps"), the figure issue 4 compares with an iptables drop rule.
func benchXDP(b *testing.B, prog *ebpf.Program, pkt []byte, want uint32) {
	b.Helper()
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, int64(want), asm.DWord), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	ret, d, err := prog.Benchmark(pkt, b.N, b.ResetTimer)
	if err != nil || ret != want {
		b.Fatalf("verdict %d, want %d: %v", ret, want, err)
	}
	b.StopTimer()
	_, base, err := empty.Benchmark(pkt, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(d.Nanoseconds()), "ns/pkt-raw")
	b.ReportMetric(float64((d - base).Nanoseconds()), "ns/pkt")
	b.ReportMetric(1e3/float64(d.Nanoseconds()), "Mpps")
}

// A closed NodePort (pool isolation) to the node IP: the drop issue 4 measures.
func BenchmarkNodeXDPDrop(b *testing.B) {
	coll := xdpCollection(b)
	benchXDP(b, coll.Programs["node_xdp"], synTo(nodeIP, closedTCP), xdpDrop)
}

// What every other packet pays: host traffic to a port no frontend has (two lookups that miss).
func BenchmarkNodeXDPPass(b *testing.B) {
	coll := xdpCollection(b)
	benchXDP(b, coll.Programs["node_xdp"], from(strangerIP, nodeIP, protoTCP, tcpSeg(strangerIP, nodeIP, 5555, 22, tcpACK, make([]byte, 1024))), xdpPass)
}

// VXLAN leaves at the port check, before any lookup.
func BenchmarkNodeXDPPassVXLAN(b *testing.B) {
	coll := xdpCollection(b)
	benchXDP(b, coll.Programs["node_xdp"], vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), innerFrame(remotePod, podA)), xdpPass)
}

// A closed NodePort to the node IP (compared with node_cfg_map) and to another address of the
// node (the FIB lookup says it is local), in a netns that has both. Timed by the wall clock around
// one run of b.N repeats (test_run's timer is not exposed with a context), so ns/op includes the
// syscall once.
func BenchmarkNodeXDPDropAddress(b *testing.B) {
	for _, c := range []struct {
		name string
		dst  netip.Addr
	}{{"node-ip", nodeIP}, {"other-address", secondaryIP}} {
		b.Run(c.name, func(b *testing.B) {
			if !kernelAtLeast(b, 5, 15) { // as TestNodeXDPLocalAddresses
				b.Skip("BPF_PROG_TEST_RUN takes no xdp_md (ingress_ifindex) before Linux 5.15")
			}
			coll := xdpCollection(b)
			netns, nic := xdpNetns(b)
			pkt := synTo(c.dst, closedTCP)
			err := netns.Do(func(ns.NetNS) error {
				opts := &ebpf.RunOptions{Data: pkt, Repeat: uint32(b.N), Reset: b.ResetTimer,
					Context: xdpMd{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(nic)}}
				b.ResetTimer()
				ret, err := coll.Programs["node_xdp"].Run(opts)
				b.StopTimer()
				if err == nil && ret != xdpDrop {
					return fmt.Errorf("verdict %d, want XDP_DROP", ret)
				}
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

// NodePort from outside to a local backend, established (node_ingress: the EXTERNAL lookup, the
// FWD entry, DNAT, peer redirect). Compare with BenchmarkNodeIngressHostTraffic, which now pays
// the lookups that miss.
func BenchmarkNodeIngressNodePortLocal(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll)
	putExtSvc(b, coll, netip.Addr{}, nodePort, protoUDP, 1, lbSvcNodePort, backend{podB, 8080})
	pkt := from(outsideClient, nodeIP, protoUDP, udpSeg(outsideClient, nodeIP, 40000, nodePort, make([]byte, 64), true))
	run(b, coll.Programs["node_ingress"], pkt, nil)
	benchRun(b, coll.Programs["node_ingress"], pkt, tcActRedirect)
}

// NodePort to a remote backend, established: DNAT, SNAT to the overlay address, VXLAN.
func BenchmarkNodeIngressNodePortRemote(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll)
	putExtSvc(b, coll, netip.Addr{}, nodePort, protoUDP, 1, lbSvcNodePort, backend{remotePod, 8080})
	pkt := from(outsideClient, nodeIP, protoUDP, udpSeg(outsideClient, nodeIP, 40000, nodePort, make([]byte, 1024), true))
	run(b, coll.Programs["node_ingress"], pkt, nil)
	benchRun(b, coll.Programs["node_ingress"], pkt, tcActRedirect)
}

// A local backend's reply to an outside client: REV entry, out of the NIC (redirect_neigh).
// Compare with BenchmarkPodEgressOutside (the same kind of packet, no entry: one failed lookup).
func BenchmarkPodEgressNodePortReply(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	sendAs(b, coll, podB)
	put(b, coll, "lb_ct_map", ctKey(podB, 8080, outsideClient, 40000, protoUDP, ctRev),
		podLbCt{Addr: be32(nodeIP), Port: be16(nodePort), Flags: ctSeenReply | ctExternal, SvcId: 1, LastSeen: bootNow(b)})
	benchRun(b, coll.Programs["pod_egress"], podUDPPorts(podB, 8080, outsideClient, 40000, 64), tcActRedirect)
}

// ---- route mode, and the NIC's egress on what pod_egress redirected to it (issues 15 and 16) ----

// A pod's 64-byte UDP datagram to a remote pod in route mode: no encapsulation, out of the NIC to
// the resolved next hop. Compare with BenchmarkPodEgressRemoteEncap64, the same through VXLAN.
func BenchmarkPodEgressRemoteDirect(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	putRoute(b, coll, "10.244.2.0/24", podRoute{NodeIp: be32(remoteNodeIP), Encap: 1 /* ROUTE_ENCAP_DIRECT */})
	benchRun(b, coll.Programs["pod_egress"], podUDP(podA, remotePod, 64), tcActRedirect)
}

// The 64-byte datagram of the lab's fixed-rate measurement through native VXLAN.
func BenchmarkPodEgressRemoteEncap64(b *testing.B) {
	coll := newCollection(b, loadPod)
	fillCluster(b, coll)
	benchRun(b, coll.Programs["pod_egress"], podUDP(podA, remotePod, 64), tcActRedirect)
}

// node_ingress delivering a remote pod's unencapsulated packet (route mode) to a local pod: the
// source's route (anti-spoofing of route mode), the reverse-translation lookup, the peer redirect.
func BenchmarkNodeIngressDirect(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll, withMasquerade())
	putRoute(b, coll, "10.244.2.0/24", podRoute{NodeIp: be32(remoteNodeIP), Encap: 1 /* ROUTE_ENCAP_DIRECT */})
	in := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: remotePod, dst: podA, proto: protoUDP}.build(
		udpSeg(remotePod, podA, 40000, 53, make([]byte, 64), true)))
	benchRun(b, coll.Programs["node_ingress"], in, tcActRedirect)
}

// node_egress runs on every frame pod_egress redirects to the NIC (dev_queue_xmit runs the NIC's
// tc egress hook): a route-mode pod packet to a remote pod and a VXLAN frame, with masquerade on
// (the agent's default). Neither is masqueraded.
func BenchmarkNodeEgressDirect(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll, withMasquerade())
	benchRun(b, coll.Programs["node_egress"], fromPod(podA, remotePod, protoUDP, udpSeg(podA, remotePod, 40000, 53, make([]byte, 64), true)), tcActOK)
}

func BenchmarkNodeEgressVXLAN(b *testing.B) {
	coll := newCollection(b, loadNode)
	fillCluster(b, coll, withMasquerade())
	inner := ethFrame(remoteVtepMAC, vtepMAC, ethPIPv4, ipHdr{src: podA, dst: remotePod, proto: protoUDP}.build(
		udpSeg(podA, remotePod, 40000, 53, make([]byte, 64), true)))
	udp := udpSeg(nodeIP, remoteNodeIP, 54321, vxlanPort, append(vxlanHdr(0x08000000, vni), inner...), false)
	benchRun(b, coll.Programs["node_egress"], ethFrame(remoteNextHop, underlayMAC, ethPIPv4,
		ipHdr{src: nodeIP, dst: remoteNodeIP, proto: protoUDP}.build(udp)), tcActOK)
}
