package gobgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	packet "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/edgeplane/edgeplane/pkg/bgp"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// Snapshot returns every configured peer's status, by address, with the routes each sent.
func (s *Speaker) Snapshot(ctx context.Context) ([]bgpstatus.PeerStatus, error) {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return nil, bgp.ErrStopped
	}
	var peers []bgpstatus.PeerStatus
	err := s.server.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		peers = append(peers, peerStatus(p))
	})
	if err != nil {
		return nil, fmt.Errorf("listing BGP peers: %w", err)
	}
	for i := range peers {
		p := &peers[i]
		if p.State != bgpstatus.StateEstablished && !p.PeerRestarting {
			continue // GoBGP keeps no Adj-RIB-In then
		}
		routes, err := s.receivedRoutes(p.Address)
		if err != nil {
			return nil, err
		}
		p.ReceivedRoutes = routes
	}
	slices.SortFunc(peers, func(a, b bgpstatus.PeerStatus) int { return a.Address.Compare(b.Address) })
	return peers, nil
}

func (s *Speaker) receivedRoutes(peer netip.Addr) ([]bgpstatus.Route, error) {
	var routes []bgpstatus.Route
	err := s.server.ListPath(apiutil.ListPathRequest{
		TableType: api.TableType_TABLE_TYPE_ADJ_IN,
		Name:      peer.String(),
		Family:    packet.RF_IPv4_UC,
	}, func(nlri packet.NLRI, paths []*apiutil.Path) {
		prefix, err := netip.ParsePrefix(nlri.String())
		if err != nil {
			return
		}
		for _, p := range paths {
			routes = append(routes, route(prefix, p))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listing routes received from %s: %w", peer, err)
	}
	slices.SortFunc(routes, func(a, b bgpstatus.Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return routes, nil
}

func route(prefix netip.Prefix, p *apiutil.Path) bgpstatus.Route {
	r := bgpstatus.Route{Prefix: prefix, Stale: p.Stale}
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *packet.PathAttributeNextHop:
			r.NextHop = a.Value
		case *packet.PathAttributeAsPath:
			for _, seg := range a.Value {
				r.ASPath = append(r.ASPath, seg.GetAS()...)
			}
		}
	}
	return r
}

func peerStatus(p *api.Peer) bgpstatus.PeerStatus {
	st := bgpstatus.PeerStatus{}
	if c := p.GetConf(); c != nil {
		st.Address, _ = netip.ParseAddr(c.GetNeighborAddress())
		st.ASN = c.GetPeerAsn()
		st.LocalASN = c.GetLocalAsn()
	}
	if ps := p.GetState(); ps != nil {
		st.State = sessionState(ps.GetSessionState())
		st.RouterID, _ = netip.ParseAddr(ps.GetRouterId())
		if st.RouterID.IsUnspecified() {
			st.RouterID = netip.Addr{}
		}
		if ps.GetDisconnectReason() != api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
			st.LastError = ps.GetDisconnectReason().String()
			if m := ps.GetDisconnectMessage(); m != "" {
				st.LastError += ": " + m
			}
		}
		if ps.GetLocalAsn() != 0 {
			st.LocalASN = ps.GetLocalAsn()
		}
	}
	if ts := p.GetTimers().GetState(); ts != nil {
		since := ts.GetDowntime()
		if st.State == bgpstatus.StateEstablished {
			since = ts.GetUptime()
			st.HoldTimeSeconds = uint16(ts.GetNegotiatedHoldTime())
		}
		if since != nil && since.GetSeconds() > 0 {
			st.Since = since.AsTime()
		}
	}
	if gr := p.GetGracefulRestart(); gr != nil {
		st.PeerRestarting = gr.GetPeerRestarting()
	}
	for _, afi := range p.GetAfiSafis() {
		if f := afi.GetConfig().GetFamily(); f.GetAfi() != api.Family_AFI_IP || f.GetSafi() != api.Family_SAFI_UNICAST {
			continue
		}
		st.Advertised = int(afi.GetState().GetAdvertised())
		st.Received = int(afi.GetState().GetReceived())
		if m := afi.GetMpGracefulRestart().GetState(); m != nil {
			st.GracefulRestart = m.GetAdvertised() && m.GetReceived()
		}
	}
	return st
}

func sessionState(s api.PeerState_SessionState) bgpstatus.SessionState {
	switch s {
	case api.PeerState_SESSION_STATE_CONNECT:
		return bgpstatus.StateConnect
	case api.PeerState_SESSION_STATE_ACTIVE:
		return bgpstatus.StateActive
	case api.PeerState_SESSION_STATE_OPENSENT:
		return bgpstatus.StateOpenSent
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return bgpstatus.StateOpenConfirm
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return bgpstatus.StateEstablished
	}
	return bgpstatus.StateIdle
}

func fsmState(s packet.FSMState) bgpstatus.SessionState {
	switch s {
	case packet.BGP_FSM_CONNECT:
		return bgpstatus.StateConnect
	case packet.BGP_FSM_ACTIVE:
		return bgpstatus.StateActive
	case packet.BGP_FSM_OPENSENT:
		return bgpstatus.StateOpenSent
	case packet.BGP_FSM_OPENCONFIRM:
		return bgpstatus.StateOpenConfirm
	case packet.BGP_FSM_ESTABLISHED:
		return bgpstatus.StateEstablished
	}
	return bgpstatus.StateIdle
}

// watchSessions calls cfg.OnSessionChange for every state change of a peer's session.
func (s *Speaker) watchSessions() error {
	ctx, cancel := context.WithCancel(context.Background())
	previous := map[netip.Addr]bgpstatus.SessionState{}
	err := s.server.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if ev.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			st := ev.Peer.State
			change := bgp.SessionChange{
				Peer:     st.NeighborAddress,
				ASN:      st.PeerASN,
				State:    fsmState(st.SessionState),
				Previous: previous[st.NeighborAddress],
			}
			if change.Previous == "" {
				change.Previous = bgpstatus.StateIdle
			}
			if change.State == change.Previous {
				return
			}
			previous[st.NeighborAddress] = change.State
			if change.Lost() && st.DisconnectReason != api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
				change.Reason = st.DisconnectReason.String()
				if st.DisconnectMessage != "" {
					change.Reason += ": " + st.DisconnectMessage
				}
			}
			if change.Lost() && change.Reason == "" {
				change.Reason = s.removalReason(change.Peer)
			}
			s.cfg.OnSessionChange(change)
		},
	}, server.WatchPeer())
	if err != nil {
		cancel()
		return fmt.Errorf("watching BGP session state: %w", err)
	}
	s.stopWatch = cancel
	return nil
}

// removalReason names why a session ended without a reason from GoBGP: we removed the peer
// or stopped. It waits for the RemovePeer or Stop under way to finish.
func (s *Speaker) removalReason(peer netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch _, configured := s.peers[peer]; {
	case s.stopped:
		return "speaker stopped"
	case !configured:
		return "peer removed"
	}
	return ""
}
