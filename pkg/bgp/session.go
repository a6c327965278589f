package bgp

import (
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

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
