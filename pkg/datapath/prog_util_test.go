package datapath

// Shared fixtures for the datapath tests: they load the committed objects without pinning, fill
// the maps with a small two-node cluster and run hand-built packets through BPF_PROG_TEST_RUN.
// Under test_run the redirect helpers only record their target and return TC_ACT_REDIRECT, so the
// tests check verdicts, the packet the program leaves behind and the counters.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// TC verdicts (linux/pkt_cls.h).
const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

// Metric directions (enum metric_dir in bpf/lib/metrics.h).
const (
	dirPodEgress  = 0
	dirOverlayIn  = 1
	dirOverlayOut = 2
	dirNodeIn     = 3
	dirNodeOut    = 4
	dirNodeXDP    = 5

	metricsReasons = 64
)

const (
	ethPIPv4 = 0x0800
	ethPARP  = 0x0806
	ethPIPv6 = 0x86dd

	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17

	vxlanPort = 8472
	vni       = 1
	podMTU    = 1450
)

// The test cluster: this node 192.168.1.1 owns 10.244.1.0/24, node 192.168.1.2 owns
// 10.244.2.0/24, cluster CIDR 10.244.0.0/16. Pod A sends through the test_run skb's device
// (loopback, ifindex 1), so that is its veth for the anti-spoofing check.
var (
	nodeIP       = netip.MustParseAddr("192.168.1.1")
	remoteNodeIP = netip.MustParseAddr("192.168.1.2")
	strangerIP   = netip.MustParseAddr("192.168.1.66") // on the underlay, not a node
	podA         = netip.MustParseAddr("10.244.1.10")
	podB         = netip.MustParseAddr("10.244.1.11")
	remotePod    = netip.MustParseAddr("10.244.2.20")
	internetIP   = netip.MustParseAddr("1.1.1.1")

	podAIfindex uint32 = 1 // loopback: the device test_run gives the skb
	podBIfindex uint32 = 42

	podAMAC       = mac("02:00:00:00:0a:0a")
	podAHostMAC   = mac("02:00:00:00:0a:01")
	podBMAC       = mac("02:00:00:00:0b:0b")
	podBHostMAC   = mac("02:00:00:00:0b:01")
	vtepMAC       = mac("0e:00:00:00:01:01")
	underlayMAC   = mac("52:54:00:00:01:01")
	remoteVtepMAC = mac("0e:00:00:00:02:02")
	remoteNextHop = mac("52:54:00:00:02:02")
	underlayIfidx = uint32(2)
	vxlanIfindex  = uint32(3)
	anyMAC        = mac("02:aa:bb:cc:dd:ee")
)

func mac(s string) [6]byte {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return [6]byte(hw)
}

// be32 is an IPv4 address as the C code stores it (__be32), read as a native uint32.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// be16 is a port in network byte order as a native uint16.
func be16(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("BPF_PROG_TEST_RUN needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
}

// newCollection loads a generated spec with every pin stripped: each test gets private maps. The
// variants are the running kernel's, as Load chooses them (KernelFeatures).
func newCollection(t testing.TB, load func() (*ebpf.CollectionSpec, error)) *ebpf.Collection {
	t.Helper()
	requireRoot(t)
	f, err := KernelFeatures()
	if err != nil {
		t.Fatal(err)
	}
	return newCollectionFor(t, load, f)
}

// newCollectionFor is newCollection with the variants for features f.
func newCollectionFor(t testing.TB, load func() (*ebpf.CollectionSpec, error), f Features) *ebpf.Collection {
	t.Helper()
	requireRoot(t)
	spec, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if err := setKernelVariables(spec, f); err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			t.Fatalf("loading: %+v", verr)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Close() })
	return coll
}

type cfgOpt func(*podNodeCfg)

func withEncap(mode uint8) cfgOpt { return func(c *podNodeCfg) { c.EncapMode = mode } }
func withMasquerade() cfgOpt      { return func(c *podNodeCfg) { c.Flags |= 1 << 1 } }

// The node_cfg_map, endpoints_map, routes_map and nodes_map layouts are the same in all three
// objects (one set of headers), so the pod object's generated types serve for all of them.
func fillCluster(t testing.TB, coll *ebpf.Collection, opts ...cfgOpt) {
	t.Helper()
	put(t, coll, "node_cfg_map", uint32(0), testNodeCfg(opts...))
	put(t, coll, "endpoints_map", be32(podA), podEndpoint{Ifindex: podAIfindex, PodMac: podAMAC, HostMac: podAHostMAC})
	put(t, coll, "endpoints_map", be32(podB), podEndpoint{Ifindex: podBIfindex, PodMac: podBMAC, HostMac: podBHostMAC})
	putRoute(t, coll, "10.244.1.0/24", podRoute{NodeIp: be32(nodeIP), Flags: 1 /* ROUTE_LOCAL */})
	putRoute(t, coll, "10.244.2.0/24", podRoute{NodeIp: be32(remoteNodeIP)})
	put(t, coll, "nodes_map", be32(remoteNodeIP), podNode{VtepMac: remoteVtepMAC, NexthopMac: remoteNextHop, Flags: 1 /* NODE_NEXTHOP_VALID */})
}

