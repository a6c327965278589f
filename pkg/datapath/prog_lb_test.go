package datapath

// Services (bpf/lib/lb_xlate.h): pods' and the node's connections to frontends, translated per
// packet; replies reverse-translated wherever they are delivered.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"golang.org/x/sys/unix"
)

var (
	svcVIP      = netip.MustParseAddr("10.96.0.10")
	overlayAddr = netip.MustParseAddr("10.244.1.0") // this node's overlay address (edgeplane.1)
	hairpinIP   = netip.MustParseAddr("169.254.42.1")
	apiServer   = netip.MustParseAddr("172.30.0.5") // a host-network backend outside the cluster
	remotePod2  = netip.MustParseAddr("10.244.2.21")
	remotePod3  = netip.MustParseAddr("10.244.2.22")
)

// lb.h flags.
const (
	svcAffinity = 1 << 0
	svcClosed   = 1 << 2

	ctSeenReply = 1 << 0
	ctClosing   = 1 << 1
	ctHairpin   = 1 << 2

	ctFwd = 0
	ctRev = 1

	tcpFIN = 0x01
	tcpRST = 0x04
)

type backend struct {
	ip   netip.Addr
	port uint16
}

func (b backend) String() string { return fmt.Sprintf("%v:%d", b.ip, b.port) }

// putSvc writes a frontend of scope INTERNAL with backend set id, slots first as the agent does.
func putSvc(t testing.TB, coll *ebpf.Collection, vip netip.Addr, port uint16, proto uint8, id uint32, flags uint16, affinity uint32, backends ...backend) {
	t.Helper()
	for i, b := range backends {
		put(t, coll, "lb_backend_map", podLbBackendKey{SvcId: id, Slot: uint32(i)}, podLbBackend{Ip: be32(b.ip), Port: be16(b.port)})
	}
	put(t, coll, "lb_svc_map", podLbSvcKey{Vip: be32(vip), Port: be16(port), Proto: proto},
		podLbSvc{Id: id, Count: uint16(len(backends)), Flags: flags, AffinityTimeout: affinity})
}

func ctKey(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, proto, dir uint8) podLbCtKey {
	return podLbCtKey{Saddr: be32(src), Daddr: be32(dst), Sport: be16(sport), Dport: be16(dport), Proto: proto, Dir: dir}
}

func ctGet(t testing.TB, coll *ebpf.Collection, k podLbCtKey) (podLbCt, bool) {
	t.Helper()
	var v podLbCt
	if err := coll.Maps["lb_ct_map"].Lookup(k, &v); err != nil {
		return v, false
	}
	return v, true
}

// ctBackend is the backend the FWD entry of a client's connection names.
func ctBackend(t testing.TB, coll *ebpf.Collection, client netip.Addr, sport uint16, proto uint8) backend {
	t.Helper()
	v, ok := ctGet(t, coll, ctKey(client, sport, svcVIP, 80, proto, ctFwd))
	if !ok {
		t.Fatalf("no FWD entry for %v:%d", client, sport)
	}
	return backend{addrOf(v.Addr), beToHost16(v.Port)}
}

// ageCT moves an entry's last_seen d into the past.
func ageCT(t testing.TB, coll *ebpf.Collection, k podLbCtKey, d time.Duration) {
	t.Helper()
	v, ok := ctGet(t, coll, k)
	if !ok {
		t.Fatalf("no entry %+v", k)
	}
	v.LastSeen = bootNow(t) - uint64(d)
	put(t, coll, "lb_ct_map", k, v)
}

// copyCT copies every connection tracking entry: what one program wrote, as the other program on
// the node sees it through the shared pinned map.
func copyCT(t testing.TB, from, to *ebpf.Collection) {
	t.Helper()
	var k podLbCtKey
	var v podLbCt
	it := from.Maps["lb_ct_map"].Iterate()
	for it.Next(&k, &v) {
		put(t, to, "lb_ct_map", k, v)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
}

func bootNow(t testing.TB) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

func addrOf(be uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], be)
	return netip.AddrFrom4(b)
}

