package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/events"
)

func tuple(src, dst string, sport, dport uint16, proto uint8) events.Tuple {
	var t events.Tuple
	t.Saddr = maps.IPv4(netip.MustParseAddr(src).As4())
	t.Daddr = maps.IPv4(netip.MustParseAddr(dst).As4())
	binary.BigEndian.PutUint16(t.Sport[:], sport)
	binary.BigEndian.PutUint16(t.Dport[:], dport)
	t.Proto = proto
	return t
}

// monitorSamples covers each shape of line: ports, ICMP, VXLAN with its inner packet, a fragment,
// not IPv4, an interface that is gone, a trace.
var monitorSamples = []events.Event{
	{Type: events.TypeDrop, Reason: uint8(dropreason.DomainUnreachable), Dir: 0, Ifindex: 7, Len: 74, Verdict: 2,
		Flags: events.EventIPv4, Tuple: tuple("10.244.1.2", "10.244.9.9", 5353, 53, 17)},
	{Type: events.TypeDrop, Reason: uint8(dropreason.NoRoute), Dir: 0, Ifindex: 7, Len: 98, Verdict: 2,
		Flags: events.EventIPv4, Tuple: tuple("10.244.1.2", "10.244.200.1", 0, 0, 1)},
	{Type: events.TypeDrop, Reason: uint8(dropreason.VNIMismatch), Dir: 1, Ifindex: 2, Len: 124, Verdict: 2,
		Flags: events.EventIPv4 | events.EventInner, Tuple: tuple("192.168.1.12", "192.168.1.11", 54321, 8472, 17),
		Inner: tuple("10.244.2.20", "10.244.1.5", 40000, 80, 6)},
	{Type: events.TypeDrop, Reason: uint8(dropreason.UnknownEndpoint), Dir: 0, Ifindex: 7, Len: 600, Verdict: 2,
		Flags: events.EventIPv4 | events.EventFragment, Tuple: tuple("10.244.1.2", "10.244.1.77", 0, 0, 17)},
	{Type: events.TypeDrop, Reason: uint8(dropreason.UnsupportedL3), Dir: 0, Ifindex: 4242, Len: 86, Verdict: 2},
	{Type: events.TypeTrace, Reason: 0, Dir: 0, Ifindex: 7, Len: 174, Verdict: 7,
		Flags: events.EventIPv4 | events.EventInner, Tuple: tuple("192.168.1.11", "192.168.1.12", 40123, 8472, 17),
		Inner: tuple("10.244.1.2", "10.244.2.20", 33000, 443, 6)},
}

func sampleEnv(output string, out *bytes.Buffer) *env {
	return &env{output: output, out: out, ifNames: &ifNames{cache: map[uint32]string{7: "veth-a", 2: "eth0", 4242: ""}}}
}

func TestMonitorFormat(t *testing.T) {
	at := time.Date(2025, 1, 2, 12, 0, 1, 123456789, time.UTC)
	for _, o := range []string{outputTable, outputJSON} {
		var out bytes.Buffer
		e := sampleEnv(o, &out)
		for i, ev := range monitorSamples {
			if err := e.printEvent(e.eventInfo(ev, at.Add(time.Duration(i)*time.Millisecond))); err != nil {
				t.Fatal(err)
			}
		}
		checkGolden(t, "monitor."+o, out.String())
		if o == outputJSON { // one object per line
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var v map[string]any
				if err := json.Unmarshal([]byte(line), &v); err != nil {
					t.Errorf("not a JSON line: %q: %v", line, err)
				}
			}
		}
	}
}