// testNodeCfg is this node's node_cfg_map entry in the test cluster.
func testNodeCfg(opts ...cfgOpt) podNodeCfg {
	cfg := podNodeCfg{
		NodeIp:          be32(nodeIP),
		PodCidr:         be32(netip.MustParseAddr("10.244.1.0")),
		PodMask:         be32(netip.MustParseAddr("255.255.255.0")),
		ClusterCidr:     be32(netip.MustParseAddr("10.244.0.0")),
		ClusterMask:     be32(netip.MustParseAddr("255.255.0.0")),
		UnderlayIfindex: underlayIfidx,
		VxlanIfindex:    vxlanIfindex,
		Vni:             vni,
		Mtu:             podMTU,
		Flags:           1, // NODE_CFG_READY
		VtepMac:         vtepMAC,
		UnderlayMac:     underlayMAC,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

func put(t testing.TB, coll *ebpf.Collection, m string, k, v any) {
	t.Helper()
	if err := coll.Maps[m].Put(k, v); err != nil {
		t.Fatalf("%s: %v", m, err)
	}
}

func putRoute(t testing.TB, coll *ebpf.Collection, cidr string, r podRoute) {
	t.Helper()
	p := netip.MustParsePrefix(cidr)
	put(t, coll, "routes_map", podRouteKey{Prefixlen: uint32(p.Bits()), Addr: be32(p.Addr())}, r)
}

// metric sums a per-CPU counter of metrics_map.
func metric(t testing.TB, coll *ebpf.Collection, dir int, reason dropreason.Reason) uint64 {
	t.Helper()
	var per []podMetric
	if err := coll.Maps["metrics_map"].Lookup(uint32(dir*metricsReasons+int(reason)), &per); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, m := range per {
		n += m.Packets
	}
	return n
}

// metricBytes sums the bytes of a per-CPU counter of metrics_map.
func metricBytes(t testing.TB, coll *ebpf.Collection, dir int, reason dropreason.Reason) uint64 {
	t.Helper()
	var per []podMetric
	if err := coll.Maps["metrics_map"].Lookup(uint32(dir*metricsReasons+int(reason)), &per); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, m := range per {
		n += m.Bytes
	}
	return n
}

// skbCtx is struct __sk_buff (6.1 UAPI layout); test_run accepts only a few fields as input.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto uint32
	Priority, IngressIfindex, Ifindex, TCIndex                                  uint32
	CB                                                                          [5]uint32
	Hash, TCClassid, Data, DataEnd, NapiID, Family, RemoteIP4, LocalIP4         uint32
	RemoteIP6, LocalIP6                                                         [4]uint32
	RemotePort, LocalPort, DataMeta                                             uint32
	FlowKeys                                                                    uint64
	Tstamp                                                                      uint64
	WireLen, GSOSegs                                                            uint32
	SK                                                                          uint64
	GSOSize                                                                     uint32
	TstampType                                                                  uint32
	HWTstamp                                                                    uint64
}

// run feeds one packet to prog and returns the verdict and the packet as the program left it.
func run(t testing.TB, prog *ebpf.Program, pkt []byte, ctx *skbCtx) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256)}
	if ctx != nil {
		opts.Context = *ctx
	}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut
}

// ---- packet building ----

// routed returns a copy of pkt as one routing hop leaves it (lib/ttl.h): the IPv4 header at ipOff
// with its TTL one lower and its checksum recomputed.
func routed(pkt []byte, ipOff int) []byte {
	out := append([]byte(nil), pkt...)
	ip := out[ipOff:]
	ip[8]--
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], csum(ip[:int(ip[0]&0xf)*4], 0))
	return out
}

func csum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func pseudoSum(src, dst netip.Addr, proto uint8, l4len int) uint32 {
	s, d := src.As4(), dst.As4()
	var sum uint32
	sum += uint32(binary.BigEndian.Uint16(s[0:])) + uint32(binary.BigEndian.Uint16(s[2:]))
	sum += uint32(binary.BigEndian.Uint16(d[0:])) + uint32(binary.BigEndian.Uint16(d[2:]))
	sum += uint32(proto) + uint32(l4len)
	return sum
}

func ethFrame(dst, src [6]byte, proto uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:], dst[:])
	copy(b[6:], src[:])
	binary.BigEndian.PutUint16(b[12:], proto)
	return append(b, payload...)
}

type ipHdr struct {
	src, dst netip.Addr
	proto    uint8
	ttl      uint8
	tos      uint8
	id       uint16
	df, mf   bool
	fragOff  uint16
	options  []byte // multiple of 4
	totLen   int    // 0: computed
}

func (h ipHdr) build(payload []byte) []byte {
	hl := 20 + len(h.options)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	b[1] = h.tos
	tot := hl + len(payload)
	if h.totLen != 0 {
		tot = h.totLen
	}
	binary.BigEndian.PutUint16(b[2:], uint16(tot))
	binary.BigEndian.PutUint16(b[4:], h.id)
	frag := h.fragOff
	if h.df {
		frag |= 0x4000
	}
	if h.mf {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = h.ttl
	if b[8] == 0 {
		b[8] = 64
	}
	b[9] = h.proto
	s, d := h.src.As4(), h.dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], h.options)
	binary.BigEndian.PutUint16(b[10:], csum(b[:hl], 0))
	return append(b, payload...)
}

