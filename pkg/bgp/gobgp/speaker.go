// Package gobgp is the route-mode BGP speaker: it runs GoBGP (github.com/osrg/gobgp/v4) as a
// library, peers with a domain's gateways and advertises pod CIDRs with a chosen next hop, so the
// site's router forwards pod traffic without encapsulation. It runs in the speaker process
// (cmd/edgeplane-bgp, pkg/bgp's Serve), which the agent drives; the agent does not link it.
//
// How it works. Start runs one GoBGP server with the IPv4-unicast family and an import policy
// that accepts only the speaker's own paths: routes a peer sends stay in that peer's Adj-RIB-In
// (Snapshot reports them) but never reach the speaker's own table, so a node never re-advertises
// what one gateway told it to another and never becomes a transit router. The speaker's table
// then holds only what Advertise put there, and every peer receives all of it. The types a
// snapshot is made of live in pkg/bgp/bgpstatus, which readers import without linking GoBGP.
//
// Graceful restart. The agent restarts (crash, kill -9, upgrade) while its pinned BPF programs
// keep forwarding, so for a peer with graceful restart enabled the speaker always advertises the
// restart bit and the forwarding-state bit: after a restart the peer keeps our routes, marked
// stale, until our End-of-RIB, and deletes then only those we did not advertise again. GoBGP
// sends that End-of-RIB, with our routes, once it has received End-of-RIB from every
// graceful-restart peer (RFC 4724 4.1). A restarted agent must therefore Advertise its prefixes
// before it adds its peers, or the End-of-RIB may leave before them and the peer deletes what
// it kept. Stop sends a NOTIFICATION (Hard Reset where negotiated) so peers withdraw our routes
// at once (uninstall, domain switched back to vxlan); StopForRestart closes the sessions without
// one, as a crash would, so peers keep them (a planned restart or upgrade).
package gobgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	packet "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/edgeplane/edgeplane/pkg/bgp"
)

// ipv4Unicast is the only family the speaker carries.
var ipv4Unicast = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

// Speaker is a running BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	cfg    bgp.Config
	server *server.BgpServer
	// stopWatch ends the session-state watch.
	stopWatch context.CancelFunc

	mu sync.Mutex
	// peers and advertised are the speaker's desired state, which GoBGP mirrors.
	peers      map[netip.Addr]bgp.PeerConfig
	advertised map[netip.Prefix]netip.Addr
	stopped    bool
}

// Start validates cfg and starts a speaker with no peers and no routes.
func Start(ctx context.Context, cfg bgp.Config) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := server.NewBgpServer(server.LoggerOption(logger, new(slog.LevelVar)))
	go s.Serve()

	port := cfg.ListenPort
	if port == 0 {
		port = -1 // GoBGP reads 0 as "the default port, 179"
	}
	global := &api.Global{
		Asn:        cfg.ASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: port,
		// GoBGP numbers the families of this field by its configuration enum, not by AFI/SAFI
		Families: []uint32{uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST])},
	}
	for _, a := range cfg.ListenAddresses {
		global.ListenAddresses = append(global.ListenAddresses, a.String())
	}
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		s.Stop()
		return nil, fmt.Errorf("starting BGP speaker %s (AS %d, port %d): %w", cfg.RouterID, cfg.ASN, cfg.ListenPort, err)
	}
	if err := setLocalOnlyImport(ctx, s); err != nil {
		s.Stop()
		return nil, err
	}
	sp := &Speaker{
		cfg:        cfg,
		server:     s,
		peers:      map[netip.Addr]bgp.PeerConfig{},
		advertised: map[netip.Prefix]netip.Addr{},
	}
	if cfg.OnSessionChange != nil {
		if err := sp.watchSessions(); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return sp, nil
}

// localOnlyPolicy names the import policy that lets only the speaker's own paths into its table.
const localOnlyPolicy = "edgeplane-local-only"

// setLocalOnlyImport makes the global import policy accept the paths Advertise adds (GoBGP
// runs them through it too) and reject every path a peer sends.
func setLocalOnlyImport(ctx context.Context, s *server.BgpServer) error {
	err := s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: localOnlyPolicy,
		Statements: []*api.Statement{{
			Name:       localOnlyPolicy + "-accept-local",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
		}},
	}})
	if err != nil {
		return fmt.Errorf("adding the import policy %s: %w", localOnlyPolicy, err)
	}
	err = s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies:      []*api.Policy{{Name: localOnlyPolicy}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}})
	if err != nil {
		return fmt.Errorf("assigning the import policy %s: %w", localOnlyPolicy, err)
	}
	return nil
}

