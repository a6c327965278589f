package interop

// The Raven test's sequenced UDP echo streams, run over steady traffic and an agent restart: every
// datagram lost fails the test.

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// stream is a sequenced UDP echo stream from one namespace to a server in another.
type stream struct {
	what     string
	from, to lab.Netns
	dst      netip.AddrPort
}

// runStreams runs every stream (one datagram every 2 ms) while disrupt runs, fails the test for
// any datagram lost or a stream that got nothing back, and returns each stream's figures.
func runStreams(t *testing.T, streams []stream, what string, disrupt func()) map[string]lab.StreamStats {
	t.Helper()
	type result struct {
		s   stream
		st  lab.StreamStats
		err error
	}
	results := make(chan result, len(streams))
	sctx, stop := context.WithCancel(t.Context())
	defer stop()
	for _, s := range streams {
		srv, err := lab.ServeUDPEcho(s.to, s.dst)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		go func() {
			st, err := lab.UDPStream(sctx, s.from, srv.Addr, 2*time.Millisecond, 500*time.Millisecond)
			results <- result{s, st, err}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	disrupt()
	stop()
	out := map[string]lab.StreamStats{}
	for range streams {
		r := <-results
		if r.err != nil {
			t.Errorf("stream %s: %v", r.s.what, r.err)
			continue
		}
		out[r.s.what] = r.st
		t.Logf("stream %s across %s: %v", r.s.what, what, r.st)
		if len(r.st.Lost) > 0 || r.st.Received == 0 {
			t.Errorf("stream %s lost %d of %d datagrams across %s: %v", r.s.what, len(r.st.Lost), r.st.Sent, what, r.st)
		}
	}
	return out
}
