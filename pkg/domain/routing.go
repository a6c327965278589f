package domain

// Route mode: how a domain's nodes carry pod traffic among themselves. The configuration's long
// form of a domain (DomainSpec) says `encapsulation: vxlan | route` and, for route, the BGP
// routers that learn the domain's pod CIDRs (bgp.peers) and which nodes speak BGP to them. Parse
// turns it into the Model's routing, and Model.NodeRouting answers one node's question "is my
// domain route mode, do I speak BGP, to which peers?" (docs/domains.md "Route mode").

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Encapsulation is how pod traffic travels between two nodes of one domain.
type Encapsulation string

const (
	// VXLAN tunnels pod traffic to the owning node (the default).
	VXLAN Encapsulation = "vxlan"
	// Route sends pod traffic unencapsulated on the underlay; the domain's routers learn every
	// node's pod CIDR over BGP.
	Route Encapsulation = "route"
)

// BGP defaults and limits (RFC 4271, RFC 4724).
const (
	DefaultBGPPort             = 179
	DefaultHoldTime            = 90 * time.Second
	DefaultGracefulRestartTime = 120 * time.Second
	MinHoldTime                = 3 * time.Second
	maxHoldTime                = 65535 * time.Second // a 16-bit field of OPEN
	maxGracefulRestartTime     = 4095 * time.Second  // a 12-bit field of the capability
)

// prefixed puts prefix before each error err joins, so that every line of a joined error says
// where it is.
func prefixed(prefix string, err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, prefixed(prefix, e)...)
		}
		return out
	}
	return []error{fmt.Errorf("%s%w", prefix, err)}
}

// routing is a domain's validated routing; the zero value is vxlan.
type routing struct {
	encap                Encapsulation
	speakers             labels.Selector // nil: every node of the domain
	advertiseNonSpeakers bool
	peers                []peerRule
}

type peerRule struct {
	peer  BGPPeer
	nodes labels.Selector // nil: every speaker
}

// BGPPeer is one router a speaker dials, validated, with the defaults applied.
type BGPPeer struct {
	Address  netip.Addr
	Port     uint16
	PeerASN  uint32
	LocalASN uint32
	// Password is the Secret key holding the TCP-MD5 password; the zero value: no password.
	Password            SecretKeyRef
	HoldTime            time.Duration // 3 s to 65535 s
	GracefulRestartTime time.Duration // 0: graceful restart off
	MultihopTTL         uint8         // 0: directly connected (eBGP's TTL 1)
}

// String is the peer as a router's configuration would name it, for logs.
func (p BGPPeer) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s AS%d local AS%d hold %s", netip.AddrPortFrom(p.Address, p.Port), p.PeerASN, p.LocalASN, p.HoldTime)
	if p.GracefulRestartTime > 0 {
		fmt.Fprintf(&b, " graceful-restart %s", p.GracefulRestartTime)
	} else {
		b.WriteString(" graceful-restart off")
	}
	if p.MultihopTTL > 0 {
		fmt.Fprintf(&b, " ebgp-multihop %d", p.MultihopTTL)
	}
	if p.Password != (SecretKeyRef{}) {
		fmt.Fprintf(&b, " password secret %s/%s", p.Password.Name, p.Password.Key)
	}
	return b.String()
}

