package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/bgp"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// The BGP speaker of route mode (pkg/bgp: GoBGP in the edgeplane-bgp process, which a pass starts
// again when it ended), driven by this node's route-mode view.
//
// bgpSpeaker follows controller.RouteModeView: while the node speaks, it runs one speaker (router
// ID = the node IP, local ASN = its peers', no listening port: it only dials) that advertises the
// node's pod CIDR with the node IP as next hop and, with advertiseNonSpeakers, the pod CIDRs of
// the domain's nodes that do not speak, each with its own node IP. Each pass converges the
// advertisements BEFORE the peers, so that after an agent restart the End-of-RIB GoBGP sends a
// graceful-restart peer already follows our routes (pkg/bgp's comment). When the node no longer
// speaks the speaker stops with a NOTIFICATION (peers withdraw at once). When the agent stops
// (SIGTERM) it stops without one: a graceful-restart peer keeps the routes while the pinned
// datapath keeps forwarding, until the next agent refreshes them.
//
// Make before break: the domain's other nodes send to this node's pods unencapsulated only while
// its Node carries k8s.RoutesAdvertisedAnnotation (the node reconciler's encapTo). The speaker sets
// it once a session is established (its advertisements are in place before the peers, so the
// router has the pod CIDR), and removes it when it stops speaking, then waits bgpWithdrawDelay
// before it withdraws, so that the other nodes, which see the same change, have moved their
// traffic to VXLAN before the router drops the routes.
//
// One goroutine converges, kicked by view changes, node events (advertiseNonSpeakers), session
// changes and a short refresh tick; it retries failures on the tick. After each pass it rewrites
// <run-dir>/bgp.json (bgpstatus.Report) when its content changed; metrics read the same report.
// A lost session is logged and recorded as a Warning event on the Node.
type bgpSpeaker struct {
	nodeName string
	nodeIP   netip.Addr
	podCIDR  netip.Prefix
	nodes    *k8s.NodeLister
	// nodesSynced says the lister holds every node (nil: always): a restarted agent must not
	// advertise a partial set of non-speakers' pod CIDRs, or the peers' End-of-RIB drops the rest.
	nodesSynced func() bool
	domains     controller.DomainModel // nil: the default model (never route mode)
	// secrets reads the peers' passwords from Secrets in secretNamespace, the domain ConfigMap's.
	secrets         secretGetter
	secretNamespace string
	recorder        k8s.EventRecorder
	runDir          string
	// refresh is how often the report is refreshed (counters, uptimes) and failures retried.
	refresh time.Duration
	// start starts a speaker: the speaker process (bgp.StartProcess), or GoBGP in the test's
	// process.
	start func(context.Context, bgp.Config) (bgp.Speaker, error)
	// annotate sets this node's k8s.RoutesAdvertisedAnnotation to domain, or removes it for "";
	// nil publishes nothing (tests).
	annotate func(ctx context.Context, domain string) error
	// withdrawDelay is how long the speaker waits between removing the annotation and
	// withdrawing when the node stops speaking (bgpWithdrawDelay but in tests).
	withdrawDelay time.Duration
	// publishSettle is how long a session is up, our prefixes sent, before the annotation says
	// the router has them (bgpPublishSettle but in tests).
	publishSettle time.Duration

	kicks chan struct{}
	view  atomic.Pointer[domain.NodeRouting]
	// rereadPasswords makes the next pass read the Secrets again (a view change).
	rereadPasswords atomic.Bool
	// configured are the peers the speaker is meant to have, set before a pass changes them: a
	// session that ends because its peer left the configuration is not "lost".
	configured atomic.Pointer[map[netip.Addr]bool]

	mu        sync.Mutex // guards what follows; held during a pass and a stop
	speaker   bgp.Speaker
	config    bgp.Config
	passwords map[domain.SecretKeyRef]string
	// passwordsRead is when passwords was last emptied to be read again.
	passwordsRead time.Time
	lastError     string // reported once per distinct error
	written       []byte // the report last written, without its Updated time

	report atomic.Pointer[bgpstatus.Report] // the last one, for metrics

	establishedMu sync.Mutex
	establishedAt map[netip.Addr]time.Time // when each peer's session came up, as this agent saw it
}