func beToHost16(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

// sendAs makes pod the sender of the next test_run packets: the skb's device (ifindex 1) becomes
// its veth for the anti-spoofing check; the other test pod gets another index.
func sendAs(t testing.TB, coll *ebpf.Collection, pod netip.Addr) {
	t.Helper()
	a, b := podAIfindex, podBIfindex
	if pod == podB {
		a, b = podBIfindex, podAIfindex
	}
	put(t, coll, "endpoints_map", be32(podA), podEndpoint{Ifindex: a, PodMac: podAMAC, HostMac: podAHostMAC})
	put(t, coll, "endpoints_map", be32(podB), podEndpoint{Ifindex: b, PodMac: podBMAC, HostMac: podBHostMAC})
}

func l4Seg(proto uint8, src, dst netip.Addr, sport, dport uint16, flags uint8, payload []byte) []byte {
	if proto == protoTCP {
		return tcpSeg(src, dst, sport, dport, flags, payload)
	}
	return udpSeg(src, dst, sport, dport, payload, true)
}

// podSend is a pod's TCP (flags) or UDP packet as it arrives on its host veth.
func podSend(proto uint8, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, flags uint8) []byte {
	return podPacket(src, dst, l4Seg(proto, src, dst, sport, dport, flags, []byte("hello")), proto, true)
}

// checkTuple parses the IPv4 packet at b and verifies its addresses, ports and checksums.
func checkTuple(t testing.TB, b []byte, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) parsedIP {
	t.Helper()
	p := parseIP(t, b)
	checkL4Csum(t, p)
	gs, gd := ports(p)
	if p.src != src || gs != sport || p.dst != dst || gd != dport {
		t.Errorf("packet %v:%d -> %v:%d, want %v:%d -> %v:%d", p.src, gs, p.dst, gd, src, sport, dst, dport)
	}
	return p
}

func lbCluster(t testing.TB, coll *ebpf.Collection, opts ...cfgOpt) {
	t.Helper()
	fillCluster(t, coll, opts...)
}

func TestServiceForward(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		for _, tt := range []struct {
			name    string
			backend backend
			remote  bool
		}{
			{"local backend", backend{podB, 8080}, false},
			{"remote backend", backend{remotePod, 8080}, true},
			{"same port", backend{podB, 80}, false},
		} {
			t.Run(fmt.Sprintf("proto %d %s", proto, tt.name), func(t *testing.T) {
				coll := newCollection(t, loadPod)
				lbCluster(t, coll)
				putSvc(t, coll, svcVIP, 80, proto, 7, 0, 0, tt.backend)
				flags := uint8(tcpSYN)
				in := podSend(proto, podA, 40000, svcVIP, 80, flags)
				before := bootNow(t)
				got, out := run(t, coll.Programs["pod_egress"], in, nil)
				if got != tcActRedirect {
					t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
				}
				ipOff := 14
				if tt.remote {
					ipOff = 14 + 50 // VXLAN toward the backend's node
					checkVXLAN(t, out, append(bytes.Clone(out[:14]), out[ipOff:]...), true)
				} else if dst, src := macs(out); dst != podBMAC || src != podBHostMAC {
					t.Errorf("MACs dst %x src %x, want pod B's", dst, src)
				}
				p := checkTuple(t, out[ipOff:], podA, 40000, tt.backend.ip, tt.backend.port)
				if !bytes.Equal(p.payload[len(p.payload)-5:], []byte("hello")) {
					t.Errorf("payload changed")
				}

				fwd, ok := ctGet(t, coll, ctKey(podA, 40000, svcVIP, 80, proto, ctFwd))
				if !ok || addrOf(fwd.Addr) != tt.backend.ip || beToHost16(fwd.Port) != tt.backend.port || fwd.SvcId != 7 || fwd.Flags != 0 {
					t.Errorf("FWD entry %+v (found %v), want backend %v, svc 7", fwd, ok, tt.backend)
				}
				if fwd.LastSeen < before || fwd.LastSeen > bootNow(t) {
					t.Errorf("FWD last_seen %d not between %d and now", fwd.LastSeen, before)
				}
				rev, ok := ctGet(t, coll, ctKey(tt.backend.ip, tt.backend.port, podA, 40000, proto, ctRev))
				if !ok || addrOf(rev.Addr) != svcVIP || beToHost16(rev.Port) != 80 || rev.SvcId != 7 {
					t.Errorf("REV entry %+v (found %v), want frontend %v:80", rev, ok, svcVIP)
				}
			})
		}
	}
}

func TestServiceUDPWithoutChecksum(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 53, protoUDP, 1, 0, 0, backend{podB, 5353})
	in := podPacket(podA, svcVIP, udpSeg(podA, svcVIP, 40000, 53, []byte("q"), false), protoUDP, true)
	if got, out := run(t, coll.Programs["pod_egress"], in, nil); got != tcActRedirect {
		t.Fatalf("verdict %d", got)
	} else if p := checkTuple(t, out[14:], podA, 40000, podB, 5353); binary.BigEndian.Uint16(p.payload[6:]) != 0 {
		t.Errorf("UDP checksum %#x, want 0 (none) kept", binary.BigEndian.Uint16(p.payload[6:]))
	}
}

func TestServiceNotAService(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	prog := coll.Programs["pod_egress"]
	for _, tt := range []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"another port of the VIP", podSend(protoTCP, podA, 40000, svcVIP, 81, tcpSYN), tcActOK},
		{"another protocol on the port", podSend(protoUDP, podA, 40000, svcVIP, 80, 0), tcActOK},
		{"ICMP to the VIP", podPacket(podA, svcVIP, icmpMsg(8, 0, echoRest(1, 1), nil), protoICMP, true), tcActOK},
		{"local pod", podSend(protoTCP, podA, 40000, podB, 80, tcpSYN), tcActRedirect},
		{"outside the cluster", podSend(protoUDP, podA, 40000, internetIP, 53, 0), tcActOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, out := run(t, prog, tt.pkt, nil)
			if got != tt.want {
				t.Fatalf("verdict %d, want %d", got, tt.want)
			}
			if !bytes.Equal(out[12:len(tt.pkt)], tt.pkt[12:]) {
				t.Errorf("IP packet changed")
			}
		})
	}
	var k podLbCtKey
	var v podLbCt
	if coll.Maps["lb_ct_map"].Iterate().Next(&k, &v) {
		t.Errorf("connection tracked for non-service traffic: %+v", k)
	}
}

