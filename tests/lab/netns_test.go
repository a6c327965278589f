package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// TestCounter: a SYN to an address nothing answers, dialled for longer than the kernel's
// first retransmission (1 s), shows as TcpExt TCPSynRetrans and Tcp RetransSegs read in that
// namespace; a counter the kernel lacks is an error.
func TestCounter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds a network namespace (make test runs as root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := addNetns(ctx, fmt.Sprintf("ep-netstat-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNetns(ns) })
	// A veth pair, both ends here, and a neighbour entry for 192.0.2.2 that no link has: the
	// SYN leaves sink0 (a SYN still queued for ARP would not be sent again) and sink1 drops it
	// as another host's. Only this namespace has the link.
	for _, args := range [][]string{
		{"link", "add", "sink0", "type", "veth", "peer", "name", "sink1"},
		{"addr", "add", "192.0.2.1/24", "dev", "sink0"},
		{"link", "set", "sink0", "up"},
		{"link", "set", "sink1", "up"},
		{"neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", "sink0", "nud", "permanent"},
	} {
		if _, err := ns.IP(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	// Both tables: a SYN sent again counts in TcpExt (netstat) and in Tcp (snmp).
	counters := func() (syn, segs uint64) {
		t.Helper()
		syn, err := ns.Counter("TcpExt", "TCPSynRetrans")
		if err != nil {
			t.Fatal(err)
		}
		segs, err = ns.Counter("Tcp", "RetransSegs")
		if err != nil {
			t.Fatal(err)
		}
		return syn, segs
	}
	synBefore, segsBefore := counters()
	c, err := openIn(ns, func() (net.Conn, error) {
		return (&net.Dialer{Timeout: 1500 * time.Millisecond}).Dial("tcp4", "192.0.2.2:80")
	})
	if err == nil {
		c.Close()
		t.Fatal("a dial to an address nothing answers connected")
	}
	syn, segs := counters()
	// One retransmission at 1 s; a second comes at 3 s, should the machine stall the dial that long.
	if syn-synBefore < 1 || segs-segsBefore != syn-synBefore {
		t.Errorf("over a 1.5 s dial: TCPSynRetrans %d -> %d, RetransSegs %d -> %d; want the same rise of at least one", synBefore, syn, segsBefore, segs)
	}
	for _, bad := range [][2]string{{"TcpExt", "NoSuchCounter"}, {"NoSuchGroup", "RetransSegs"}} {
		if v, err := ns.Counter(bad[0], bad[1]); err == nil {
			t.Errorf("counter %s %s read as %d without an error", bad[0], bad[1], v)
		}
	}
	t.Logf("TCPSynRetrans %d -> %d, RetransSegs %d -> %d", synBefore, syn, segsBefore, segs)
}
