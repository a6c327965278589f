package main

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// freePort returns a port free for both UDP and TCP on 127.0.0.1 at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return 0
}

// The sender sends exactly rate x duration datagrams, spread over the duration (not in one
// burst), sleeping between ticks (its thread's CPU time far below the time it ran: a busy poll
// would use all of it), and the receiver's count comes back over the control connection; a
// second sender against the same receiver counts only its own datagrams.
func TestSenderPacesAndReceiverCounts(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	rc, err := listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	served := make(chan error, 1)
	go func() { served <- rc.serve() }()

	for run := range 2 {
		r, err := send(addr, 10000, 300*time.Millisecond, 64, 0)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		t.Logf("run %d: %v", run, r)
		if r.sent != 3000 || r.ticks < 300 {
			t.Errorf("run %d: sent %d datagrams in %d ticks, want 3000 in 300 or a few more", run, r.sent, r.ticks)
		}
		// Loopback with a 4 MiB buffer: nothing is lost unless the machine starves the receiver.
		if r.received != r.sent {
			t.Errorf("run %d: received %d of %d", run, r.received, r.sent)
		}
		if r.elapsed < 299*time.Millisecond || r.elapsed > 3*time.Second {
			t.Errorf("run %d: sent over %v, want about 300 ms", run, r.elapsed)
		}
		if r.senderCPU <= 0 || r.senderCPU > r.elapsed/2 {
			t.Errorf("run %d: the sending thread used %v of CPU over %v: it does not sleep between ticks", run, r.senderCPU, r.elapsed)
		}
	}
	rc.Close()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Error("receiver did not stop after Close")
	}
}

// Nonsense arguments are refused before anything is sent.
func TestSendRefusesBadArguments(t *testing.T) {
	for _, c := range []struct {
		addr     string
		rate     int
		d        time.Duration
		size     int
		describe string
	}{
		{"127.0.0.1:1", 0, time.Second, 64, "rate 0"},
		{"127.0.0.1:1", 1000, time.Microsecond, 64, "shorter than a tick"},
		{"127.0.0.1:1", 1000, time.Second, 4, "payload too small for the sequence number"},
		{"[::1]:1", 1000, time.Second, 64, "IPv6"},
	} {
		if _, err := send(c.addr, c.rate, c.d, c.size, 0); err == nil {
			t.Errorf("%s: no error", c.describe)
		}
	}
}