func TestServiceEstablishedKeepsBackend(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), nil)

	// The agent moves the frontend to a new backend set (new id, slots first) without pod B.
	putSvc(t, coll, svcVIP, 80, protoTCP, 2, 0, 0, backend{remotePod, 9090})
	_, out := run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpACK), nil)
	checkTuple(t, out[14:], podA, 40000, podB, 8080)
	// A new connection gets the new set.
	_, out = run(t, prog, podSend(protoTCP, podA, 40001, svcVIP, 80, tcpSYN), nil)
	checkTuple(t, out[64:], podA, 40001, remotePod, 9090)
	// So does one without backends left: established connections keep theirs.
	putSvc(t, coll, svcVIP, 80, protoTCP, 3, 0, 0)
	if got, out := run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpACK), nil); got != tcActRedirect {
		t.Fatalf("established connection to an emptied service: verdict %d", got)
	} else {
		checkTuple(t, out[14:], podA, 40000, podB, 8080)
	}
}

func TestServiceSpreads(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	backends := []backend{{podB, 8080}, {remotePod, 8080}, {remotePod2, 8080}, {remotePod3, 8080}}
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backends...)
	prog := coll.Programs["pod_egress"]
	const n = 400
	count := map[backend]int{}
	for i := range n {
		sport := uint16(30000 + i)
		if got, _ := run(t, prog, podSend(protoTCP, podA, sport, svcVIP, 80, tcpSYN), nil); got != tcActRedirect {
			t.Fatalf("verdict %d", got)
		}
		count[ctBackend(t, coll, podA, sport, protoTCP)]++
	}
	for _, b := range backends {
		if c := count[b]; c < n/len(backends)/2 || c > n/len(backends)*3/2 {
			t.Errorf("backend %v got %d of %d connections: %v", b, c, n, count)
		}
	}
	// The same tuple hashes to the same backend: a connection whose entry is lost comes back to it.
	first := ctBackend(t, coll, podA, 30000, protoTCP)
	if err := coll.Maps["lb_ct_map"].Delete(ctKey(podA, 30000, svcVIP, 80, protoTCP, ctFwd)); err != nil {
		t.Fatal(err)
	}
	run(t, prog, podSend(protoTCP, podA, 30000, svcVIP, 80, tcpACK), nil)
	if again := ctBackend(t, coll, podA, 30000, protoTCP); again != first {
		t.Errorf("lost entry: %v, then %v", first, again)
	}
}

func TestServiceAffinity(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	backends := []backend{{podB, 8080}, {remotePod, 8080}, {remotePod2, 8080}, {remotePod3, 8080}}
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, svcAffinity, 10, backends...)
	prog := coll.Programs["pod_egress"]

	run(t, prog, podSend(protoTCP, podA, 30000, svcVIP, 80, tcpSYN), nil)
	first := ctBackend(t, coll, podA, 30000, protoTCP)
	var aff podLbAffinity
	if err := coll.Maps["lb_affinity_map"].Lookup(podLbAffinityKey{SvcId: 1, Client: be32(podA)}, &aff); err != nil {
		t.Fatalf("no affinity entry: %v", err)
	}
	if addrOf(aff.Ip) != first.ip || beToHost16(aff.Port) != first.port {
		t.Errorf("affinity %v:%d, want %v", addrOf(aff.Ip), beToHost16(aff.Port), first)
	}
	for i := 1; i < 40; i++ {
		sport := uint16(30000 + i)
		run(t, prog, podSend(protoTCP, podA, sport, svcVIP, 80, tcpSYN), nil)
		if b := ctBackend(t, coll, podA, sport, protoTCP); b != first {
			t.Fatalf("connection %d went to %v, want %v (affinity)", i, b, first)
		}
	}

	// An affinity to a backend the hash would never pick (not in the slots), renewed 9 s ago:
	// sticks; 11 s ago: expired, the hash decides and the affinity is renewed to its choice.
	sticky := backend{netip.MustParseAddr("10.244.2.99"), 9999}
	for i, tt := range []struct {
		age  time.Duration
		want bool
	}{{9 * time.Second, true}, {11 * time.Second, false}} {
		put(t, coll, "lb_affinity_map", podLbAffinityKey{SvcId: 1, Client: be32(podA)},
			podLbAffinity{Ip: be32(sticky.ip), Port: be16(sticky.port), LastSeen: bootNow(t) - uint64(tt.age)})
		sport := uint16(31000 + i)
		run(t, prog, podSend(protoTCP, podA, sport, svcVIP, 80, tcpSYN), nil)
		if b := ctBackend(t, coll, podA, sport, protoTCP); (b == sticky) != tt.want {
			t.Errorf("affinity renewed %v ago: backend %v, sticky %v", tt.age, b, tt.want)
		}
	}
	if err := coll.Maps["lb_affinity_map"].Lookup(podLbAffinityKey{SvcId: 1, Client: be32(podA)}, &aff); err != nil || addrOf(aff.Ip) == sticky.ip {
		t.Errorf("expired affinity not replaced: %v:%d (%v)", addrOf(aff.Ip), beToHost16(aff.Port), err)
	}
	// Another client has its own affinity.
	sendAs(t, coll, podB)
	run(t, prog, podSend(protoTCP, podB, 30000, svcVIP, 80, tcpSYN), nil)
	if err := coll.Maps["lb_affinity_map"].Lookup(podLbAffinityKey{SvcId: 1, Client: be32(podB)}, &aff); err != nil {
		t.Errorf("no affinity entry for pod B: %v", err)
	}
}

