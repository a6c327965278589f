// Package bgp is the route-mode BGP speaker as the agent sees it: its configuration (Config,
// PeerConfig, validated here), its session changes, the Speaker interface, and Process, which
// runs the speaker (GoBGP, pkg/bgp/gobgp) in a process of its own, edgeplane-bgp, over a pipe
// (Serve is that process's side). Nothing here links GoBGP.
package bgp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Defaults a site router's operator expects when a field is left zero.
const (
	// DefaultHoldTime is the hold time proposed in OPEN when PeerConfig.HoldTime is 0 (RFC 4271
	// suggests 90 s; FRR, BIRD and GoBGP use it).
	DefaultHoldTime = 90 * time.Second
	// MinHoldTime is the smallest non-zero hold time BGP allows (RFC 4271 4.2).
	MinHoldTime = 3 * time.Second
	// DefaultRestartTime is the restart time advertised in the graceful-restart capability when
	// GracefulRestart.RestartTime is 0: how long a peer keeps our routes while the agent is away.
	DefaultRestartTime = 120 * time.Second
	// maxRestartTime is the largest restart time the capability's 12-bit field holds (RFC 4724 3).
	maxRestartTime = 4095 * time.Second
	// maxLongLivedStaleTime is the largest stale time of the 24-bit LLGR field (RFC 9494 3).
	maxLongLivedStaleTime = (1<<24 - 1) * time.Second
	// DefaultPort is BGP's TCP port (RFC 4271 8.2.1).
	DefaultPort = 179
	// maxPasswordLen is the kernel's TCP_MD5SIG_MAXKEYLEN.
	maxPasswordLen = 80
)

// ErrInvalidConfig wraps every validation error of Config and PeerConfig, so callers can tell a
// bad configuration (report it, keep the last good one) from a failure of the speaker.
var ErrInvalidConfig = errors.New("invalid BGP configuration")

// ErrStopped is what a stopped speaker's methods return, and a speaker process's once the
// process ended.
var ErrStopped = errors.New("BGP speaker is stopped")

// Config is the speaker's own configuration.
type Config struct {
	// RouterID is the BGP identifier: an IPv4 address unique among the peers, usually the
	// node's underlay IPv4 address.
	RouterID netip.Addr
	// ASN is the local autonomous system number, used for every peer that sets no LocalASN.
	ASN uint32
	// ListenPort is the TCP port the speaker accepts sessions on; 0 or -1 mean do not listen:
	// the agent only dials its peers (the site gateway), as Terway Edge's and Calico's node
	// speakers do, so it never contends for port 179 on a host network.
	ListenPort int32
	// ListenAddresses restricts where the speaker listens when ListenPort > 0; empty means every
	// address (0.0.0.0 and ::).
	ListenAddresses []netip.Addr
	// Logger receives GoBGP's log records; nil discards them.
	Logger *slog.Logger
	// OnSessionChange, when set, is called (from one goroutine, in order) each time a peer's
	// session changes state: for Events on session loss and for metrics.
	OnSessionChange func(SessionChange)
}

// PeerConfig is one BGP neighbour. Its address is its key: a speaker has at most one
// session per peer address.
type PeerConfig struct {
	// Address is the peer's IPv4 address.
	Address netip.Addr
	// ASN is the peer's autonomous system number: equal to the local ASN for iBGP, else eBGP.
	ASN uint32
	// LocalASN overrides Config.ASN for this peer; 0 keeps Config.ASN.
	LocalASN uint32
	// Password is the TCP-MD5 signature key (RFC 2385) both ends must share; empty for none.
	Password string
	// HoldTime is proposed in OPEN (the session uses the smaller of both ends' values; the
	// keepalive interval is a third of it). 0 means DefaultHoldTime; otherwise whole seconds,
	// at least MinHoldTime.
	HoldTime time.Duration
	// Port is the peer's TCP port; 0 means DefaultPort.
	Port uint16
	// LocalAddress is the source address of the session; the zero Addr lets the kernel choose.
	LocalAddress netip.Addr
	// Passive makes the speaker wait for the peer to connect instead of dialling it.
	Passive bool
	// MultihopTTL, for an eBGP peer that is not directly connected, is the TTL of the
	// session's packets (1..255); 0 keeps eBGP's default of a directly connected peer.
	MultihopTTL uint8
	// GracefulRestart is the restarting-speaker side of graceful restart for this peer.
	GracefulRestart GracefulRestart
}

// GracefulRestart configures graceful restart (RFC 4724) towards one peer, so that the peer
// keeps forwarding to the routes we advertised while the agent restarts or is upgraded: the
// BPF datapath is pinned and keeps forwarding meanwhile, which is what the capability's
// "forwarding state preserved" bit promises.
type GracefulRestart struct {
	// Enabled advertises the graceful-restart capability, with the restart and forwarding
	// bits set (see Speaker's comment on why always).
	Enabled bool
	// RestartTime is how long the peer keeps our routes after the session drops without a
	// NOTIFICATION, waiting for us to come back; 0 means DefaultRestartTime; whole seconds,
	// at most 4095 s.
	RestartTime time.Duration
	// Notification also lets the session survive a NOTIFICATION other than Hard Reset
	// (RFC 8538), e.g. a hold timer expiry; a deliberate removal still sends Hard Reset.
	Notification bool
	// LongLivedStaleTime, when non-zero, also advertises long-lived graceful restart
	// (RFC 9494): after RestartTime the peer keeps our routes, marked LLGR_STALE and least
	// preferred, for this much longer; whole seconds, at most 2^24-1 s.
	LongLivedStaleTime time.Duration
}