func udpSeg(src, dst netip.Addr, sport, dport uint16, payload []byte, withCsum bool) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	b = append(b, payload...)
	if withCsum {
		c := csum(b, pseudoSum(src, dst, protoUDP, len(b)))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(b[6:], c)
	}
	return b
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

func tcpSeg(src, dst netip.Addr, sport, dport uint16, flags uint8, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[16:], csum(b, pseudoSum(src, dst, protoTCP, len(b))))
	return b
}

func icmpMsg(typ, code uint8, rest [4]byte, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0], b[1] = typ, code
	copy(b[4:], rest[:])
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[2:], csum(b, 0))
	return b
}

func echoRest(id, seq uint16) [4]byte {
	var r [4]byte
	binary.BigEndian.PutUint16(r[0:], id)
	binary.BigEndian.PutUint16(r[2:], seq)
	return r
}

// podPacket is an Ethernet frame a pod sends to its gateway (the host-side veth).
func podPacket(src, dst netip.Addr, l4 []byte, proto uint8, df bool) []byte {
	return ethFrame(podAHostMAC, podAMAC, ethPIPv4, ipHdr{src: src, dst: dst, proto: proto, df: df, id: 7}.build(l4))
}

func podUDP(src, dst netip.Addr, payloadLen int) []byte {
	return podPacket(src, dst, udpSeg(src, dst, 40000, 53, bytes.Repeat([]byte{0xab}, payloadLen), true), protoUDP, true)
}

// podUDPNoDF is podUDP without the Don't Fragment bit: a packet routers may fragment.
func podUDPNoDF(src, dst netip.Addr, payloadLen int) []byte {
	return podPacket(src, dst, udpSeg(src, dst, 40000, 53, bytes.Repeat([]byte{0xab}, payloadLen), true), protoUDP, false)
}

func vxlanHdr(flags uint32, vniVal uint32) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b[0:], flags)
	binary.BigEndian.PutUint32(b[4:], vniVal<<8)
	return b
}

// vxlanFrame wraps an inner Ethernet frame the way a Flannel/edgeplane peer sends it.
func vxlanFrame(outerSrc netip.Addr, dport uint16, vx []byte, inner []byte) []byte {
	udp := udpSeg(outerSrc, nodeIP, 54321, dport, append(append([]byte{}, vx...), inner...), false)
	return ethFrame(underlayMAC, remoteNextHop, ethPIPv4, ipHdr{src: outerSrc, dst: nodeIP, proto: protoUDP}.build(udp))
}

// ---- packet checking ----

type parsedIP struct {
	hdr     []byte
	src     netip.Addr
	dst     netip.Addr
	proto   uint8
	payload []byte
}

func parseIP(t testing.TB, b []byte) parsedIP {
	t.Helper()
	if len(b) < 20 || b[0]>>4 != 4 {
		t.Fatalf("not an IPv4 header: % x", b[:min(len(b), 20)])
	}
	hl := int(b[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(b[2:]))
	if tot > len(b) {
		t.Fatalf("IPv4 total length %d > %d bytes", tot, len(b))
	}
	if c := csum(b[:hl], 0); c != 0 {
		t.Errorf("IPv4 header checksum invalid (residue %#x)", c)
	}
	return parsedIP{
		hdr:     b[:hl],
		src:     netip.AddrFrom4([4]byte(b[12:16])),
		dst:     netip.AddrFrom4([4]byte(b[16:20])),
		proto:   b[9],
		payload: b[hl:tot],
	}
}

// checkL4Csum verifies the TCP/UDP/ICMP checksum of p (a zero UDP checksum means none).
func checkL4Csum(t testing.TB, p parsedIP) {
	t.Helper()
	switch p.proto {
	case protoTCP:
		if c := csum(p.payload, pseudoSum(p.src, p.dst, protoTCP, len(p.payload))); c != 0 {
			t.Errorf("TCP checksum invalid (residue %#x)", c)
		}
	case protoUDP:
		if binary.BigEndian.Uint16(p.payload[6:]) == 0 {
			return
		}
		if c := csum(p.payload, pseudoSum(p.src, p.dst, protoUDP, len(p.payload))); c != 0 {
			t.Errorf("UDP checksum invalid (residue %#x)", c)
		}
	case protoICMP:
		if c := csum(p.payload, 0); c != 0 {
			t.Errorf("ICMP checksum invalid (residue %#x)", c)
		}
	}
}

func ports(p parsedIP) (uint16, uint16) {
	return binary.BigEndian.Uint16(p.payload[0:]), binary.BigEndian.Uint16(p.payload[2:])
}

func macs(frame []byte) (dst, src [6]byte) {
	return [6]byte(frame[0:6]), [6]byte(frame[6:12])
}