// checkPortUnreach verifies that out is ICMP "port unreachable" from the frontend to the pod,
// quoting the packet the pod sent (to the frontend, untranslated).
func checkPortUnreach(t *testing.T, out, in []byte) {
	t.Helper()
	if len(out) != 14+28+icmpUnreachQuote {
		t.Fatalf("answer is %d bytes, want %d", len(out), 14+28+icmpUnreachQuote)
	}
	dst, src := macs(out)
	if dst != podAMAC || src != podAHostMAC {
		t.Errorf("MACs dst %x src %x, want the pod's swapped", dst, src)
	}
	ip := parseIP(t, out[14:])
	if ip.proto != protoICMP || ip.src != svcVIP || ip.dst != podA {
		t.Errorf("IP proto %d %v -> %v, want ICMP %v -> %v", ip.proto, ip.src, ip.dst, svcVIP, podA)
	}
	checkL4Csum(t, ip)
	if ip.payload[0] != 3 || ip.payload[1] != 3 {
		t.Errorf("ICMP type %d code %d, want 3/3 (port unreachable)", ip.payload[0], ip.payload[1])
	}
	want := make([]byte, icmpUnreachQuote)
	copy(want, in[14:])
	if quote := ip.payload[8:]; !bytes.Equal(quote, want) {
		t.Errorf("quote:\n got % x\nwant % x", quote, want)
	}
}

func TestServiceWithoutBackends(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0)
	putSvc(t, coll, svcVIP, 53, protoUDP, 2, 0, 0)
	prog := coll.Programs["pod_egress"]
	for _, in := range [][]byte{
		podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN),
		podSend(protoUDP, podA, 40000, svcVIP, 53, 0),
	} {
		drops, sent := metric(t, coll, dirPodEgress, dropreason.NoServiceBackend), metric(t, coll, dirPodEgress, dropreason.ICMPSent)
		got, out := run(t, prog, in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want the ICMP answer redirected back into the pod", got)
		}
		checkPortUnreach(t, out, in)
		if d, s := metric(t, coll, dirPodEgress, dropreason.NoServiceBackend), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != drops+1 || s != sent+1 {
			t.Errorf("NO_SERVICE_BACKEND %d -> %d, ICMP_SENT %d -> %d; want +1 each", drops, d, sent, s)
		}
	}
	// A torn set (a slot missing) is dropped the same way rather than sent nowhere.
	put(t, coll, "lb_svc_map", podLbSvcKey{Vip: be32(svcVIP), Port: be16(80), Proto: protoTCP}, podLbSvc{Id: 9, Count: 2})
	drops := metric(t, coll, dirPodEgress, dropreason.NoServiceBackend)
	run(t, prog, podSend(protoTCP, podA, 40001, svcVIP, 80, tcpSYN), nil)
	if metric(t, coll, dirPodEgress, dropreason.NoServiceBackend) != drops+1 {
		t.Error("torn backend set not counted as NO_SERVICE_BACKEND")
	}
	// A closed frontend (NodePort isolation) is not answered.
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, svcClosed, 0)
	if got, _ := run(t, prog, podSend(protoTCP, podA, 40002, svcVIP, 80, tcpSYN), nil); got != tcActShot || metric(t, coll, dirPodEgress, dropreason.NodePortClosed) != 1 {
		t.Errorf("closed frontend: verdict %d, NODEPORT_CLOSED %d", got, metric(t, coll, dirPodEgress, dropreason.NodePortClosed))
	}
}

func TestServiceReplyLocalBackend(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		t.Run(fmt.Sprint("proto ", proto), func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			putSvc(t, coll, svcVIP, 80, proto, 1, 0, 0, backend{podB, 8080})
			prog := coll.Programs["pod_egress"]
			run(t, prog, podSend(proto, podA, 40000, svcVIP, 80, tcpSYN), nil)

			sendAs(t, coll, podB)
			got, out := run(t, prog, podSend(proto, podB, 8080, podA, 40000, tcpSYN|tcpACK), nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
			}
			if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
				t.Errorf("MACs dst %x src %x, want pod A's", dst, src)
			}
			checkTuple(t, out[14:], svcVIP, 80, podA, 40000)
			rev, _ := ctGet(t, coll, ctKey(podB, 8080, podA, 40000, proto, ctRev))
			fwd, _ := ctGet(t, coll, ctKey(podA, 40000, svcVIP, 80, proto, ctFwd))
			if rev.Flags&ctSeenReply == 0 || fwd.Flags&ctSeenReply == 0 {
				t.Errorf("SEEN_REPLY: REV flags %#x, FWD flags %#x; want it on both", rev.Flags, fwd.Flags)
			}
			// Pod B's own traffic to pod A from another port is no reply: untouched.
			in := podSend(proto, podB, 8081, podA, 40000, tcpSYN)
			if _, out := run(t, prog, in, nil); !bytes.Equal(out[14:len(in)], in[14:]) {
				t.Errorf("non-reply packet changed")
			}
		})
	}
}