func TestMonitorFilter(t *testing.T) {
	reason := func(s string) dropreason.Reason {
		r, err := parseReason(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ip := func(s string) ipFilter {
		var f ipFilter
		if err := f.Set(s); err != nil {
			t.Fatal(err)
		}
		return f
	}
	all := events.FlagDrops | events.FlagTrace
	tests := []struct {
		name   string
		filter monitorFilter
		want   []int // indexes into monitorSamples
	}{
		{"drops", monitorFilter{types: events.FlagDrops}, []int{0, 1, 2, 3, 4}},
		{"trace", monitorFilter{types: events.FlagTrace}, []int{5}},
		{"all", monitorFilter{types: all}, []int{0, 1, 2, 3, 4, 5}},
		{"reason", monitorFilter{types: all, reasons: []dropreason.Reason{reason("no_route"), reason("DROP_VNI_MISMATCH")}}, []int{1, 2}},
		{"ip matches source or destination", monitorFilter{types: all, ip: ip("10.244.1.2")}, []int{0, 1, 3, 5}},
		{"ip matches the inner packet", monitorFilter{types: all, ip: ip("10.244.2.0/24")}, []int{2, 5}},
		{"ip matches the outer packet", monitorFilter{types: all, ip: ip("192.168.1.12")}, []int{2, 5}},
		{"port", monitorFilter{types: all, port: 53}, []int{0}},
		{"port of the inner packet", monitorFilter{types: all, port: 443}, []int{5}},
		{"port of the outer packet", monitorFilter{types: all, port: 8472}, []int{2, 5}},
		{"port never matches ICMP or a fragment", monitorFilter{types: all, ip: ip("10.244.1.77/32"), port: 53}, nil},
		{"ip and port", monitorFilter{types: all, ip: ip("10.244.1.5"), port: 80}, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			for i, ev := range monitorSamples {
				if tt.filter.match(ev) {
					got = append(got, i)
				}
			}
			if !equalInts(got, tt.want) {
				t.Errorf("matched %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := parseReason("FORWARDED"); err != nil {
		t.Errorf("FORWARDED: %v", err)
	}
	if _, err := parseReason("NOPE"); err == nil {
		t.Error("unknown reason accepted")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMonitorStream runs the verb against the fixture's pins: events from the pinned pod program
// reach stdout, filters apply, and leaving turns emission off again.
func TestMonitorStream(t *testing.T) {
	f := newFixture(t)
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(f.root, datapath.PodProgram), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()

	var out, status bytes.Buffer
	e := &env{root: f.root, output: outputJSON, out: &out, ifNames: newIfNames()}
	filter := &monitorFilter{types: events.FlagDrops, ip: ipFilter{netip.MustParsePrefix("10.244.9.9/32")}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- f.netns.Do(func(ns.NetNS) error { return e.monitor(ctx, filter, &status) })
	}()
	waitFor(t, func() bool { c, _ := events.ReadConfig(f.root); return c.Flags == events.FlagDrops })

	// pod A (10.244.1.5 on veth-a) to an address no node owns, then one the filter leaves out.
	// test_run resolves the context's ifindex in the caller's netns.
	veth := f.ifindex(t, "veth-a")
	for _, dst := range []string{"10.244.9.9", "10.244.9.8"} {
		pkt := udpFromPod(netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr(dst))
		if err := f.netns.Do(func(ns.NetNS) error {
			_, err := prog.Run(&ebpf.RunOptions{Data: pkt, Context: skbOn(veth)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "\n") })
	time.Sleep(2 * monitorPoll)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one event, got:\n%s", out.String())
	}
	var ev monitorEvent
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Reason != "NO_ROUTE" || ev.Interface != "veth-a" || ev.Tuple == nil || ev.Tuple.Dst != "10.244.9.9" || ev.Tuple.DstPort != 53 {
		t.Errorf("event %s", lines[0])
	}
	if d := time.Since(ev.Time); d < 0 || d > 10*time.Second {
		t.Errorf("event time %v is %v from now", ev.Time, d)
	}
	if c, err := events.ReadConfig(f.root); err != nil || c.Flags != 0 {
		t.Errorf("flags after monitor exit: %v %v", c, err)
	}
	if !strings.HasPrefix(status.String(), "monitoring drop events under ") || !strings.Contains(status.String(), "1 events shown, 0 lost") {
		t.Errorf("status:\n%s", status.String())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

func (f *fixture) ifindex(t *testing.T, name string) uint32 {
	t.Helper()
	var idx uint32
	if err := f.netns.Do(func(ns.NetNS) error {
		var err error
		idx, err = ifindexByName(name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return idx
}

// skbOn is a test_run context (struct __sk_buff up to ifindex) for a packet arriving on ifindex.
func skbOn(ifindex uint32) []byte {
	ctx := make([]byte, 4*11+4*25)
	binary.NativeEndian.PutUint32(ctx[4*10:], ifindex) // ifindex is the 11th field
	return ctx
}

// udpFromPod is an Ethernet + IPv4 + UDP frame to port 53.
func udpFromPod(src, dst netip.Addr) []byte {
	b := make([]byte, 14+20+8+4)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], 53)
	binary.BigEndian.PutUint16(ip[24:], 12)
	return b
}
