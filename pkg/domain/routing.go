package domain

// Route mode: how a domain's nodes carry pod traffic among themselves. The configuration's long
// form of a domain (DomainSpec) says `encapsulation: vxlan | route` and, for route, the BGP
// routers that learn the domain's pod CIDRs (bgp.peers) and which nodes speak BGP to them. Parse
// turns it into the Model's routing, and Model.NodeRouting answers one node's question "is my
// domain route mode, do I speak BGP, to which peers?" (docs/domains.md "Route mode").

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
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

// Domains is Config.Domains: domain name -> its pools and, in the long form, its routing. Each
// entry is decoded on its own so that an error names its domain.
type Domains map[string]DomainSpec

// DomainSpec is one domain of the configuration. In YAML it is either a list of pools (the short
// form, vxlan) or an object with pools, encapsulation and bgp.
type DomainSpec struct {
	// Pools grouped into this domain. A pool named like the domain belongs to it anyway (unless
	// another domain lists it), so `site-a: {encapsulation: route, ...}` needs no pools.
	Pools []string `json:"pools,omitempty"`
	// Encapsulation between this domain's nodes: vxlan (default) or route.
	Encapsulation Encapsulation `json:"encapsulation,omitempty"`
	// BGP is required with encapsulation route, refused otherwise.
	BGP *BGPConfig `json:"bgp,omitempty"`
}

// BGPConfig is a route-mode domain's BGP: its peers and which of its nodes speak BGP.
type BGPConfig struct {
	// LocalASN is the AS number the domain's nodes speak as, for peers that do not set their own.
	LocalASN ASNumber `json:"localASN,omitempty"`
	// SpeakerSelector chooses the nodes of the domain that run a BGP speaker; omitted, every node
	// of the domain does.
	SpeakerSelector *metav1.LabelSelector `json:"speakerSelector,omitempty"`
	// AdvertiseNonSpeakers makes the speakers also advertise the pod CIDRs of the domain's nodes
	// that do not speak, with those nodes as next hops. Needs SpeakerSelector.
	AdvertiseNonSpeakers bool `json:"advertiseNonSpeakers,omitempty"`
	// Peers are the routers the speakers dial.
	Peers []BGPPeerConfig `json:"peers,omitempty"`
}

// BGPPeerConfig is one router of the domain as configured.
type BGPPeerConfig struct {
	Address  string   `json:"address"`
	Port     int      `json:"port,omitempty"` // default 179
	PeerASN  ASNumber `json:"peerASN"`
	LocalASN ASNumber `json:"localASN,omitempty"` // default bgp.localASN
	// PasswordSecretRef names the TCP-MD5 password (RFC 2385): a key of a Secret in the
	// ConfigMap's namespace. Omitted: no password.
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
	// Password is only here to refuse an inline password with a message that says what to do
	// instead: a ConfigMap is no place for a secret (it is readable widely and echoed in logs).
	Password *string `json:"password,omitempty"`
	// HoldTime: 0 (no keepalives, RFC 4271) or 3 s to 65535 s; default 90 s.
	HoldTime *Seconds `json:"holdTime,omitempty"`
	// GracefulRestartTime is how long the peer keeps our routes while the agent restarts:
	// 1 s to 4095 s, 0 turns graceful restart off; default 120 s.
	GracefulRestartTime *Seconds `json:"gracefulRestartTime,omitempty"`
	// EBGPMultihop is the TTL of the session's packets toward an eBGP peer that is not directly
	// connected (1-255); omitted, the peer must be on the node's segment (TTL 1).
	EBGPMultihop int `json:"ebgpMultihop,omitempty"`
	// NodeSelector narrows the speakers that dial this peer (e.g. the router of one L2 segment);
	// omitted, every speaker of the domain does.
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

// SecretKeyRef is a key of a Secret in the domain ConfigMap's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// ASNumber is an AS number as written: an integer (asplain) or a string, asplain ("65000") or
// asdot ("1.10" = 65546). YAML reads an unquoted 1.10 as the number 1.1, so asdot must be quoted.
type ASNumber string

// UnmarshalJSON keeps the text; New validates it, so that the error names the peer. An unquoted
// number with a dot is refused here: its digits are already lost (1.10 became 1.1).
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	s, err := scalarText(b)
	if err == nil && b[0] != '"' && strings.ContainsAny(s, ".eE") {
		return fmt.Errorf("AS number %s is a YAML number: write asdot AS numbers quoted (\"1.10\")", s)
	}
	*a = ASNumber(s)
	return err
}

// Seconds is a time in whole seconds as written: an integer (seconds, as routers write hold
// times) or a duration string ("90s", "2m").
type Seconds string

// UnmarshalJSON keeps the text; New validates it.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	t, err := scalarText(b)
	*s = Seconds(t)
	return err
}