func TestServiceReplyRemoteBackend(t *testing.T) {
	pod := newCollection(t, loadPod)
	lbCluster(t, pod)
	putSvc(t, pod, svcVIP, 80, protoTCP, 1, 0, 0, backend{remotePod, 8080})
	run(t, pod.Programs["pod_egress"], podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), nil)

	node := newCollection(t, loadNode)
	lbCluster(t, node)
	copyCT(t, pod, node)
	reply := func() []byte {
		l4 := tcpSeg(remotePod, podA, 8080, 40000, tcpSYN|tcpACK, nil)
		return ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: remotePod, dst: podA, proto: protoTCP}.build(l4))
	}()

	t.Run("VXLAN decapsulated by node_ingress", func(t *testing.T) {
		in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), reply)
		got, out := run(t, node.Programs["node_ingress"], in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
			t.Errorf("MACs dst %x src %x, want pod A's", dst, src)
		}
		checkTuple(t, out[14:], svcVIP, 80, podA, 40000)
	})
	t.Run("direct routing through node_ingress", func(t *testing.T) {
		in := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, reply[14:])
		got, out := run(t, node.Programs["node_ingress"], in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkTuple(t, out[14:], svcVIP, 80, podA, 40000)
	})
	t.Run("expired: not translated", func(t *testing.T) {
		ageCT(t, node, ctKey(remotePod, 8080, podA, 40000, protoTCP, ctRev), 7*time.Hour)
		in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), reply)
		if _, out := run(t, node.Programs["node_ingress"], in, nil); !bytes.Equal(out[14:14+len(reply)-14], reply[14:]) {
			t.Errorf("reply of an expired connection translated")
		}
	})
}

func TestServiceTimeouts(t *testing.T) {
	for _, tt := range []struct {
		name  string
		proto uint8
		flags uint16 // FWD entry's
		age   time.Duration
		alive bool
	}{
		{"UDP within 60 s", protoUDP, 0, 59 * time.Second, true},
		{"UDP after 60 s", protoUDP, 0, 61 * time.Second, false},
		{"TCP unanswered within 60 s", protoTCP, 0, 59 * time.Second, true},
		{"TCP unanswered after 60 s", protoTCP, 0, 61 * time.Second, false},
		{"TCP established after 60 s", protoTCP, ctSeenReply, 61 * time.Second, true},
		{"TCP established after 6 h", protoTCP, ctSeenReply, 6*time.Hour + time.Second, false},
		// An older program's CLOSING, direction unknown: the time-wait (prog_ct_close_test.go has the rest).
		{"TCP closing within 120 s", protoTCP, ctSeenReply | ctClosing, 119 * time.Second, true},
		{"TCP closing after 120 s", protoTCP, ctSeenReply | ctClosing, 121 * time.Second, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			prog := coll.Programs["pod_egress"]
			putSvc(t, coll, svcVIP, 80, tt.proto, 1, 0, 0, backend{podB, 8080})
			run(t, prog, podSend(tt.proto, podA, 40000, svcVIP, 80, tcpSYN), nil)
			k := ctKey(podA, 40000, svcVIP, 80, tt.proto, ctFwd)
			v, _ := ctGet(t, coll, k)
			v.Flags = tt.flags
			v.LastSeen = bootNow(t) - uint64(tt.age)
			put(t, coll, "lb_ct_map", k, v)
			// The set changes: a live connection stays, a dead one is new and gets the new set.
			putSvc(t, coll, svcVIP, 80, tt.proto, 2, 0, 0, backend{remotePod, 9090})
			got, out := run(t, prog, podSend(tt.proto, podA, 40000, svcVIP, 80, tcpACK), nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d", got)
			}
			if tt.alive {
				checkTuple(t, out[14:], podA, 40000, podB, 8080)
			} else {
				checkTuple(t, out[64:], podA, 40000, remotePod, 9090)
				if rev, ok := ctGet(t, coll, ctKey(remotePod, 9090, podA, 40000, tt.proto, ctRev)); !ok || addrOf(rev.Addr) != svcVIP {
					t.Errorf("new REV entry missing: %+v", rev)
				}
			}
			if v, _ := ctGet(t, coll, k); bootNow(t)-v.LastSeen > uint64(time.Second) {
				t.Errorf("last_seen not refreshed")
			}
		})
	}
}

