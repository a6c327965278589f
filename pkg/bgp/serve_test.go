package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// fakeSpeaker records what Serve asks of it.
type fakeSpeaker struct {
	adv     map[netip.Prefix]netip.Addr
	peers   []PeerConfig
	stopped string
	failSet error
}

func (f *fakeSpeaker) SetAdvertisements(want map[netip.Prefix]netip.Addr) error {
	if f.failSet != nil {
		return f.failSet
	}
	f.adv = want
	return nil
}
func (f *fakeSpeaker) Advertisements() map[netip.Prefix]netip.Addr { return f.adv }
func (f *fakeSpeaker) SetPeers(_ context.Context, want []PeerConfig) error {
	f.peers = want
	return nil
}
func (f *fakeSpeaker) Peers() []PeerConfig { return f.peers }
func (f *fakeSpeaker) Snapshot(context.Context) ([]bgpstatus.PeerStatus, error) {
	return []bgpstatus.PeerStatus{{Address: netip.MustParseAddr("192.0.2.1"), State: bgpstatus.StateEstablished}}, nil
}
func (f *fakeSpeaker) Stop(context.Context) error           { f.stopped = "stop"; return nil }
func (f *fakeSpeaker) StopForRestart(context.Context) error { f.stopped = "restart"; return nil }
func (f *fakeSpeaker) Err() error                           { return nil }

// serve runs Serve on the request lines and returns its replies (session changes left out) and
// its error.
func serve(t *testing.T, f *fakeSpeaker, lines ...string) ([]reply, error) {
	t.Helper()
	var out strings.Builder
	err := Serve(t.Context(), strings.NewReader(strings.Join(lines, "\n")), &out, func(_ context.Context, cfg Config) (Speaker, error) {
		if cfg.ASN == 23456 {
			return nil, fmt.Errorf("%w: AS_TRANS", ErrInvalidConfig)
		}
		return f, nil
	})
	var replies []reply
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("Serve wrote %q: %v", sc.Text(), err)
		}
		if m.Reply != nil {
			replies = append(replies, *m.Reply)
		}
	}
	return replies, err
}

const startLine = `{"op":"start","start":{"routerID":"192.0.2.10","asn":65001,"listenPort":-1}}`

func TestServe(t *testing.T) {
	f := &fakeSpeaker{}
	replies, err := serve(t, f, startLine,
		`{"op":"setAdvertisements","advertisements":{"10.244.1.0/24":"192.0.2.10"}}`,
		`{"op":"setPeers","peers":[{"Address":"192.0.2.1","ASN":65000}]}`,
		`{"op":"snapshot"}`,
		`{"op":"stopForRestart"}`,
		`{"op":"snapshot"}`) // not read: the process ends at a stop
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 5 {
		t.Fatalf("%d replies, want 5: %+v", len(replies), replies)
	}
	for i, r := range replies {
		if r.Error != "" {
			t.Errorf("reply %d: %s", i, r.Error)
		}
	}
	if got := replies[2]; len(got.Peers) != 1 || got.Peers[0].ASN != 65000 || got.Advertised[netip.MustParsePrefix("10.244.1.0/24")] != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("reply to setPeers: %+v, want the speaker's peers and advertisements", got)
	}
	if got := replies[3].Status; len(got) != 1 || got[0].State != bgpstatus.StateEstablished {
		t.Errorf("snapshot: %+v", got)
	}
	if f.stopped != "restart" {
		t.Errorf("stopped by %q, want StopForRestart", f.stopped)
	}
}

// Bad requests get an error reply and the process goes on; errors keep their sentinel across
// the pipe; input that is not JSON ends Serve with an error; the end of input ends it quietly,
// the speaker left running (the agent is gone: sessions close as in a crash).
func TestServeBadInput(t *testing.T) {
	f := &fakeSpeaker{failSet: fmt.Errorf("%w: advertising", ErrStopped)}
	replies, err := serve(t, f,
		`{"op":"snapshot"}`,
		`{"op":"start"}`,
		`{"op":"start","start":{"routerID":"192.0.2.10","asn":23456}}`,
		startLine,
		startLine,
		`{"op":"bogus"}`,
		`{"op":"setAdvertisements"}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		contains string
		sentinel error
	}{
		{"snapshot before start", nil},
		{"start without a configuration", ErrInvalidConfig},
		{"AS_TRANS", ErrInvalidConfig},
		{"", nil},
		{"already started", nil},
		{`unknown request "bogus"`, nil},
		{"advertising", ErrStopped},
	}
	if len(replies) != len(want) {
		t.Fatalf("%d replies, want %d: %+v", len(replies), len(want), replies)
	}
	for i, w := range want {
		got := replies[i].err()
		switch {
		case w.contains == "" && got != nil:
			t.Errorf("reply %d: %v, want none", i, got)
		case w.contains != "" && (got == nil || !strings.Contains(got.Error(), w.contains)):
			t.Errorf("reply %d: %v, want an error saying %q", i, got, w.contains)
		case w.sentinel != nil && !errors.Is(got, w.sentinel):
			t.Errorf("reply %d: %v, want it to wrap %v", i, got, w.sentinel)
		}
	}
	if f.stopped != "" {
		t.Errorf("the end of input stopped the speaker (%s); it must leave it to the process's end", f.stopped)
	}

	if _, err := serve(t, &fakeSpeaker{}, startLine, "\x00 not json"); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Serve on garbage: %v, want an error", err)
	}
}