func scalarText(b []byte) (string, error) {
	if len(b) > 0 && b[0] == '"' {
		var s string
		err := json.Unmarshal(b, &s)
		return s, err
	}
	if len(b) == 0 || b[0] == '{' || b[0] == '[' || string(b) == "null" || string(b) == "true" || string(b) == "false" {
		return "", fmt.Errorf("want a number or a string, got %s", b)
	}
	return string(b), nil
}

// UnmarshalJSON decodes each domain on its own (strictly, like the rest of the file), so that an
// error says which domain it is about.
func (d *Domains) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("domains: %w", err)
	}
	out := make(Domains, len(raw))
	var errs []error
	for _, name := range sortedKeys(raw) {
		spec, err := decodeDomainSpec(raw[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("domains.%s: %w", name, err))
			continue
		}
		out[name] = spec
	}
	*d = out
	return errors.Join(errs...)
}

func decodeDomainSpec(b []byte) (DomainSpec, error) {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		return DomainSpec{}, nil
	case len(b) > 0 && b[0] == '[':
		var pools []string
		if err := json.Unmarshal(b, &pools); err != nil {
			return DomainSpec{}, fmt.Errorf("pools: %w", err)
		}
		return DomainSpec{Pools: pools}, nil
	case len(b) > 0 && b[0] == '{':
		var spec DomainSpec
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			return DomainSpec{}, err
		}
		return spec, nil
	default:
		return DomainSpec{}, fmt.Errorf("want a list of pools or an object (pools, encapsulation, bgp), got %s", b)
	}
}

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
	HoldTime            time.Duration // 0: no keepalives
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
		case d != 0 && (d < MinHoldTime || d > maxHoldTime):
			errs = append(errs, fmt.Errorf("holdTime %s: want 0 (no keepalives) or 3s to 65535s (RFC 4271)", d))
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

// parsePeerAddress accepts the IPv4 address of a router: not unspecified, multicast or broadcast.
// Loopback is allowed (a routing daemon on the node itself).
func parsePeerAddress(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("address is required")
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("address %q is not an IP address", s)
	case !a.Is4():
		return netip.Addr{}, fmt.Errorf("address %s: want an IPv4 address (pod CIDRs are IPv4)", s)
	case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fmt.Errorf("address %s cannot be a BGP peer", s)
	}
	return a, nil
}

// parseASN reads asplain or asdot and refuses the numbers no router may use: 0, AS_TRANS 23456
// (RFC 6793) and the last 16- and 32-bit numbers (RFC 7300).
func parseASN(a ASNumber) (uint32, error) {
	s := string(a)
	var asn uint64
	var err error
	if hi, lo, dot := strings.Cut(s, "."); dot {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("AS number %q: want 1-4294967295 or asdot 1.0-65535.65535 (quoted in YAML)", s)
		}
		asn = h<<16 | l
	} else if asn, err = strconv.ParseUint(s, 10, 32); err != nil {
		return 0, fmt.Errorf("AS number %q: want 1-4294967295 or asdot 1.0-65535.65535 (quoted in YAML)", s)
	}
	switch asn {
	case 0, 23456, 65535, 4294967295:
		return 0, fmt.Errorf("AS number %d is reserved (0, AS_TRANS 23456, 65535 and 4294967295 are never a speaker's)", asn)
	}
	return uint32(asn), nil
}

// parseSeconds reads whole seconds: an integer or a duration string.
func parseSeconds(s Seconds) (time.Duration, error) {
	if n, err := strconv.ParseUint(string(s), 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(string(s))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want whole seconds, as a number (90) or a duration (90s, 2m)", s)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("%q: want whole seconds (BGP carries seconds)", s)
	}
	return d, nil
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
	var out []string
	for _, name := range sortedKeys(m.routing) {
		if m.routing[name].encap == Route {
			out = append(out, name)
		}
	}
	return out
}

// Speaks reports whether the node runs a BGP speaker: its domain is in route mode and the
// domain's speakerSelector (if any) matches its labels.
func (m *Model) Speaks(node *corev1.Node) bool {
	r, ok := m.routing[m.DomainOf(node)]
	if !ok || r.encap != Route {
		return false
	}
	return r.speakers == nil || r.speakers.Matches(labels.Set(node.Labels))
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

// NodeRouting is the node's view of its domain's routing, from its labels.
func (m *Model) NodeRouting(node *corev1.Node) NodeRouting {
	v := NodeRouting{Domain: m.DomainOf(node), Encapsulation: VXLAN}
	r, ok := m.routing[v.Domain]
	if !ok {
		return v
	}
	v.Encapsulation = r.encap
	if !m.Speaks(node) {
		return v
	}
	v.Speaker, v.AdvertiseNonSpeakers = true, r.advertiseNonSpeakers
	set := labels.Set(node.Labels)
	for _, rule := range r.peers {
		if rule.nodes == nil || rule.nodes.Matches(set) {
			v.Peers = append(v.Peers, rule.peer)
		}
	}
	return v
}
