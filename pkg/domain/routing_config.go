package domain

// The route-mode part of config.yaml as written (DomainSpec and its BGP), its strict decoding, and
// the parsing of the values routers' operators write their own way: AS numbers (asplain, asdot),
// times (seconds or durations), peer addresses. routing.go validates and models it.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// HoldTime: 3 s to 65535 s; default 90 s. RFC 4271's 0 (no keepalives) is refused: GoBGP,
	// the speaker, cannot propose it.
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