// secretGetter is what the speaker needs of the API server: k8s.API's GetSecret.
type secretGetter interface {
	GetSecret(ctx context.Context, namespace, name string) (*api.Secret, error)
}

// Reasons of the Warning events bgpSpeaker records on this node's Node.
const (
	ReasonBGPSessionLost = "BGPSessionLost"
	ReasonBGPConfig      = "BGPConfigurationFailed"
)

// bgpRefresh is how often the report and metrics are refreshed and a failed pass retried.
const bgpRefresh = 10 * time.Second

// bgpPublishSettle is how long after its session came up, its prefixes sent, a speaker tells the
// other nodes (the routes-advertised annotation) that the router has its routes: the router's
// time to install what it received, which BGP does not acknowledge.
const bgpPublishSettle = 500 * time.Millisecond

// advertisedRecheck is how soon a pass looks again at a new session whose prefixes are not all
// counted as sent yet.
const advertisedRecheck = 100 * time.Millisecond

// bgpPasswordReread is how often the passwords are read again without a view change, so that a
// rotated Secret reaches the sessions (a changed password restarts them, as on a router). While a
// configured session is not established they are read again on every retry (bgpRefresh): a
// password rotated at the router first breaks the session, and the new one must follow promptly.
const bgpPasswordReread = 5 * time.Minute

// bgpWithdrawDelay is how long a speaker that stops speaking (the domain switched to vxlan, the
// speaker label removed) keeps its routes after it removed its annotation: the other nodes see
// the same change and move their traffic to VXLAN in well under a second (tests/route measures
// it), then the routes go.
const bgpWithdrawDelay = 2 * time.Second

// startSpeakerProcess starts the speaker process installed next to the agent (pkg/bgp's Process).
func startSpeakerProcess(ctx context.Context, cfg bgp.Config) (bgp.Speaker, error) {
	path, err := bgp.ProcessPath()
	if err != nil {
		return nil, err
	}
	return bgp.StartProcess(ctx, path, cfg)
}

func (a *Agent) newBGPSpeaker(nodeInformer k8s.Informer, domains controller.DomainModel,
	secretNamespace string, recorder k8s.EventRecorder) (*bgpSpeaker, error) {
	s := &bgpSpeaker{
		nodeName: a.cfg.NodeName, nodeIP: a.underlay.IP, podCIDR: a.podCIDR,
		nodes: k8s.NewNodeLister(nodeInformer.GetIndexer()), nodesSynced: nodeInformer.HasSynced, domains: domains,
		secrets: a.client, secretNamespace: secretNamespace, recorder: recorder,
		runDir: a.cfg.RunDir, refresh: bgpRefresh, start: startSpeakerProcess,
		annotate: a.annotateRoutesAdvertised, withdrawDelay: bgpWithdrawDelay, publishSettle: bgpPublishSettle,
	}
	s.init()
	_, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.nodeChanged() },
		UpdateFunc: func(_, _ any) { s.nodeChanged() },
		DeleteFunc: func(any) { s.nodeChanged() },
	})
	if err != nil {
		return nil, fmt.Errorf("adding node event handler for the BGP speaker: %w", err)
	}
	return s, nil
}

func (s *bgpSpeaker) init() {
	s.kicks = make(chan struct{}, 1)
	s.passwords = map[domain.SecretKeyRef]string{}
	s.report.Store(&bgpstatus.Report{Node: s.nodeName})
}

// setView is the route-mode view's listener.
func (s *bgpSpeaker) setView(v domain.NodeRouting) {
	s.view.Store(&v)
	s.rereadPasswords.Store(true) // the view may name other Secrets, or the same ones changed
	s.kick()
}

// nodeChanged: another node's pod CIDR or address is advertised on its behalf with
// advertiseNonSpeakers; otherwise node events change nothing here.
func (s *bgpSpeaker) nodeChanged() {
	if v := s.view.Load(); v != nil && v.Speaker && v.AdvertiseNonSpeakers {
		s.kick()
	}
}

func (s *bgpSpeaker) kick() {
	select {
	case s.kicks <- struct{}{}:
	default:
	}
}

// run converges on every kick and tick until ctx is done; it leaves the speaker running for
// stop, which the agent calls once it knows why it stops.
func (s *bgpSpeaker) run(ctx context.Context) {
	tick := time.NewTicker(s.refresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kicks:
		case <-tick.C:
		}
		s.converge(ctx)
	}
}

