package domain

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// A site whose two L2 segments each have a router interface; the site's nodes speak BGP only where
// labelled, and each speaker dials the router of its own segment. docs/domains.md shows the same.
const siteWithGateway = `
domains:
  cloud: [cloud-hz, cloud-sh]
  site-a:
    pools: [site-a, site-a-2]
    encapsulation: route
    bgp:
      localASN: 64512
      speakerSelector:
        matchLabels: {edgeplane.io/bgp-speaker: "true"}
      peers:
      - address: 172.31.0.1
        peerASN: 65000
        passwordSecretRef: {name: site-a-bgp, key: password}
        nodeSelector:
          matchLabels: {topology.edgeplane.io/segment: "1"}
      - address: 172.31.1.1
        peerASN: "65000"
        localASN: "1.10"
        holdTime: 30s
        gracefulRestartTime: 300
        port: 1179
        ebgpMultihop: 2
        nodeSelector:
          matchLabels: {topology.edgeplane.io/segment: "2"}
connectivity:
- domains: [cloud, site-a]
  mode: private
`

func TestRouteModeSite(t *testing.T) {
	m, err := Parse([]byte(siteWithGateway))
	if err != nil {
		t.Fatal(err)
	}
	if m.Encapsulation("site-a") != Route || m.Encapsulation("cloud") != VXLAN || m.Encapsulation("site-b") != VXLAN {
		t.Errorf("encapsulations: site-a %s cloud %s site-b %s", m.Encapsulation("site-a"), m.Encapsulation("cloud"), m.Encapsulation("site-b"))
	}
	if got := m.RouteDomains(); !slices.Equal(got, []string{"site-a"}) {
		t.Errorf("RouteDomains = %v", got)
	}
	// The long form groups pools exactly as the short form does.
	if m.DomainOfPool("site-a-2") != "site-a" || m.DomainOfPool("cloud-sh") != "cloud" {
		t.Error("pools of the long form not grouped")
	}
	if !m.Reachable("cloud", "site-a") {
		t.Error("connectivity lost next to routing")
	}

	seg1 := BGPPeer{Address: netip.MustParseAddr("172.31.0.1"), Port: 179, PeerASN: 65000, LocalASN: 64512,
		Password: SecretKeyRef{Name: "site-a-bgp", Key: "password"}, HoldTime: 90 * time.Second, GracefulRestartTime: 120 * time.Second}
	seg2 := BGPPeer{Address: netip.MustParseAddr("172.31.1.1"), Port: 1179, PeerASN: 65000, LocalASN: 1<<16 | 10,
		HoldTime: 30 * time.Second, GracefulRestartTime: 300 * time.Second, MultihopTTL: 2}
	speaker := map[string]string{DefaultPoolLabel: "site-a-2", "edgeplane.io/bgp-speaker": "true"}
	for name, tc := range map[string]struct {
		labels map[string]string
		want   NodeRouting
	}{
		"speaker in segment 1": {
			labels: with(speaker, "topology.edgeplane.io/segment", "1"),
			want:   NodeRouting{Domain: "site-a", Encapsulation: Route, Speaker: true, Peers: []BGPPeer{seg1}},
		},
		"speaker in segment 2": {
			labels: with(speaker, "topology.edgeplane.io/segment", "2"),
			want:   NodeRouting{Domain: "site-a", Encapsulation: Route, Speaker: true, Peers: []BGPPeer{seg2}},
		},
		"speaker in no segment": {
			labels: speaker,
			want:   NodeRouting{Domain: "site-a", Encapsulation: Route, Speaker: true},
		},
		"route-mode node that does not speak": {
			labels: map[string]string{DefaultPoolLabel: "site-a", "topology.edgeplane.io/segment": "1"},
			want:   NodeRouting{Domain: "site-a", Encapsulation: Route},
		},
		"vxlan domain with the speaker label": {
			labels: with(map[string]string{DefaultPoolLabel: "cloud-hz"}, "edgeplane.io/bgp-speaker", "true"),
			want:   NodeRouting{Domain: "cloud", Encapsulation: VXLAN},
		},
		"no pool": {
			want: NodeRouting{Domain: Default, Encapsulation: VXLAN},
		},
	} {
		t.Run(name, func(t *testing.T) {
			n := tc.labels
			got := m.NodeRouting(labels.Set(n))
			if !got.Equal(tc.want) {
				t.Fatalf("NodeRouting = %+v\nwant %+v", got, tc.want)
			}
			if m.Speaks(labels.Set(n)) != tc.want.Speaker {
				t.Errorf("Speaks = %t, NodeRouting says %t", m.Speaks(labels.Set(n)), tc.want.Speaker)
			}
		})
	}
	if s := seg1.String(); s != "172.31.0.1:179 AS65000 local AS64512 hold 1m30s graceful-restart 2m0s password secret site-a-bgp/password" {
		t.Errorf("String = %q", s)
	}
	if s := seg2.String(); s != "172.31.1.1:1179 AS65000 local AS65546 hold 30s graceful-restart 5m0s ebgp-multihop 2" {
		t.Errorf("String = %q", s)
	}
}

