package datapath

// Helpers of the Services tests (prog_lb*_test.go): the frontends and backends they program, the
// flags of lb.h, connection-tracking entries read and aged, packets sent as a pod or the node.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
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