// newRouting validates one domain's spec.
func newRouting(spec DomainSpec) (routing, error) {
	r := routing{encap: spec.Encapsulation}
	if r.encap == "" {
		r.encap = VXLAN
	}
	switch r.encap {
	case VXLAN:
		if spec.BGP != nil {
			return routing{}, errors.New("bgp is only for encapsulation route (this domain is vxlan)")
		}
		return r, nil
	case Route:
	default:
		return routing{}, fmt.Errorf("encapsulation %q: want %q or %q", spec.Encapsulation, VXLAN, Route)
	}
	if spec.BGP == nil || len(spec.BGP.Peers) == 0 {
		return routing{}, errors.New("encapsulation route needs bgp.peers: the routers that learn this domain's pod CIDRs")
	}
	b := spec.BGP
	var errs []error
	if b.SpeakerSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(b.SpeakerSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp.speakerSelector: %w", err))
		}
		r.speakers = sel
	}
	if b.AdvertiseNonSpeakers && b.SpeakerSelector == nil {
		errs = append(errs, errors.New("bgp.advertiseNonSpeakers needs bgp.speakerSelector (without it every node speaks)"))
	}
	r.advertiseNonSpeakers = b.AdvertiseNonSpeakers
	var domainASN uint32
	if b.LocalASN != "" {
		asn, err := parseASN(b.LocalASN)
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp.localASN: %w", err))
		}
		domainASN = asn
	}
	seen := map[netip.Addr]int{}
	for i, pc := range b.Peers {
		rule, err := newPeerRule(pc, b.LocalASN != "", domainASN)
		if err != nil {
			errs = append(errs, prefixed(fmt.Sprintf("bgp.peers[%d]: ", i), err)...)
			continue
		}
		if j, dup := seen[rule.peer.Address]; dup {
			errs = append(errs, fmt.Errorf("bgp.peers[%d]: peer %s is already bgp.peers[%d]", i, rule.peer.Address, j))
			continue
		}
		seen[rule.peer.Address] = i
		r.peers = append(r.peers, rule)
	}
	if len(errs) > 0 {
		return routing{}, errors.Join(errs...)
	}
	return r, nil
}

func newPeerRule(pc BGPPeerConfig, haveDomainASN bool, domainASN uint32) (peerRule, error) {
	var errs []error
	p := BGPPeer{Port: DefaultBGPPort, LocalASN: domainASN, HoldTime: DefaultHoldTime, GracefulRestartTime: DefaultGracefulRestartTime}
	addr, err := parsePeerAddress(pc.Address)
	if err != nil {
		errs = append(errs, err)
	}
	p.Address = addr
	switch {
	case pc.Port == 0:
	case pc.Port < 0 || pc.Port > 65535:
		errs = append(errs, fmt.Errorf("port %d: want 1-65535 (default %d)", pc.Port, DefaultBGPPort))
	default:
		p.Port = uint16(pc.Port)
	}
	if pc.PeerASN == "" {
		errs = append(errs, errors.New("peerASN is required"))
	} else if p.PeerASN, err = parseASN(pc.PeerASN); err != nil {
		errs = append(errs, fmt.Errorf("peerASN: %w", err))
	}
	switch {
	case pc.LocalASN != "":
		if p.LocalASN, err = parseASN(pc.LocalASN); err != nil {
			errs = append(errs, fmt.Errorf("localASN: %w", err))
		}
	case !haveDomainASN:
		errs = append(errs, errors.New("localASN is required (here or as bgp.localASN)"))
	}
	if pc.Password != nil {
		errs = append(errs, errors.New("password: inline passwords are not accepted in a ConfigMap; "+
			"put the password in a Secret in the ConfigMap's namespace and name it with passwordSecretRef: {name, key}"))
	}
	if ref := pc.PasswordSecretRef; ref != nil {
		if msgs := validation.IsDNS1123Subdomain(ref.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("passwordSecretRef.name %q: %s", ref.Name, strings.Join(msgs, "; ")))
		}
		if msgs := validation.IsConfigMapKey(ref.Key); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("passwordSecretRef.key %q: %s", ref.Key, strings.Join(msgs, "; ")))
		}
		p.Password = *ref
	}
	if pc.HoldTime != nil {
		d, err := parseSeconds(*pc.HoldTime)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("holdTime: %w", err))
		case d == 0:
			errs = append(errs, errors.New("holdTime 0 (no keepalives) is not supported: the speaker (GoBGP) always "+
				"sends keepalives; use 3s to 65535s, or omit it for 90s"))
		case d < MinHoldTime || d > maxHoldTime:
			errs = append(errs, fmt.Errorf("holdTime %s: want 3s to 65535s (RFC 4271)", d))
		}
		p.HoldTime = d
	}
	if pc.GracefulRestartTime != nil {
		d, err := parseSeconds(*pc.GracefulRestartTime)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("gracefulRestartTime: %w", err))
		case d > maxGracefulRestartTime:
			errs = append(errs, fmt.Errorf("gracefulRestartTime %s: want at most 4095s (RFC 4724), or 0 for off", d))
		}
		p.GracefulRestartTime = d
	}
	switch {
	case pc.EBGPMultihop == 0:
	case pc.EBGPMultihop < 0 || pc.EBGPMultihop > 255:
		errs = append(errs, fmt.Errorf("ebgpMultihop %d: want a TTL of 1-255", pc.EBGPMultihop))
	case pc.PeerASN != "" && p.PeerASN == p.LocalASN:
		errs = append(errs, errors.New("ebgpMultihop is for eBGP peers; this one is iBGP (peerASN equals localASN)"))
	default:
		p.MultihopTTL = uint8(pc.EBGPMultihop)
	}
	rule := peerRule{peer: p}
	if pc.NodeSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(pc.NodeSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("nodeSelector: %w", err))
		}
		rule.nodes = sel
	}
	if len(errs) > 0 {
		return peerRule{}, errors.Join(errs...)
	}
	return rule, nil
}