// Stop ends every session with a NOTIFICATION, so peers withdraw our routes at once, and stops
// the speaker. Use it when the node stops being a speaker (uninstall, domain switched to vxlan).
func (s *Speaker) Stop(ctx context.Context) error {
	return s.stop(ctx, false)
}

// StopForRestart closes every session without a NOTIFICATION, as a crash would, and stops the
// speaker: peers that negotiated graceful restart keep our routes as stale for the restart time,
// until the next speaker on this node re-establishes the sessions and refreshes them.
func (s *Speaker) StopForRestart(ctx context.Context) error {
	return s.stop(ctx, true)
}

func (s *Speaker) stop(ctx context.Context, keepRoutes bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	if s.stopWatch != nil {
		s.stopWatch()
	}
	err := s.server.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: keepRoutes})
	if err != nil {
		return fmt.Errorf("stopping BGP speaker %s: %w", s.cfg.RouterID, err)
	}
	s.server.Stop() // BFD and gRPC, which the speaker does not use; StopBgp's second call only logs
	return nil
}

var _ bgp.Speaker = (*Speaker)(nil)

// Err is nil until the speaker is stopped, bgp.ErrStopped after.
func (s *Speaker) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return bgp.ErrStopped
	}
	return nil
}

// SetPeer adds the peer, or updates it when its configuration changed. An update restarts the
// session, as an operator's "clear bgp neighbor" would: hold time, password and capabilities
// are only exchanged when a session opens. An unchanged peer is left alone.
func (s *Speaker) SetPeer(ctx context.Context, p bgp.PeerConfig) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return bgp.ErrStopped
	}
	old, exists := s.peers[p.Address]
	if exists && old == p {
		return nil
	}
	if exists {
		if err := s.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
			return fmt.Errorf("removing peer %s to update it: %w", p.Address, err)
		}
		delete(s.peers, p.Address)
	}
	if err := s.server.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
		return fmt.Errorf("adding peer %s (AS %d): %w", p.Address, p.ASN, err)
	}
	s.peers[p.Address] = p
	return nil
}

// RemovePeer ends the session with a NOTIFICATION (the peer withdraws our routes) and forgets
// the peer. Removing an unknown peer is not an error.
func (s *Speaker) RemovePeer(ctx context.Context, address netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return bgp.ErrStopped
	}
	if _, ok := s.peers[address]; !ok {
		return nil
	}
	if err := s.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: address.String()}); err != nil {
		return fmt.Errorf("removing peer %s: %w", address, err)
	}
	delete(s.peers, address)
	return nil
}

// SetPeers converges the peers on want: missing ones are added, changed ones updated (their
// sessions restart), those not in want removed (they withdraw our routes). It validates all of
// want, and refuses two entries for one address, before it changes anything. A reconciler calls
// SetAdvertisements first, then SetPeers (see the package comment on graceful restart).
func (s *Speaker) SetPeers(ctx context.Context, want []bgp.PeerConfig) error {
	byAddress := map[netip.Addr]bgp.PeerConfig{}
	for _, p := range want {
		if err := p.Validate(); err != nil {
			return err
		}
		if _, dup := byAddress[p.Address]; dup {
			return fmt.Errorf("%w: peer %s is listed twice", bgp.ErrInvalidConfig, p.Address)
		}
		byAddress[p.Address] = p
	}
	var errs []error
	for _, p := range s.Peers() {
		if _, ok := byAddress[p.Address]; !ok {
			errs = append(errs, s.RemovePeer(ctx, p.Address))
		}
	}
	for _, p := range want {
		errs = append(errs, s.SetPeer(ctx, p))
	}
	return errors.Join(errs...)
}

// Peers returns the configured peers, by address.
func (s *Speaker) Peers() []bgp.PeerConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.SortedFunc(maps.Values(s.peers), func(a, b bgp.PeerConfig) int { return a.Address.Compare(b.Address) })
}