func TestServiceTCPClose(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	fwdKey := ctKey(podA, 40000, svcVIP, 80, protoTCP, ctFwd)
	revKey := ctKey(podB, 8080, podA, 40000, protoTCP, ctRev)
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), nil)

	// The backend resets: both entries are closing (10 s after an RST).
	sendAs(t, coll, podB)
	run(t, prog, podSend(protoTCP, podB, 8080, podA, 40000, tcpRST|tcpACK), nil)
	for _, k := range []podLbCtKey{fwdKey, revKey} {
		if v, _ := ctGet(t, coll, k); v.Flags&ctClosing == 0 {
			t.Errorf("entry dir %d flags %#x, want CLOSING", k.Dir, v.Flags)
		}
	}
	// The client's next SYN on that tuple is a new connection: it gets the current set.
	putSvc(t, coll, svcVIP, 80, protoTCP, 2, 0, 0, backend{remotePod, 9090})
	sendAs(t, coll, podA)
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpACK), nil)
	if b := ctBackend(t, coll, podA, 40000, protoTCP); b != (backend{podB, 8080}) {
		t.Errorf("late ACK of the closing connection went to %v", b)
	}
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), nil)
	if b := ctBackend(t, coll, podA, 40000, protoTCP); b != (backend{remotePod, 9090}) {
		t.Errorf("SYN reusing a closing tuple went to %v, want the new set", b)
	}
	if v, _ := ctGet(t, coll, fwdKey); v.Flags&ctClosing != 0 {
		t.Errorf("new connection's entry is closing: %#x", v.Flags)
	}
	// The client's FIN closes it too.
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpFIN|tcpACK), nil)
	if v, _ := ctGet(t, coll, fwdKey); v.Flags&ctClosing == 0 {
		t.Errorf("FIN: flags %#x, want CLOSING", v.Flags)
	}
	if v, _ := ctGet(t, coll, ctKey(remotePod, 9090, podA, 40000, protoTCP, ctRev)); v.Flags&ctClosing == 0 {
		t.Errorf("FIN: REV flags %#x, want CLOSING", v.Flags)
	}
}

func TestServiceHairpin(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		t.Run(fmt.Sprint("proto ", proto), func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			prog := coll.Programs["pod_egress"]
			putSvc(t, coll, svcVIP, 80, proto, 1, 0, 0, backend{podA, 8080})

			// Pod A reaches itself: from the hairpin address, into its own veth.
			got, out := run(t, prog, podSend(proto, podA, 40000, svcVIP, 80, tcpSYN), nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d", got)
			}
			if dst, src := macs(out); dst != podAMAC || src != podAHostMAC {
				t.Errorf("MACs dst %x src %x, want pod A's", dst, src)
			}
			checkTuple(t, out[14:], hairpinIP, 40000, podA, 8080)
			fwd, _ := ctGet(t, coll, ctKey(podA, 40000, svcVIP, 80, proto, ctFwd))
			rev, ok := ctGet(t, coll, ctKey(podA, 8080, hairpinIP, 40000, proto, ctRev))
			if fwd.Flags&ctHairpin == 0 || !ok || rev.Flags&ctHairpin == 0 {
				t.Errorf("FWD flags %#x, REV %+v (found %v): want HAIRPIN on both", fwd.Flags, rev, ok)
			}

			// Its answer goes to the hairpin address through its default route (the host veth).
			got, out = run(t, prog, podSend(proto, podA, 8080, hairpinIP, 40000, tcpSYN|tcpACK), nil)
			if got != tcActRedirect {
				t.Fatalf("reply: verdict %d", got)
			}
			if dst, _ := macs(out); dst != podAMAC {
				t.Errorf("reply MAC dst %x, want pod A's", dst)
			}
			checkTuple(t, out[14:], svcVIP, 80, podA, 40000)

			// Established: translated the same way again.
			_, out = run(t, prog, podSend(proto, podA, 40000, svcVIP, 80, tcpACK), nil)
			checkTuple(t, out[14:], hairpinIP, 40000, podA, 8080)

			// The hairpin address answers nothing else.
			drops := metric(t, coll, dirPodEgress, dropreason.UnknownEndpoint)
			if got, _ := run(t, prog, podSend(proto, podA, 8080, hairpinIP, 40001, tcpACK), nil); got != tcActShot ||
				metric(t, coll, dirPodEgress, dropreason.UnknownEndpoint) != drops+1 {
				t.Errorf("untracked packet to the hairpin address: verdict %d, not counted as UNKNOWN_ENDPOINT", got)
			}
		})
	}
}

// hostTo is the node's own packet to dst as routed into edgeplane.1 (source: the overlay
// address, the route's src).
func hostTo(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, proto uint8) []byte {
	return ethFrame(anyMAC, vtepMAC, ethPIPv4, ipHdr{src: src, dst: dst, proto: proto, df: true}.build(l4Seg(proto, src, dst, sport, dport, tcpSYN, []byte("hi"))))
}

