package datapath

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// enum monitor_flags, enum event_type and enum event_flags (bpf/lib/events.h).
const (
	monitorDrops = 1
	monitorTrace = 2

	eventDrop  = 1
	eventTrace = 2

	eventFIPv4  = 1
	eventFInner = 2
)

func setMonitor(t testing.TB, coll *ebpf.Collection, flags uint32) {
	t.Helper()
	put(t, coll, "monitor_cfg_map", uint32(0), flags)
}

func eventReader(t testing.TB, coll *ebpf.Collection) *ringbuf.Reader {
	t.Helper()
	rd, err := ringbuf.NewReader(coll.Maps["events_map"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return rd
}

// nextEvent returns the next event in the ring buffer, or false when there is none (test_run
// submits synchronously, so whatever the program wrote is already there).
func nextEvent(t testing.TB, rd *ringbuf.Reader) (podMonitorEvent, bool) {
	t.Helper()
	rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
	rec, err := rd.Read()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return podMonitorEvent{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var ev podMonitorEvent
	if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
		t.Fatalf("decoding %d-byte event: %v", len(rec.RawSample), err)
	}
	return ev, true
}

func lostEvents(t testing.TB, coll *ebpf.Collection) uint64 {
	t.Helper()
	var per []uint64
	if err := coll.Maps["events_lost_map"].Lookup(uint32(0), &per); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

func TestMonitorDropEvent(t *testing.T) {
	coll := newCollection(t, loadPod)
	fillCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	rd := eventReader(t, coll)
	noRoute := netip.MustParseAddr("10.244.9.9")
	pkt := podUDP(podA, noRoute, 10)

	// Nobody listening: the drop is counted, no event is written.
	if got, _ := run(t, prog, pkt, nil); got != tcActShot {
		t.Fatalf("verdict %d", got)
	}
	if ev, ok := nextEvent(t, rd); ok {
		t.Fatalf("event with monitoring off: %+v", ev)
	}

	setMonitor(t, coll, monitorDrops)
	if got, _ := run(t, prog, pkt, nil); got != tcActShot {
		t.Fatalf("verdict %d", got)
	}
	ev, ok := nextEvent(t, rd)
	if !ok {
		t.Fatal("no event for a drop with MONITOR_DROPS set")
	}
	tu := ev.Tuple
	switch {
	case ev.Type != eventDrop || dropreason.Reason(ev.Reason) != dropreason.NoRoute || ev.Dir != dirPodEgress:
		t.Errorf("type %d reason %v dir %d, want drop NO_ROUTE pod-egress", ev.Type, dropreason.Reason(ev.Reason), ev.Dir)
	case ev.Ifindex != podAIfindex || ev.Len != uint32(len(pkt)) || ev.Verdict != tcActShot:
		t.Errorf("ifindex %d len %d verdict %d, want %d %d %d", ev.Ifindex, ev.Len, ev.Verdict, podAIfindex, len(pkt), tcActShot)
	case ev.Flags != eventFIPv4:
		t.Errorf("flags %#x, want IPV4 only", ev.Flags)
	case tu.Saddr != be32(podA) || tu.Daddr != be32(noRoute) || tu.Proto != protoUDP ||
		tu.Sport != be16(40000) || tu.Dport != be16(53):
		t.Errorf("tuple %+v", tu)
	case ev.TsNs == 0:
		t.Errorf("no timestamp")
	}

	// A forwarded packet is no drop: nothing with only MONITOR_DROPS.
	if got, _ := run(t, prog, podUDP(podA, podB, 10), nil); got != tcActRedirect {
		t.Fatalf("verdict %d", got)
	}
	if ev, ok := nextEvent(t, rd); ok {
		t.Fatalf("trace event without MONITOR_TRACE: %+v", ev)
	}

	// Cleared again: nothing.
	setMonitor(t, coll, 0)
	run(t, prog, pkt, nil)
	if ev, ok := nextEvent(t, rd); ok {
		t.Fatalf("event after monitoring was turned off: %+v", ev)
	}
}

func TestMonitorTraceEvent(t *testing.T) {
	coll := newCollection(t, loadPod)
	fillCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	rd := eventReader(t, coll)
	setMonitor(t, coll, monitorTrace)

	// Encapsulated to the remote node: the tuple is the outer one, inner the pod's.
	pkt := podUDP(podA, remotePod, 100)
	if got, _ := run(t, prog, pkt, nil); got != tcActRedirect {
		t.Fatalf("verdict %d", got)
	}
	ev, ok := nextEvent(t, rd)
	if !ok {
		t.Fatal("no trace event with MONITOR_TRACE set")
	}
	if ev.Type != eventTrace || dropreason.Reason(ev.Reason) != dropreason.Forwarded || ev.Verdict != tcActRedirect {
		t.Errorf("type %d reason %v verdict %d", ev.Type, dropreason.Reason(ev.Reason), ev.Verdict)
	}
	if ev.Flags != eventFIPv4|eventFInner {
		t.Fatalf("flags %#x, want IPV4|INNER", ev.Flags)
	}
	if ev.Tuple.Saddr != be32(nodeIP) || ev.Tuple.Daddr != be32(remoteNodeIP) || ev.Tuple.Dport != be16(vxlanPort) {
		t.Errorf("outer tuple %+v", ev.Tuple)
	}
	if in := ev.Inner; in.Saddr != be32(podA) || in.Daddr != be32(remotePod) || in.Dport != be16(53) || in.Proto != protoUDP {
		t.Errorf("inner tuple %+v", in)
	}

	// Drops are not traced.
	run(t, prog, podUDP(podA, netip.MustParseAddr("10.244.9.9"), 10), nil)
	if ev, ok := nextEvent(t, rd); ok {
		t.Fatalf("drop event with only MONITOR_TRACE: %+v", ev)
	}
}

// A VXLAN packet dropped on the underlay NIC carries the tuple of what it encapsulates.
func TestMonitorVXLANDropInnerTuple(t *testing.T) {
	coll := newCollection(t, loadNode)
	fillCluster(t, coll)
	rd := eventReader(t, coll)
	setMonitor(t, coll, monitorDrops|monitorTrace)
	in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni+1), innerFrame(remotePod, podA))
	if got, _ := run(t, coll.Programs["node_ingress"], in, nil); got != tcActShot {
		t.Fatalf("verdict %d", got)
	}
	ev, ok := nextEvent(t, rd)
	if !ok {
		t.Fatal("no event")
	}
	if dropreason.Reason(ev.Reason) != dropreason.VNIMismatch || ev.Dir != dirOverlayIn || ev.Flags != eventFIPv4|eventFInner {
		t.Errorf("reason %v dir %d flags %#x", dropreason.Reason(ev.Reason), ev.Dir, ev.Flags)
	}
	if ev.Inner.Saddr != be32(remotePod) || ev.Inner.Daddr != be32(podA) || ev.Inner.Sport != be16(1234) || ev.Inner.Dport != be16(5678) {
		t.Errorf("inner tuple %+v", ev.Inner)
	}
}

// Not IPv4: an event without a tuple. A full ring buffer: the packet is unaffected, the event counted.
func TestMonitorNonIPv4AndLost(t *testing.T) {
	coll := newCollection(t, loadPod)
	fillCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	rd := eventReader(t, coll)
	setMonitor(t, coll, monitorDrops)

	ipv6 := ethFrame(podAHostMAC, podAMAC, ethPIPv6, make([]byte, 60))
	run(t, prog, ipv6, nil)
	ev, ok := nextEvent(t, rd)
	if !ok || dropreason.Reason(ev.Reason) != dropreason.UnsupportedL3 || ev.Flags != 0 || ev.Tuple != (podMonitorEvent{}).Tuple {
		t.Fatalf("IPv6 drop event %+v (ok %v)", ev, ok)
	}

	// Fill the 1 MiB buffer without reading (each record: 8-byte header + 56 bytes). One run
	// a call: a repeated run (prog.Benchmark) that a signal interrupts (the Go runtime's
	// preemption) is started over by cilium/ebpf, having already run some iterations, so the
	// counter could not be compared exactly.
	pkt := podUDP(podA, netip.MustParseAddr("10.244.9.9"), 10)
	n := rd.BufferSize()/64 + 10
	for range n {
		if _, err := prog.Run(&ebpf.RunOptions{Data: pkt}); err != nil {
			t.Fatal(err)
		}
	}
	if lost := lostEvents(t, coll); lost == 0 || lost > 20 {
		t.Errorf("%d events lost after %d drops into a %d-byte buffer, want a few", lost, n, rd.BufferSize())
	}
	if got := metric(t, coll, dirPodEgress, dropreason.NoRoute); got != uint64(n) {
		t.Errorf("NO_ROUTE counter %d, want %d: a full buffer must not affect counting", got, n)
	}
	// The oldest events are still intact.
	if ev, ok := nextEvent(t, rd); !ok || dropreason.Reason(ev.Reason) != dropreason.NoRoute {
		t.Fatalf("first buffered event %+v", ev)
	}
}