// apiPeer translates a validated PeerConfig into GoBGP's.
func (s *Speaker) apiPeer(p bgp.PeerConfig) *api.Peer {
	hold := p.HoldTime
	if hold == 0 {
		hold = bgp.DefaultHoldTime
	}
	port := uint32(p.Port)
	if port == 0 {
		port = bgp.DefaultPort
	}
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(hold / time.Second),
			KeepaliveInterval: uint64(hold / time.Second / 3),
			ConnectRetry:      5, // GoBGP's 120 s default leaves a node unrouted for minutes after a gateway reboot
		}},
		Transport: &api.Transport{
			RemotePort:  port,
			PassiveMode: p.Passive,
		},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: ipv4Unicast, Enabled: true}}},
	}
	if p.LocalAddress.IsValid() {
		peer.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.MultihopTTL != 0 {
		peer.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.MultihopTTL)}
	}
	if gr := p.GracefulRestart; gr.Enabled {
		restart := gr.RestartTime
		if restart == 0 {
			restart = bgp.DefaultRestartTime
		}
		peer.GracefulRestart = &api.GracefulRestart{
			Enabled:             true,
			RestartTime:         uint32(restart / time.Second),
			NotificationEnabled: gr.Notification,
			LonglivedEnabled:    gr.LongLivedStaleTime != 0,
			// Always "restarting": set the R and F bits, since our forwarding state (the
			// pinned datapath) survives every restart of the agent; see the package comment.
			LocalRestarting: true,
			// How long a restarted speaker waits for the peers' End-of-RIB before it sends its
			// routes anyway: a peer that never answers must not hold ours back for GoBGP's 360 s.
			DeferralTime: uint32(restart / time.Second),
		}
		afi := peer.AfiSafis[0]
		afi.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		if gr.LongLivedStaleTime != 0 {
			afi.LongLivedGracefulRestart = &api.LongLivedGracefulRestart{Config: &api.LongLivedGracefulRestartConfig{
				Enabled: true, RestartTime: uint32(gr.LongLivedStaleTime / time.Second),
			}}
		}
	}
	return peer
}

// Advertise announces prefix to every peer with nextHop, replacing an earlier advertisement of
// the same prefix. The zero nextHop means the session's local address (next-hop-self), which is
// what a speaker announcing its own pod CIDR wants; another node's address announces that
// node's pod CIDR on its behalf.
func (s *Speaker) Advertise(prefix netip.Prefix, nextHop netip.Addr) error {
	if err := bgp.ValidatePrefix(prefix, nextHop); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return bgp.ErrStopped
	}
	if old, ok := s.advertised[prefix]; ok && old == nextHop {
		return nil
	}
	path, err := newPath(prefix, nextHop)
	if err != nil {
		return err
	}
	if _, err := s.server.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("advertising %s via %s: %w", prefix, nextHopString(nextHop), err)
	}
	s.advertised[prefix] = nextHop
	return nil
}

// Withdraw stops announcing prefix; withdrawing a prefix not advertised is not an error.
func (s *Speaker) Withdraw(prefix netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return bgp.ErrStopped
	}
	nextHop, ok := s.advertised[prefix]
	if !ok {
		return nil
	}
	path, err := newPath(prefix, nextHop)
	if err != nil {
		return err
	}
	if err := s.server.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("withdrawing %s: %w", prefix, err)
	}
	delete(s.advertised, prefix)
	return nil
}

// SetAdvertisements converges the advertised prefixes on want (prefix -> next hop, the zero
// Addr meaning next-hop-self): what is missing or changed is advertised, what is not in want is
// withdrawn. It validates all of want before it changes anything.
func (s *Speaker) SetAdvertisements(want map[netip.Prefix]netip.Addr) error {
	for prefix, nextHop := range want {
		if err := bgp.ValidatePrefix(prefix, nextHop); err != nil {
			return err
		}
	}
	var errs []error
	for prefix := range s.Advertisements() {
		if _, ok := want[prefix]; !ok {
			errs = append(errs, s.Withdraw(prefix))
		}
	}
	for _, prefix := range slices.SortedFunc(maps.Keys(want), comparePrefix) {
		errs = append(errs, s.Advertise(prefix, want[prefix]))
	}
	return errors.Join(errs...)
}

// Advertisements returns what the speaker announces: prefix -> next hop (zero: next-hop-self).
func (s *Speaker) Advertisements() map[netip.Prefix]netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.advertised)
}

// newPath builds GoBGP's path for an IGP-origin IPv4 route.
func newPath(prefix netip.Prefix, nextHop netip.Addr) (*apiutil.Path, error) {
	nlri, err := packet.NewIPAddrPrefix(prefix)
	if err != nil {
		return nil, fmt.Errorf("encoding prefix %s: %w", prefix, err)
	}
	if !nextHop.IsValid() {
		nextHop = netip.IPv4Unspecified() // GoBGP puts the session's local address there
	}
	nh, err := packet.NewPathAttributeNextHop(nextHop)
	if err != nil {
		return nil, fmt.Errorf("encoding next hop %s: %w", nextHop, err)
	}
	return &apiutil.Path{
		Family: packet.RF_IPv4_UC,
		Nlri:   nlri,
		Attrs:  []packet.PathAttributeInterface{packet.NewPathAttributeOrigin(packet.BGP_ORIGIN_ATTR_TYPE_IGP), nh},
	}, nil
}

func nextHopString(nextHop netip.Addr) string {
	if !nextHop.IsValid() {
		return "self"
	}
	return nextHop.String()
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