// Validate checks the speaker's own configuration.
func (c *Config) Validate() error {
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		return fmt.Errorf("%w: router ID %q is not a non-zero IPv4 address", ErrInvalidConfig, c.RouterID)
	}
	if err := validateASN("local ASN", c.ASN); err != nil {
		return err
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 {
		return fmt.Errorf("%w: listen port %d is not -1, 0 (do not listen) or 1..65535", ErrInvalidConfig, c.ListenPort)
	}
	for _, a := range c.ListenAddresses {
		if !a.IsValid() {
			return fmt.Errorf("%w: listen address is empty", ErrInvalidConfig)
		}
	}
	return nil
}

// Validate checks one peer; it needs no speaker.
func (p *PeerConfig) Validate() error {
	if !p.Address.IsValid() {
		return fmt.Errorf("%w: peer address is empty", ErrInvalidConfig)
	}
	if !p.Address.Is4() || p.Address.IsUnspecified() || p.Address.IsMulticast() {
		return fmt.Errorf("%w: peer address %s is not a unicast IPv4 address (the speaker carries IPv4 unicast over IPv4 sessions)", ErrInvalidConfig, p.Address)
	}
	if err := validateASN(fmt.Sprintf("peer %s: peer ASN", p.Address), p.ASN); err != nil {
		return err
	}
	if p.LocalASN != 0 {
		if err := validateASN(fmt.Sprintf("peer %s: local ASN", p.Address), p.LocalASN); err != nil {
			return err
		}
	}
	if len(p.Password) > maxPasswordLen {
		return fmt.Errorf("%w: peer %s: password is %d bytes, TCP-MD5 allows at most %d", ErrInvalidConfig, p.Address, len(p.Password), maxPasswordLen)
	}
	if err := validateSeconds(fmt.Sprintf("peer %s: hold time", p.Address), p.HoldTime, MinHoldTime, 65535*time.Second); err != nil {
		return err
	}
	if p.LocalAddress.IsValid() && !p.LocalAddress.Is4() {
		return fmt.Errorf("%w: peer %s: local address %s is not IPv4", ErrInvalidConfig, p.Address, p.LocalAddress)
	}
	gr := p.GracefulRestart
	if !gr.Enabled && (gr.RestartTime != 0 || gr.Notification || gr.LongLivedStaleTime != 0) {
		return fmt.Errorf("%w: peer %s: graceful-restart settings given but graceful restart is not enabled", ErrInvalidConfig, p.Address)
	}
	if err := validateSeconds(fmt.Sprintf("peer %s: graceful-restart time", p.Address), gr.RestartTime, time.Second, maxRestartTime); err != nil {
		return err
	}
	return validateSeconds(fmt.Sprintf("peer %s: long-lived stale time", p.Address), gr.LongLivedStaleTime, time.Second, maxLongLivedStaleTime)
}

// validateASN rejects the numbers no speaker may use as its own or a peer's: 0 (RFC 7607),
// AS_TRANS 23456 (RFC 6793) and the last ones of both ranges (RFC 7300).
func validateASN(what string, asn uint32) error {
	switch asn {
	case 0, 23456, 65535, 4294967295:
		return fmt.Errorf("%w: %s %d is reserved (0, 23456, 65535 and 4294967295 cannot be used)", ErrInvalidConfig, what, asn)
	}
	return nil
}

// validateSeconds accepts 0 (the default) or whole seconds in [lo, hi].
func validateSeconds(what string, d, lo, hi time.Duration) error {
	switch {
	case d == 0:
		return nil
	case d < 0 || d%time.Second != 0:
		return fmt.Errorf("%w: %s %v is not a whole number of seconds", ErrInvalidConfig, what, d)
	case d < lo || d > hi:
		return fmt.Errorf("%w: %s %v is outside %v..%v", ErrInvalidConfig, what, d, lo, hi)
	}
	return nil
}

// ValidatePrefix accepts a canonical IPv4 prefix and an IPv4 next hop or none.
func ValidatePrefix(prefix netip.Prefix, nextHop netip.Addr) error {
	if !prefix.IsValid() || !prefix.Addr().Is4() {
		return fmt.Errorf("%w: prefix %s is not an IPv4 prefix", ErrInvalidConfig, prefix)
	}
	if prefix.Masked() != prefix {
		return fmt.Errorf("%w: prefix %s has host bits set (did you mean %s?)", ErrInvalidConfig, prefix, prefix.Masked())
	}
	if nextHop.IsValid() && (!nextHop.Is4() || nextHop.IsUnspecified() || nextHop.IsMulticast()) {
		return fmt.Errorf("%w: prefix %s: next hop %s is not a unicast IPv4 address", ErrInvalidConfig, prefix, nextHop)
	}
	return nil
}
