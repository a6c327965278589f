package bgp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// The requests of the speaker process's protocol (Process, Serve).
const (
	opStart             = "start"
	opSetAdvertisements = "setAdvertisements"
	opSetPeers          = "setPeers"
	opSnapshot          = "snapshot"
	opStop              = "stop"
	opStopForRestart    = "stopForRestart"
)

// request is one line on the speaker process's stdin.
type request struct {
	Op             string                      `json:"op"`
	Start          *startConfig                `json:"start,omitempty"`
	Advertisements map[netip.Prefix]netip.Addr `json:"advertisements,omitempty"`
	Peers          []PeerConfig                `json:"peers,omitempty"`
}

// startConfig is Config without what does not cross a process boundary (its logger and
// listener).
type startConfig struct {
	RouterID        netip.Addr   `json:"routerID"`
	ASN             uint32       `json:"asn"`
	ListenPort      int32        `json:"listenPort"`
	ListenAddresses []netip.Addr `json:"listenAddresses,omitempty"`
}

// message is one line on the speaker process's stdout: a reply or a session change.
type message struct {
	Reply   *reply         `json:"reply,omitempty"`
	Session *SessionChange `json:"session,omitempty"`
}

// reply answers a request, with the speaker's peers and advertisements after it.
type reply struct {
	Error string `json:"error,omitempty"`
	// Invalid and Stopped say the error wraps ErrInvalidConfig or ErrStopped.
	Invalid    bool                        `json:"invalid,omitempty"`
	Stopped    bool                        `json:"stopped,omitempty"`
	Peers      []PeerConfig                `json:"peers,omitempty"`
	Advertised map[netip.Prefix]netip.Addr `json:"advertised,omitempty"`
	Status     []bgpstatus.PeerStatus      `json:"status,omitempty"`
}

// remoteError is an error the speaker process replied, with the sentinel it wrapped.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func (r *reply) err() error {
	switch {
	case r.Error == "":
		return nil
	case r.Invalid:
		return &remoteError{r.Error, ErrInvalidConfig}
	case r.Stopped:
		return &remoteError{r.Error, ErrStopped}
	}
	return &remoteError{r.Error, nil}
}

// Serve is the speaker process's side of Process: it reads requests from in, runs them on the
// speaker start starts (the first request starts it), and writes the replies and the speaker's
// session changes to out. It returns after a stop request, and when in ends (the agent is gone):
// then without stopping the speaker, so that the sessions close as in a crash and
// graceful-restart peers keep the routes.
func Serve(ctx context.Context, in io.Reader, out io.Writer, start func(context.Context, Config) (Speaker, error)) error {
	var mu sync.Mutex // the session listener writes too
	enc := json.NewEncoder(out)
	send := func(m message) error {
		mu.Lock()
		defer mu.Unlock()
		return enc.Encode(m)
	}
	dec := json.NewDecoder(in)
	var sp Speaker
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading a request: %w", err)
		}
		var r reply
		var err error
		switch {
		case req.Op == opStart && sp != nil:
			err = errors.New("the speaker is already started")
		case req.Op == opStart && req.Start == nil:
			err = fmt.Errorf("%w: start without a configuration", ErrInvalidConfig)
		case req.Op == opStart:
			cfg := Config{RouterID: req.Start.RouterID, ASN: req.Start.ASN, ListenPort: req.Start.ListenPort,
				ListenAddresses: req.Start.ListenAddresses,
				OnSessionChange: func(c SessionChange) { send(message{Session: &c}) }}
			sp, err = start(ctx, cfg)
		case sp == nil:
			err = fmt.Errorf("%s before start", req.Op)
		case req.Op == opSetAdvertisements:
			err = sp.SetAdvertisements(req.Advertisements)
		case req.Op == opSetPeers:
			err = sp.SetPeers(ctx, req.Peers)
		case req.Op == opSnapshot:
			r.Status, err = sp.Snapshot(ctx)
		case req.Op == opStop:
			err = sp.Stop(ctx)
		case req.Op == opStopForRestart:
			err = sp.StopForRestart(ctx)
		default:
			err = fmt.Errorf("unknown request %q", req.Op)
		}
		if err != nil {
			r.Error, r.Invalid, r.Stopped = err.Error(), errors.Is(err, ErrInvalidConfig), errors.Is(err, ErrStopped)
		}
		if sp != nil {
			r.Peers, r.Advertised = sp.Peers(), sp.Advertisements()
		}
		if err := send(message{Reply: &r}); err != nil {
			return fmt.Errorf("writing a reply: %w", err)
		}
		if sp != nil && (req.Op == opStop || req.Op == opStopForRestart) {
			return nil
		}
	}
}