// converge makes the speaker what the view asks, then refreshes the report.
func (s *bgpSpeaker) converge(ctx context.Context) {
	view := s.view.Load()
	if view == nil {
		return // not known yet: a route-mode node must not withdraw at start
	}
	if s.nodesSynced != nil && !s.nodesSynced() {
		return // the next tick or node event comes back
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rereadPasswords.Swap(false) || time.Since(s.passwordsRead) > bgpPasswordReread ||
		(s.sessionDown() && time.Since(s.passwordsRead) >= s.refresh/2) { // every tick, not every kick
		clear(s.passwords)
		s.passwordsRead = time.Now()
	}
	err := s.convergeLocked(ctx, *view)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != s.lastError {
		s.lastError = msg
		if err != nil {
			klog.FromContext(ctx).Error(err, "Configuring the BGP speaker; retrying", "retryIn", s.refresh)
			s.recorder.Event(s.nodeRef(), api.EventTypeWarning, ReasonBGPConfig, "BGP speaker: "+msg)
		} else {
			klog.FromContext(ctx).Info("BGP speaker configured", "domain", view.Domain, "routerID", s.config.RouterID,
				"localASN", s.config.ASN, "peers", len(view.Peers))
		}
	}
	s.updateReportLocked(ctx, *view, msg)
	s.publishLocked(ctx, *view)
}

// sessionDown says whether a configured peer's session was not established at the last report.
func (s *bgpSpeaker) sessionDown() bool {
	r := s.report.Load()
	if !r.Speaking {
		return false
	}
	configured := s.configured.Load()
	up := 0
	for _, p := range r.Peers {
		if p.State == bgpstatus.StateEstablished && configured != nil && (*configured)[p.Address] {
			up++
		}
	}
	return configured != nil && up < len(*configured)
}

// publishLocked sets the annotation once a session has been established for bgpPublishSettle
// with every advertisement sent, and removes it when the speaker is gone; a speaker whose sessions
// are all down leaves it as it is (graceful restart may keep the routes; a flapping annotation
// would flap the other nodes' encapsulation). BGP acknowledges no UPDATE: the router has our
// routes only once it has received and installed them, which on a loaded router takes tens of
// milliseconds after the session comes up (tests/route lost 18 packets of a 2 ms stream to a
// node that published 7 ms after its session came up). Until then, a pass is kicked again when the
// settle time is over.
func (s *bgpSpeaker) publishLocked(ctx context.Context, view domain.NodeRouting) {
	want, change := "", s.speaker == nil
	if !change {
		r := s.report.Load()
		now := time.Now()
		for _, p := range r.Peers {
			if p.State != bgpstatus.StateEstablished {
				continue
			}
			uptime := now.Sub(s.establishedSince(p))
			if uptime < s.publishSettle {
				time.AfterFunc(s.publishSettle-uptime, s.kick)
				continue
			}
			if p.Advertised < len(r.Advertised) {
				// The UPDATE is not out yet: look again shortly while the session is new; past
				// that, the refresh tick does (a peer that never takes every prefix must not make
				// a pass every few milliseconds).
				if uptime < s.refresh {
					time.AfterFunc(advertisedRecheck, s.kick)
				}
				continue
			}
			want, change = view.Domain, true
			break
		}
	}
	if change {
		s.setAnnotation(ctx, want)
	}
}

// setAnnotation converges the annotation on want, reading the current value from the lister.
func (s *bgpSpeaker) setAnnotation(ctx context.Context, want string) {
	if s.annotate == nil {
		return
	}
	node, err := s.nodes.Get(s.nodeName)
	if err != nil || node.Annotations.Get(k8s.RoutesAdvertisedAnnotation) == want {
		return // not seen yet (the next pass comes back), or already so
	}
	if err := s.annotate(ctx, want); err != nil {
		klog.FromContext(ctx).Error(err, "Publishing this node's advertised routes; retrying", "annotation", k8s.RoutesAdvertisedAnnotation, "value", want)
		return
	}
	klog.FromContext(ctx).Info("Published this node's advertised routes", "annotation", k8s.RoutesAdvertisedAnnotation, "domain", want)
}

func (s *bgpSpeaker) convergeLocked(ctx context.Context, view domain.NodeRouting) error {
	configured := map[netip.Addr]bool{}
	if view.Encapsulation == domain.Route && view.Speaker {
		for _, p := range view.Peers {
			configured[p.Address] = true
		}
	}
	s.configured.Store(&configured)
	if len(configured) == 0 {
		return s.withdrawLocked(ctx)
	}
	cfg := bgp.Config{RouterID: s.nodeIP, ASN: view.Peers[0].LocalASN, ListenPort: -1, OnSessionChange: s.sessionChanged}
	if s.speaker != nil {
		if err := s.speaker.Err(); err != nil {
			// Its process ended (a crash): start another; the sessions come back as after an
			// agent restart, graceful-restart peers having kept the routes.
			klog.FromContext(ctx).Error(err, "The BGP speaker ended; starting it again")
			s.speaker, s.config = nil, bgp.Config{}
		}
	}
	if s.speaker != nil && (s.config.RouterID != cfg.RouterID || s.config.ASN != cfg.ASN) {
		klog.FromContext(ctx).Info("Restarting the BGP speaker: its router ID or local ASN changed",
			"routerID", cfg.RouterID, "localASN", cfg.ASN)
		if err := s.stopLocked(ctx, false); err != nil {
			return err
		}
	}
	if s.speaker == nil {
		// The speaker outlives ctx: Run stops it once it knows whether to withdraw.
		sp, err := s.start(context.WithoutCancel(ctx), cfg)
		if err != nil {
			return err
		}
		s.speaker, s.config = sp, cfg
		klog.FromContext(ctx).Info("Started the BGP speaker", "routerID", cfg.RouterID, "localASN", cfg.ASN)
	}
	// Advertisements first, then peers: see the type's comment (graceful restart).
	if err := s.speaker.SetAdvertisements(s.advertisements(view)); err != nil {
		return fmt.Errorf("setting BGP advertisements: %w", err)
	}
	peers, err := s.peers(ctx, view)
	if err != nil {
		return err
	}
	if err := s.speaker.SetPeers(ctx, peers); err != nil {
		return fmt.Errorf("setting BGP peers: %w", err)
	}
	return nil
}

// advertisements are this node's pod CIDR and, with advertiseNonSpeakers, those of the domain's
// nodes that do not speak, each with its node IP as next hop.
func (s *bgpSpeaker) advertisements(view domain.NodeRouting) map[netip.Prefix]netip.Addr {
	want := map[netip.Prefix]netip.Addr{s.podCIDR: s.nodeIP}
	if !view.AdvertiseNonSpeakers {
		return want
	}
	model := s.model()
	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return want // a lister does not fail
	}
	for _, n := range nodes {
		if n.Name == s.nodeName || model.DomainOf(n.Labels) != view.Domain || model.Speaks(n.Labels) {
			continue
		}
		cidr, ok, err := k8s.NodePodCIDR(n)
		if err != nil || !ok {
			continue // the node reconciler reports a bad pod CIDR; none yet: not routable yet
		}
		ip, ok := nodeUnderlayIP(n)
		if !ok {
			continue
		}
		if _, taken := want[cidr]; !taken {
			want[cidr] = ip
		}
	}
	return want
}

