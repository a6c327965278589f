package events

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/layout"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/maptest"
)

func TestLayout(t *testing.T) {
	layout.Check(t, datapath.MapSpecs, ConfigMapName, uint32(0), Config{})
	layout.CheckType(t, datapath.TypeByName, "monitor_event", Event{})
	layout.CheckType(t, datapath.TypeByName, "event_tuple", Tuple{})
	specs, err := datapath.MapSpecs()
	if err != nil {
		t.Fatal(err)
	}
	if ms := specs[MapName]; ms == nil || ms.Type != ebpf.RingBuf {
		t.Fatalf("%s: %v, want a ring buffer", MapName, ms)
	}
	if ms := specs[ConfigMapName]; ms.Flags&0x400 == 0 { // BPF_F_MMAPABLE
		t.Fatalf("%s is not mmapable: Subscribe needs that", ConfigMapName)
	}
}

func flagsNow(t *testing.T, root string) Flags {
	t.Helper()
	c, err := ReadConfig(root)
	if err != nil {
		t.Fatal(err)
	}
	return c.Flags
}

func TestSubscribe(t *testing.T) {
	root, d := maptest.Load(t, datapath.Load)
	subscribe := func(f Flags) *Subscription {
		t.Helper()
		s, err := Subscribe(root, f)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if f := flagsNow(t, root); f != 0 {
		t.Fatalf("fresh flags %#x", f)
	}

	a := subscribe(FlagDrops)
	if f := flagsNow(t, root); f != FlagDrops {
		t.Fatalf("one listener: %#x", f)
	}
	b := subscribe(FlagTrace)
	if f := flagsNow(t, root); f != FlagDrops|FlagTrace {
		t.Fatalf("two listeners: %#x, want the union", f)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if f := flagsNow(t, root); f == 0 {
		t.Fatal("the first listener to leave turned events off for the second")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if f := flagsNow(t, root); f != 0 {
		t.Fatalf("last listener left, flags %#x", f)
	}

	// A listener that died (SIGKILL) left its bits; the next one alone starts from its own.
	if err := d.Map(ConfigMapName).Put(uint32(0), Config{Flags: FlagDrops | FlagTrace}); err != nil {
		t.Fatal(err)
	}
	c := subscribe(FlagDrops)
	if f := flagsNow(t, root); f != FlagDrops {
		t.Fatalf("stale bits not reset: %#x", f)
	}
	c.Close()
	if f := flagsNow(t, root); f != 0 {
		t.Fatalf("flags %#x after the last listener", f)
	}
}

// The pinned programs write what Reader decodes: before the agent's configuration every pod
// packet is a NOT_READY drop.
func TestReader(t *testing.T) {
	root, d := maptest.Load(t, datapath.Load)
	r, err := OpenReader(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sub, err := Subscribe(root, FlagDrops)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	src, dst := netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.2.7")
	pkt := udpFrame(src, dst, 5353, 53)
	if _, err := d.Program("pod_egress").Run(&ebpf.RunOptions{Data: pkt}); err != nil {
		t.Fatal(err)
	}
	r.SetDeadline(time.Now().Add(time.Second))
	ev, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != TypeDrop || dropreason.Reason(ev.Reason) != dropreason.NotReady || ev.Flags != EventIPv4 ||
		ev.Tuple.Src() != netip.AddrPortFrom(src, 5353) || ev.Tuple.Dst() != netip.AddrPortFrom(dst, 53) ||
		ev.Tuple.Proto != 17 || ev.Len != uint32(len(pkt)) {
		t.Fatalf("event %v", ev)
	}
	if lost, err := r.Lost(); err != nil || lost != 0 {
		t.Fatalf("Lost = %d, %v", lost, err)
	}

	r.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read on an empty buffer: %v", err)
	}
	go func() { time.Sleep(20 * time.Millisecond); r.Close() }()
	r.SetDeadline(time.Time{})
	if _, err := r.Read(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
}

// udpFrame is a minimal Ethernet + IPv4 + UDP frame (checksums do not matter to the programs here).
func udpFrame(src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, 14+20+8+4)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	binary.BigEndian.PutUint16(ip[24:], 12)
	return b
}
