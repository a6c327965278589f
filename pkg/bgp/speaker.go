package bgp

import (
	"context"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// Speaker is a BGP speaker as the agent drives it: GoBGP in this process (pkg/bgp/gobgp, the
// tests') or in the speaker process (Process, the agent's).
type Speaker interface {
	// SetAdvertisements makes the advertised prefixes exactly want (prefix -> next hop).
	SetAdvertisements(want map[netip.Prefix]netip.Addr) error
	Advertisements() map[netip.Prefix]netip.Addr
	// SetPeers makes the peers exactly want.
	SetPeers(ctx context.Context, want []PeerConfig) error
	// Peers are the configured peers, by address.
	Peers() []PeerConfig
	// Snapshot is every configured peer's status, with the routes each sent.
	Snapshot(ctx context.Context) ([]bgpstatus.PeerStatus, error)
	// Stop ends every session with a NOTIFICATION, so peers withdraw our routes.
	Stop(ctx context.Context) error
	// StopForRestart closes every session without one, so graceful-restart peers keep them.
	StopForRestart(ctx context.Context) error
	// Err is nil while the speaker runs; once it stopped, or its process ended, why (wrapping
	// ErrStopped).
	Err() error
}

// SessionChange is a peer's session moving to a new state.
type SessionChange struct {
	Peer     netip.Addr
	ASN      uint32
	State    bgpstatus.SessionState
	Previous bgpstatus.SessionState
	// Reason says why a session went down, as GoBGP reports it (empty otherwise).
	Reason string
}

// Lost says the change ended an established session: the moment to raise an Event.
func (c SessionChange) Lost() bool {
	return c.Previous == bgpstatus.StateEstablished && c.State != bgpstatus.StateEstablished
}
