// Package bgpstatus is what the agent's BGP speaker (pkg/bgp) reports about its peers, in types
// that do not link GoBGP: edgeplanectl and the metrics decode and show them without carrying the
// speaker (GoBGP, gRPC and their dependencies weigh some 20 MB).
package bgpstatus

import (
	"net/netip"
	"time"
)

// SessionState is a peer's BGP finite-state-machine state (RFC 4271 8), by its RFC name.
type SessionState string

const (
	StateIdle        SessionState = "idle"
	StateConnect     SessionState = "connect"
	StateActive      SessionState = "active"
	StateOpenSent    SessionState = "opensent"
	StateOpenConfirm SessionState = "openconfirm"
	StateEstablished SessionState = "established"
)

// PeerStatus is one peer as the speaker sees it, for metrics and `edgeplanectl bgp`.
type PeerStatus struct {
	Address  netip.Addr   `json:"address"`
	ASN      uint32       `json:"asn"`
	LocalASN uint32       `json:"localASN"`
	State    SessionState `json:"state"`
	// RouterID is the peer's BGP identifier, known once a session opened.
	RouterID netip.Addr `json:"routerID,omitzero"`
	// Since is when the session was last established (State established) or last went down
	// (otherwise); zero when it never was established.
	Since time.Time `json:"since,omitzero"`
	// HoldTimeSeconds is the negotiated hold time of an established session.
	HoldTimeSeconds uint16 `json:"holdTimeSeconds,omitempty"`
	// Advertised counts the prefixes we send the peer; Received, those it sent us.
	Advertised int `json:"advertised"`
	Received   int `json:"received"`
	// GracefulRestart says the capability was negotiated both ways on the current session;
	// PeerRestarting, that the peer is restarting and its routes (Received) are kept stale.
	GracefulRestart bool `json:"gracefulRestart"`
	PeerRestarting  bool `json:"peerRestarting,omitempty"`
	// LastError is why the last session ended, as GoBGP reports it.
	LastError string `json:"lastError,omitempty"`
	// ReceivedRoutes are the routes the peer sent us (its Adj-RIB-In), by prefix.
	ReceivedRoutes []Route `json:"receivedRoutes,omitempty"`
}

// Uptime is how long the session has been established, 0 when it is not.
func (p *PeerStatus) Uptime(now time.Time) time.Duration {
	if p.State != StateEstablished || p.Since.IsZero() {
		return 0
	}
	return now.Sub(p.Since)
}

// Route is a route a peer sent.
type Route struct {
	Prefix  netip.Prefix `json:"prefix"`
	NextHop netip.Addr   `json:"nextHop"`
	ASPath  []uint32     `json:"asPath,omitempty"`
	// Stale is set while the peer is restarting (graceful restart) and the route is kept
	// until the peer's End-of-RIB refreshes or removes it.
	Stale bool `json:"stale,omitempty"`
}