func TestServiceFromNode(t *testing.T) {
	coll := newCollection(t, loadOverlay)
	lbCluster(t, coll, withMasquerade())
	prog := coll.Programs["overlay_egress"]

	t.Run("remote backend: through the tunnel", func(t *testing.T) {
		putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{remotePod, 8080})
		got, out := run(t, prog, hostTo(overlayAddr, 50000, svcVIP, 80, protoTCP), nil)
		if got != tcActOK {
			t.Fatalf("verdict %d, want TC_ACT_OK (the device encapsulates)", got)
		}
		if dst, src := macs(out); dst != remoteVtepMAC || src != vtepMAC {
			t.Errorf("inner MACs dst %x src %x, want the VTEPs'", dst, src)
		}
		checkTuple(t, out[14:], overlayAddr, 50000, remotePod, 8080)
		if _, ok := ctGet(t, coll, ctKey(remotePod, 8080, overlayAddr, 50000, protoTCP, ctRev)); !ok {
			t.Errorf("no REV entry")
		}
	})
	t.Run("local backend: into the pod's veth", func(t *testing.T) {
		putSvc(t, coll, svcVIP, 81, protoUDP, 2, 0, 0, backend{podB, 8080})
		got, out := run(t, prog, hostTo(overlayAddr, 50000, svcVIP, 81, protoUDP), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		if dst, src := macs(out); dst != podBMAC || src != podBHostMAC {
			t.Errorf("MACs dst %x src %x, want pod B's", dst, src)
		}
		checkTuple(t, out[14:], overlayAddr, 50000, podB, 8080)
	})
	t.Run("local backend, client outside the cluster: the overlay address", func(t *testing.T) {
		got, out := run(t, prog, hostTo(nodeIP, 50001, svcVIP, 81, protoUDP), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		p := parseIP(t, out[14:])
		checkL4Csum(t, p)
		if _, dport := ports(p); p.src != overlayAddr || p.dst != podB || dport != 8080 {
			t.Errorf("packet %v -> %v:%d, want %v -> %v:8080", p.src, p.dst, dport, overlayAddr, podB)
		}
		if _, ok := ctGet(t, coll, ctKey(podB, 8080, nodeIP, 50001, protoUDP, ctRev)); !ok {
			t.Errorf("no REV entry for the client as it sent")
		}
	})
	t.Run("host-network backend: out of the underlay NIC", func(t *testing.T) {
		putSvc(t, coll, svcVIP, 443, protoTCP, 3, 0, 0, backend{apiServer, 6443})
		got, out := run(t, prog, hostTo(overlayAddr, 50002, svcVIP, 443, protoTCP), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkTuple(t, out[14:], overlayAddr, 50002, apiServer, 6443)
	})
	for _, tt := range []struct {
		name    string
		backend backend
		reason  dropreason.Reason
	}{
		{"backend pod gone", backend{netip.MustParseAddr("10.244.1.99"), 80}, dropreason.UnknownEndpoint},
		{"backend without a route", backend{netip.MustParseAddr("10.244.9.9"), 80}, dropreason.NoRoute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			putSvc(t, coll, svcVIP, 82, protoTCP, 4, 0, 0, tt.backend)
			before := metric(t, coll, dirOverlayOut, tt.reason)
			if got, _ := run(t, prog, hostTo(overlayAddr, 50003, svcVIP, 82, protoTCP), nil); got != tcActShot {
				t.Fatalf("verdict %d", got)
			}
			if metric(t, coll, dirOverlayOut, tt.reason) != before+1 {
				t.Errorf("%v not counted", tt.reason)
			}
			coll.Maps["lb_ct_map"].Delete(ctKey(overlayAddr, 50003, svcVIP, 82, protoTCP, ctFwd))
		})
	}
	// No backend: TestServiceFromNodeWithoutBackends (prog_gaps_test.go).
}

func TestServiceReplyToNode(t *testing.T) {
	overlay := newCollection(t, loadOverlay)
	lbCluster(t, overlay)
	putSvc(t, overlay, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	putSvc(t, overlay, svcVIP, 443, protoTCP, 2, 0, 0, backend{apiServer, 6443})
	run(t, overlay.Programs["overlay_egress"], hostTo(overlayAddr, 50000, svcVIP, 80, protoTCP), nil)
	run(t, overlay.Programs["overlay_egress"], hostTo(overlayAddr, 50001, svcVIP, 443, protoTCP), nil)

	t.Run("local backend: pod_egress to the host", func(t *testing.T) {
		pod := newCollection(t, loadPod)
		lbCluster(t, pod)
		copyCT(t, overlay, pod)
		sendAs(t, pod, podB)
		got, out := run(t, pod.Programs["pod_egress"], podSend(protoTCP, podB, 8080, overlayAddr, 50000, tcpSYN|tcpACK), nil)
		if got != tcActOK {
			t.Fatalf("verdict %d, want TC_ACT_OK (the host stack)", got)
		}
		checkTuple(t, out[14:], svcVIP, 80, overlayAddr, 50000)
		// Pods may talk to the node's overlay address like to its other addresses.
		in := podSend(protoUDP, podB, 1234, overlayAddr, 53, 0)
		if got, out := run(t, pod.Programs["pod_egress"], in, nil); got != tcActOK || !bytes.Equal(out[:len(in)], in) {
			t.Errorf("pod to the overlay address: verdict %d or changed", got)
		}
	})
	t.Run("host-network backend: node_ingress to the host", func(t *testing.T) {
		node := newCollection(t, loadNode)
		lbCluster(t, node)
		copyCT(t, overlay, node)
		// (The masquerade on the way out and back is node_egress/nat.h's, tested on its own.)
		in := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: apiServer, dst: overlayAddr, proto: protoTCP}.build(
			tcpSeg(apiServer, overlayAddr, 6443, 50001, tcpSYN|tcpACK, nil)))
		got, out := run(t, node.Programs["node_ingress"], in, nil)
		if got != tcActOK {
			t.Fatalf("verdict %d, want TC_ACT_OK", got)
		}
		checkTuple(t, out[14:], svcVIP, 443, overlayAddr, 50001)
	})
}