// nodeUnderlayIP is the address a node's pods are reached at on its site: its VTEP's local
// address (public-ip, else InternalIP), as the direct routes use.
func nodeUnderlayIP(n *k8s.Node) (netip.Addr, bool) {
	if vtep, err := k8s.NodeVTEP(n); err == nil && vtep.LocalIP.IsValid() {
		return vtep.LocalIP, true
	}
	return k8s.InternalIP(n)
}

func (s *bgpSpeaker) model() *domain.Model {
	if s.domains == nil {
		return domain.DefaultModel()
	}
	return s.domains.Model()
}

// peers turns the view's peers into the speaker's, reading the passwords their Secrets hold.
func (s *bgpSpeaker) peers(ctx context.Context, view domain.NodeRouting) ([]bgp.PeerConfig, error) {
	out := make([]bgp.PeerConfig, 0, len(view.Peers))
	var errs []error
	for _, p := range view.Peers {
		pc := bgp.PeerConfig{
			Address: p.Address, Port: p.Port, ASN: p.PeerASN, LocalASN: p.LocalASN,
			HoldTime: p.HoldTime, MultihopTTL: p.MultihopTTL, LocalAddress: s.nodeIP,
		}
		if p.GracefulRestartTime > 0 {
			pc.GracefulRestart = bgp.GracefulRestart{Enabled: true, RestartTime: p.GracefulRestartTime}
		}
		if p.Password != (domain.SecretKeyRef{}) {
			password, err := s.password(ctx, p.Password)
			if err != nil {
				errs = append(errs, fmt.Errorf("peer %s: %w", p.Address, err))
				continue // leave this peer out (or as it was) rather than dial it without its password
			}
			pc.Password = password
		}
		out = append(out, pc)
	}
	if len(errs) > 0 {
		// Keep the peers whose password cannot be read as they are: removing them would withdraw
		// our routes from a gateway that had them over a working session.
		for _, old := range s.speaker.Peers() {
			if !slices.ContainsFunc(out, func(p bgp.PeerConfig) bool { return p.Address == old.Address }) &&
				slices.ContainsFunc(view.Peers, func(p domain.BGPPeer) bool { return p.Address == old.Address }) {
				out = append(out, old)
			}
		}
		if err := s.speaker.SetPeers(ctx, out); err != nil {
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// password reads a peer's TCP-MD5 password, once per view (setView has them read again).
func (s *bgpSpeaker) password(ctx context.Context, ref domain.SecretKeyRef) (string, error) {
	if p, ok := s.passwords[ref]; ok {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	secret, err := s.secrets.GetSecret(ctx, s.secretNamespace, ref.Name)
	if err != nil {
		return "", fmt.Errorf("reading the password from Secret %s/%s: %w", s.secretNamespace, ref.Name, err)
	}
	value, ok := secret.Data[ref.Key]
	if !ok {
		return "", fmt.Errorf("secret %s/%s has no key %q for the password", s.secretNamespace, ref.Name, ref.Key)
	}
	s.passwords[ref] = string(value)
	return string(value), nil
}

// establishedSince is when p's session came up: as this agent saw it (sessionChanged), else as
// the speaker reports it (a session that was up before this agent started). The speaker's own
// time is GoBGP's, in whole seconds: up to a second early, too coarse for publishSettle.
func (s *bgpSpeaker) establishedSince(p bgpstatus.PeerStatus) time.Time {
	s.establishedMu.Lock()
	defer s.establishedMu.Unlock()
	if t, ok := s.establishedAt[p.Address]; ok {
		return t
	}
	return p.Since
}

// sessionChanged is the speaker's session listener: a lost session is logged and recorded on the
// Node; every change refreshes the report.
func (s *bgpSpeaker) sessionChanged(c bgp.SessionChange) {
	s.establishedMu.Lock()
	if c.State == bgpstatus.StateEstablished {
		if s.establishedAt == nil {
			s.establishedAt = map[netip.Addr]time.Time{}
		}
		s.establishedAt[c.Peer] = time.Now()
	} else {
		delete(s.establishedAt, c.Peer)
	}
	s.establishedMu.Unlock()
	if configured := s.configured.Load(); c.Lost() && (configured == nil || !(*configured)[c.Peer]) {
		klog.InfoS("BGP session closed: the peer left the configuration", "peer", c.Peer, "peerASN", c.ASN)
	} else if c.Lost() {
		klog.InfoS("BGP session lost", "peer", c.Peer, "peerASN", c.ASN, "state", c.State, "reason", c.Reason)
		msg := fmt.Sprintf("BGP session with %s (AS %d) lost: now %s", c.Peer, c.ASN, c.State)
		if c.Reason != "" {
			msg += ": " + c.Reason
		}
		s.recorder.Event(s.nodeRef(), api.EventTypeWarning, ReasonBGPSessionLost, msg)
	} else if c.State == bgpstatus.StateEstablished {
		klog.InfoS("BGP session established", "peer", c.Peer, "peerASN", c.ASN)
	}
	s.kick()
}

// nodeRef is this node for events: Nodes' events name the node as their UID, as kubelet's do.
func (s *bgpSpeaker) nodeRef() *api.ObjectReference {
	return &api.ObjectReference{Kind: "Node", Name: s.nodeName, UID: types.UID(s.nodeName)}
}

// stop stops the speaker: withdraw sends peers a NOTIFICATION so they drop our routes
// (uninstall); otherwise they keep them through graceful restart (the agent restarts).
func (s *bgpSpeaker) stop(ctx context.Context, withdraw bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.speaker == nil {
		return nil
	}
	if withdraw {
		klog.FromContext(ctx).Info("Stopping the BGP speaker; peers withdraw this node's routes")
		s.setAnnotation(ctx, "")
	} else {
		klog.FromContext(ctx).Info("Stopping the BGP speaker for a restart; graceful-restart peers keep this node's routes")
	}
	return s.stopLocked(ctx, !withdraw)
}

// withdrawLocked stops a running speaker with a NOTIFICATION once the other nodes had time to move
// their traffic to VXLAN (the type's comment, make before break).
func (s *bgpSpeaker) withdrawLocked(ctx context.Context) error {
	if s.speaker == nil {
		return nil
	}
	s.setAnnotation(ctx, "")
	klog.FromContext(ctx).Info("This node stops speaking BGP; withdrawing its routes after the other nodes moved to VXLAN", "in", s.withdrawDelay)
	select {
	case <-ctx.Done():
	case <-time.After(s.withdrawDelay):
	}
	return s.stopLocked(ctx, false)
}

func (s *bgpSpeaker) stopLocked(ctx context.Context, keepRoutes bool) error {
	if s.speaker == nil {
		return nil
	}
	sp := s.speaker
	s.speaker, s.config = nil, bgp.Config{}
	if keepRoutes {
		return sp.StopForRestart(ctx)
	}
	return sp.Stop(ctx)
}

// updateReportLocked refreshes the report and rewrites bgp.json when it says something new.
func (s *bgpSpeaker) updateReportLocked(ctx context.Context, view domain.NodeRouting, errMsg string) {
	r := bgpstatus.Report{Node: s.nodeName, Domain: view.Domain, Error: errMsg}
	if s.speaker != nil {
		r.Speaking, r.RouterID, r.LocalASN = true, s.config.RouterID, s.config.ASN
		adv := s.speaker.Advertisements()
		for _, prefix := range slices.SortedFunc(maps.Keys(adv), comparePrefixes) {
			r.Advertised = append(r.Advertised, bgpstatus.Advertisement{Prefix: prefix, NextHop: adv[prefix]})
		}
		peers, err := s.speaker.Snapshot(ctx)
		if err != nil {
			klog.FromContext(ctx).Error(err, "Reading the BGP speaker's peers")
		}
		r.Peers = peers
	}
	if err := s.writeReportLocked(r); err != nil {
		klog.FromContext(ctx).Error(err, "Writing the BGP report", "path", bgpstatus.Path(s.runDir))
	}
}

// writeReportLocked publishes r to the metrics and writes it when it differs from the file's
// (apart from its time).
func (s *bgpSpeaker) writeReportLocked(r bgpstatus.Report) error {
	key, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding the BGP report: %w", err)
	}
	r.Updated = time.Now()
	s.report.Store(&r)
	if string(key) == string(s.written) {
		return nil
	}
	if err := bgpstatus.Write(s.runDir, &r); err != nil {
		return err
	}
	s.written = key
	return nil
}

// Report is the speaker's last report, for the metrics.
func (s *bgpSpeaker) Report() bgpstatus.Report { return *s.report.Load() }

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// annotateRoutesAdvertised sets this node's k8s.RoutesAdvertisedAnnotation to domain, or removes it
// for "" (a JSON merge patch touching nothing else).
func (a *Agent) annotateRoutesAdvertised(ctx context.Context, domain string) error {
	var value any // null: the merge patch deletes the key
	if domain != "" {
		value = domain
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]any{k8s.RoutesAdvertisedAnnotation: value}}})
	if err != nil {
		return fmt.Errorf("encoding the routes-advertised annotation: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.client.PatchNode(ctx, a.cfg.NodeName, patch); err != nil {
		return fmt.Errorf("patching node %s's routes-advertised annotation: %w", a.cfg.NodeName, err)
	}
	return nil
}