func with(labels map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for key, val := range labels {
		out[key] = val
	}
	return out
}

// Without speakerSelector every node of the domain speaks to every peer (no nodeSelector);
// graceful restart 0 is an explicit choice, kept.
func TestRouteModeEveryNodeSpeaks(t *testing.T) {
	m, err := Parse([]byte(`
domains:
  default:
    encapsulation: route
    bgp:
      peers:
      - {address: 10.0.0.1, peerASN: 65000, localASN: 4200000000, holdTime: 3, gracefulRestartTime: 0s}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := NodeRouting{Domain: Default, Encapsulation: Route, Speaker: true, Peers: []BGPPeer{{
		Address: netip.MustParseAddr("10.0.0.1"), Port: 179, PeerASN: 65000, LocalASN: 4200000000, HoldTime: 3 * time.Second}}}
	if got := m.NodeRouting(labels.Set(map[string]string{"any": "label"})); !got.Equal(want) {
		t.Fatalf("NodeRouting = %+v, want %+v", got, want)
	}
	if s := want.Peers[0].String(); !strings.Contains(s, "hold 3s graceful-restart off") || strings.Contains(s, "password") {
		t.Errorf("String = %q", s)
	}
}

func TestRouteModeExplicitVXLAN(t *testing.T) {
	m, err := Parse([]byte("domains:\n  cloud: {pools: [a, b], encapsulation: vxlan}\n  edge: null\n"))
	if err != nil {
		t.Fatal(err)
	}
	short, _ := Parse([]byte("domains:\n  cloud: [a, b]\n  edge: []\n"))
	if !m.Equal(short) || m.Encapsulation("cloud") != VXLAN || len(m.RouteDomains()) != 0 {
		t.Fatal("explicit vxlan must be the short form's model")
	}
}

// Every change of the routing is a change of the model, so that DomainConfig tells its listeners.
func TestRouteModeEqual(t *testing.T) {
	base := "domains:\n  s:\n    encapsulation: route\n    bgp:\n      localASN: 64512\n      peers:\n      - {address: 10.0.0.1, peerASN: 65000%s}\n%s"
	a, err := Parse([]byte(strings.Replace(strings.Replace(base, "%s", "", 1), "%s", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	same, _ := Parse([]byte(strings.Replace(strings.Replace(base, "%s", "", 1), "%s", "", 1)))
	if !a.Equal(same) {
		t.Fatal("identical configurations differ")
	}
	for name, variant := range map[string][2]string{
		"hold time":        {", holdTime: 30", ""},
		"graceful restart": {", gracefulRestartTime: 60", ""},
		"port":             {", port: 1179", ""},
		"multihop":         {", ebgpMultihop: 2", ""},
		"password":         {", passwordSecretRef: {name: s, key: k}", ""},
		"node selector":    {", nodeSelector: {matchLabels: {a: b}}", ""},
		"speakers":         {"", "      speakerSelector: {matchLabels: {a: b}}\n"},
		"advertise":        {"", "      speakerSelector: {matchLabels: {a: b}}\n      advertiseNonSpeakers: true\n"},
	} {
		yaml := strings.Replace(strings.Replace(base, "%s", variant[0], 1), "%s", variant[1], 1)
		b, err := Parse([]byte(yaml))
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, yaml)
		}
		if a.Equal(b) {
			t.Errorf("%s: a changed routing compares equal", name)
		}
	}
}

func TestRouteModeErrors(t *testing.T) {
	peer := func(fields string) string {
		return "domains:\n  site-a:\n    encapsulation: route\n    bgp:\n      peers:\n      - {" + fields + "}\n"
	}
	ok := "address: 172.31.0.1, peerASN: 65000, localASN: 64512"
	if _, err := Parse([]byte(peer(ok))); err != nil {
		t.Fatalf("the base peer must be valid: %v", err)
	}
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown encapsulation": {"domains:\n  site-a: {encapsulation: geneve}\n", `domains.site-a: encapsulation "geneve": want "vxlan" or "route"`},
		"route without bgp":     {"domains:\n  site-a: {encapsulation: route}\n", "domains.site-a: encapsulation route needs bgp.peers"},
		"route without peers":   {"domains:\n  site-a: {encapsulation: route, bgp: {localASN: 64512}}\n", "needs bgp.peers"},
		"bgp on vxlan":          {"domains:\n  site-a:\n    bgp: {peers: [{" + ok + "}]}\n", "bgp is only for encapsulation route"},
		"unknown domain field":  {"domains:\n  site-a: {encapsulaton: route}\n", `domains.site-a: json: unknown field "encapsulaton"`},
		"unknown peer field":    {peer(ok + ", holdtimer: 9"), `unknown field "holdtimer"`},
		"domain is a string":    {"domains:\n  site-a: route\n", "domains.site-a: want a list of pools or an object (pools, encapsulation, bgp), got \"route\""},
		"bad pool in long form": {"domains:\n  site-a: {pools: ['a b']}\n", `pool "a b" is not a label value`},

		"missing address":     {peer("peerASN: 65000, localASN: 64512"), "bgp.peers[0]: address is required"},
		"bad address":         {peer("address: 172.31.0.256, peerASN: 65000, localASN: 64512"), `address "172.31.0.256" is not an IP address`},
		"ipv6 address":        {peer("address: 'fd00::1', peerASN: 65000, localASN: 64512"), "want an IPv4 address"},
		"unspecified address": {peer("address: 0.0.0.0, peerASN: 65000, localASN: 64512"), "0.0.0.0 cannot be a BGP peer"},
		"multicast address":   {peer("address: 224.0.0.5, peerASN: 65000, localASN: 64512"), "cannot be a BGP peer"},
		"bad port":            {peer(ok + ", port: 70000"), "port 70000: want 1-65535"},
		"multihop too far":    {peer(ok + ", ebgpMultihop: 256"), "ebgpMultihop 256: want a TTL of 1-255"},
		"multihop on iBGP":    {peer("address: 172.31.0.1, peerASN: 64512, localASN: 64512, ebgpMultihop: 2"), "ebgpMultihop is for eBGP peers"},

		"missing peer ASN":    {peer("address: 172.31.0.1, localASN: 64512"), "peerASN is required"},
		"missing local ASN":   {peer("address: 172.31.0.1, peerASN: 65000"), "localASN is required (here or as bgp.localASN)"},
		"ASN zero":            {peer("address: 172.31.0.1, peerASN: 0, localASN: 64512"), "peerASN: AS number 0 is reserved"},
		"AS_TRANS":            {peer("address: 172.31.0.1, peerASN: 23456, localASN: 64512"), "AS number 23456 is reserved"},
		"ASN 65535":           {peer("address: 172.31.0.1, peerASN: 65000, localASN: 65535"), "localASN: AS number 65535 is reserved"},
		"ASN too big":         {peer("address: 172.31.0.1, peerASN: 4294967296, localASN: 64512"), `peerASN: AS number "4294967296": want 1-4294967295`},
		"ASN negative":        {peer("address: 172.31.0.1, peerASN: -1, localASN: 64512"), `AS number "-1"`},
		"ASN not a number":    {peer("address: 172.31.0.1, peerASN: AS65000, localASN: 64512"), `AS number "AS65000"`},
		"asdot unquoted":      {peer("address: 172.31.0.1, peerASN: 1.10, localASN: 64512"), `write asdot AS numbers quoted ("1.10")`},
		"asdot out of range":  {peer("address: 172.31.0.1, peerASN: '1.65536', localASN: 64512"), `AS number "1.65536"`},
		"bad domain localASN": {"domains:\n  s:\n    encapsulation: route\n    bgp:\n      localASN: 0\n      peers: [{address: 10.0.0.1, peerASN: 65000}]\n", "bgp.localASN: AS number 0 is reserved"},

		"hold time 1s":        {peer(ok + ", holdTime: 1"), "holdTime 1s: want 3s to 65535s"},
		"hold time 0":         {peer(ok + ", holdTime: 0"), "holdTime 0 (no keepalives) is not supported: the speaker (GoBGP) always sends keepalives"},
		"hold time 2s":        {peer(ok + ", holdTime: 2s"), "holdTime 2s: want 3s"},
		"hold time too long":  {peer(ok + ", holdTime: 65536"), "holdTime 18h12m16s: want 3s to 65535s"},
		"hold time fraction":  {peer(ok + ", holdTime: 3.5s"), `holdTime: "3.5s": want whole seconds`},
		"hold time negative":  {peer(ok + ", holdTime: -5s"), `holdTime: "-5s"`},
		"hold time no unit":   {peer(ok + ", holdTime: 'ninety'"), `holdTime: "ninety": want whole seconds, as a number (90) or a duration`},
		"restart time 4096":   {peer(ok + ", gracefulRestartTime: 4096"), "gracefulRestartTime 1h8m16s: want at most 4095s"},
		"inline password":     {peer(ok + ", password: hunter2"), "password: inline passwords are not accepted"},
		"bad secret name":     {peer(ok + ", passwordSecretRef: {name: Bad_Name, key: k}"), `passwordSecretRef.name "Bad_Name"`},
		"bad secret key":      {peer(ok + ", passwordSecretRef: {name: s, key: 'a/b'}"), `passwordSecretRef.key "a/b"`},
		"bad node selector":   {peer(ok + ", nodeSelector: {matchExpressions: [{key: a, operator: Near}]}"), "bgp.peers[0]: nodeSelector:"},
		"bad speakerSelector": {"domains:\n  s:\n    encapsulation: route\n    bgp:\n      speakerSelector: {matchLabels: {'a b': c}}\n      peers: [{" + ok + "}]\n", "bgp.speakerSelector:"},
		"advertise needs selector": {"domains:\n  s:\n    encapsulation: route\n    bgp:\n      advertiseNonSpeakers: true\n      peers: [{" + ok + "}]\n",
			"bgp.advertiseNonSpeakers needs bgp.speakerSelector"},
		"duplicate peer": {"domains:\n  s:\n    encapsulation: route\n    bgp:\n      localASN: 64512\n      peers:\n      - {address: 10.0.0.1, peerASN: 65000}\n      - {address: 10.0.0.1, peerASN: 65001, port: 1179}\n",
			"bgp.peers[1]: peer 10.0.0.1 is already bgp.peers[0]"},
		"several in one peer": {peer("address: x, peerASN: 0"), "\ndomains.site-a: bgp.peers[0]: localASN is required"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v\nwant an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error repeats the password: %v", err)
			}
		})
	}
}