// portUnreach is the ICMP error a backend's kernel sends when nothing listens on the port the
// client's (translated) UDP packet went to: from the backend to the client, quoting that packet.
func portUnreach(backend netip.Addr, bport uint16, client netip.Addr, cport uint16) []byte {
	quoted := ipHdr{src: client, dst: backend, proto: protoUDP}.build(udpSeg(client, backend, cport, bport, []byte("query"), true))
	return ipHdr{src: backend, dst: client, proto: protoICMP}.build(icmpMsg(3, 3, [4]byte{}, quoted))
}

// checkPortUnreachReply verifies an ICMP port unreachable about the client's packet to the
// frontend, from the frontend.
func checkPortUnreachReply(t *testing.T, b []byte) {
	t.Helper()
	p := parseIP(t, b)
	checkL4Csum(t, p)
	if p.proto != protoICMP || p.src != svcVIP || p.dst != podA {
		t.Errorf("error %v -> %v proto %d, want %v -> %v ICMP", p.src, p.dst, p.proto, svcVIP, podA)
	}
	q := parseIP(t, p.payload[8:]) // checks the quoted header's checksum
	if sport, dport := ports(q); q.src != podA || sport != 40000 || q.dst != svcVIP || dport != 53 {
		t.Errorf("quote %v:%d -> %v:%d, want %v:40000 -> %v:53", q.src, sport, q.dst, dport, podA, svcVIP)
	}
}

func TestServiceICMPErrorReply(t *testing.T) {
	t.Run("remote backend, through VXLAN", func(t *testing.T) {
		pod := newCollection(t, loadPod)
		lbCluster(t, pod)
		putSvc(t, pod, svcVIP, 53, protoUDP, 1, 0, 0, backend{remotePod, 5353})
		run(t, pod.Programs["pod_egress"], podSend(protoUDP, podA, 40000, svcVIP, 53, 0), nil)
		node := newCollection(t, loadNode)
		lbCluster(t, node)
		copyCT(t, pod, node)

		inner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, portUnreach(remotePod, 5353, podA, 40000))
		got, out := run(t, node.Programs["node_ingress"], vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner), nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkPortUnreachReply(t, out[14:])

		// An error about another packet to that pod is left alone.
		other := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, portUnreach(remotePod, 5353, podA, 40001))
		_, out = run(t, node.Programs["node_ingress"], vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), other), nil)
		if !bytes.Equal(out[14:len(other)], other[14:]) {
			t.Errorf("unrelated ICMP error changed")
		}
	})
	t.Run("local backend", func(t *testing.T) {
		coll := newCollection(t, loadPod)
		lbCluster(t, coll)
		putSvc(t, coll, svcVIP, 53, protoUDP, 1, 0, 0, backend{podB, 5353})
		run(t, coll.Programs["pod_egress"], podSend(protoUDP, podA, 40000, svcVIP, 53, 0), nil)
		sendAs(t, coll, podB)
		in := ethFrame(podBHostMAC, podBMAC, ethPIPv4, portUnreach(podB, 5353, podA, 40000))
		got, out := run(t, coll.Programs["pod_egress"], in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
		}
		checkPortUnreachReply(t, out[14:])
	})
}

// A one-way UDP stream: only the client's packets, which also keep the backend's REV entry alive
// (refreshed at least about once a second), so a late answer is still translated and the agent's
// garbage collector, judging each entry on its own, keeps both.
func TestServiceOneWayKeepsBothEntries(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	putSvc(t, coll, svcVIP, 80, protoUDP, 1, 0, 0, backend{podB, 8080})
	run(t, prog, podSend(protoUDP, podA, 40000, svcVIP, 80, 0), nil)
	revKey := ctKey(podB, 8080, podA, 40000, protoUDP, ctRev)
	ageCT(t, coll, revKey, 50*time.Second)
	ageCT(t, coll, ctKey(podA, 40000, svcVIP, 80, protoUDP, ctFwd), 2*time.Second) // the previous packet
	run(t, prog, podSend(protoUDP, podA, 40000, svcVIP, 80, 0), nil)
	if rev, _ := ctGet(t, coll, revKey); bootNow(t)-rev.LastSeen > uint64(time.Second) {
		t.Errorf("REV entry last seen %v ago, want refreshed by the client's packet", time.Duration(bootNow(t)-rev.LastSeen))
	}
}