func (r routing) equal(o routing) bool {
	return r.encap == o.encap && selectorString(r.speakers) == selectorString(o.speakers) &&
		r.advertiseNonSpeakers == o.advertiseNonSpeakers &&
		slices.EqualFunc(r.peers, o.peers, func(a, b peerRule) bool {
			return a.peer == b.peer && selectorString(a.nodes) == selectorString(b.nodes)
		})
}

// selectorString tells a nil selector (every node) from one that matches every node, though
// both select alike, so that Equal means "configured alike".
func selectorString(s labels.Selector) string {
	if s == nil {
		return "\x00nil"
	}
	return s.String()
}

// Encapsulation is the encapsulation between the nodes of domain name.
func (m *Model) Encapsulation(name string) Encapsulation {
	if r, ok := m.routing[name]; ok {
		return r.encap
	}
	return VXLAN
}

// RouteDomains are the domains in route mode, sorted.
func (m *Model) RouteDomains() []string {
	out := []string{} // logged: [] rather than null
	for _, name := range sortedKeys(m.routing) {
		if m.routing[name].encap == Route {
			out = append(out, name)
		}
	}
	return out
}

// Speaks reports whether a node with these labels runs a BGP speaker: its domain is in route
// mode and the domain's speakerSelector (if any) matches its labels.
func (m *Model) Speaks(nodeLabels labels.Labels) bool {
	r, ok := m.routing[m.DomainOf(nodeLabels)]
	if !ok || r.encap != Route {
		return false
	}
	return r.speakers == nil || r.speakers.Matches(nodeLabels)
}

// NodeRouting is one node's view of its domain's routing: what its agent is to do in route mode.
type NodeRouting struct {
	Domain        string
	Encapsulation Encapsulation
	// Speaker: this node runs a BGP speaker, advertising its own pod CIDR to Peers.
	Speaker bool
	// AdvertiseNonSpeakers: as a speaker, it also advertises the pod CIDRs of its domain's nodes
	// that do not speak (Model.Speaks), with those nodes as next hops.
	AdvertiseNonSpeakers bool
	// Peers are the routers this node's speaker dials, in configuration order; none when it does
	// not speak.
	Peers []BGPPeer
}

// Equal reports whether two views ask the same of the node.
func (v NodeRouting) Equal(o NodeRouting) bool {
	return v.Domain == o.Domain && v.Encapsulation == o.Encapsulation && v.Speaker == o.Speaker &&
		v.AdvertiseNonSpeakers == o.AdvertiseNonSpeakers && slices.Equal(v.Peers, o.Peers)
}

// NodeRouting is the view of its domain's routing of a node with these labels.
func (m *Model) NodeRouting(nodeLabels labels.Labels) NodeRouting {
	v := NodeRouting{Domain: m.DomainOf(nodeLabels), Encapsulation: VXLAN}
	r, ok := m.routing[v.Domain]
	if !ok {
		return v
	}
	v.Encapsulation = r.encap
	if !m.Speaks(nodeLabels) {
		return v
	}
	v.Speaker, v.AdvertiseNonSpeakers = true, r.advertiseNonSpeakers
	for _, rule := range r.peers {
		if rule.nodes == nil || rule.nodes.Matches(nodeLabels) {
			v.Peers = append(v.Peers, rule.peer)
		}
	}
	return v
}
