package service

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// TestFrontends: the frontends of each kind of Service, the endpoints they use, the traffic
// policies and session affinity. (Topology, NodePort isolation and invalid input have files of
// their own.)
func TestFrontends(t *testing.T) {
	runFrontendCases(t, []frontendCase{
		{
			name: "ClusterIP",
			svc:  clusterIPService(),
			want: want{clusterIP80: "- | " + all4},
		},
		{
			name: "ports by name and protocol, target ports from the slices",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.Ports = []api.ServicePort{
					{Name: "dns", Protocol: api.ProtocolUDP, Port: 53},
					{Name: "dns-tcp", Protocol: api.ProtocolTCP, Port: 53},
					{Name: "sig", Protocol: api.ProtocolSCTP, Port: 3868},
					{Name: "unmatched", Protocol: api.ProtocolTCP, Port: 81},
				}
			}),
			slices: []*api.EndpointSlice{
				slice([]port{{"dns", api.ProtocolUDP, 5353}, {"dns-tcp", api.ProtocolTCP, 5353}, {"sig", api.ProtocolSCTP, 3868}}, epSelf),
				// A rollout renumbered the named target port: each slice says its own.
				slice([]port{{"dns", api.ProtocolUDP, 5354}, {"dns-tcp", api.ProtocolUDP, 1}}, epN2),
			},
			want: want{
				"internal 10.96.0.10:53/udp":    "- | 10.244.0.5:5353,10.244.1.5:5354",
				"internal 10.96.0.10:53/tcp":    "- | 10.244.0.5:5353",
				"internal 10.96.0.10:3868/sctp": "- | 10.244.0.5:3868",
				"internal 10.96.0.10:81/tcp":    "- | ",
			},
		},
		{
			name: "externalIPs and load balancer IPs in both scopes",
			svc: clusterIPService(loadBalancerType, func(s *api.Service) {
				s.Spec.ExternalIPs = []string{"198.51.100.7", "2001:db8::1", "203.0.113.10", "bogus"}
				s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress,
					api.LoadBalancerIngress{IP: "203.0.113.11", IPMode: ptr.To(api.LoadBalancerIPModeProxy)},
					api.LoadBalancerIngress{Hostname: "lb.example.com"},
					api.LoadBalancerIngress{IP: "203.0.113.12", IPMode: ptr.To(api.LoadBalancerIPModeVIP)})
			}),
			want: want{
				clusterIP80:                    "- | " + all4,
				"internal 198.51.100.7:80/tcp": "external-ip | " + all4,
				"external 198.51.100.7:80/tcp": "external-ip | " + all4,
				"internal 203.0.113.10:80/tcp": "external-ip | " + all4,
				"external 203.0.113.10:80/tcp": "external-ip | " + all4,
				"internal 203.0.113.12:80/tcp": "external-ip | " + all4,
				"external 203.0.113.12:80/tcp": "external-ip | " + all4,
				nodePort:                       "nodeport | " + all4,
			},
			warnings: []string{`spec.externalIPs[3] "bogus" is not an IP address`},
		},
		{
			name: "NodePort",
			svc:  clusterIPService(nodePortType),
			want: want{clusterIP80: "- | " + all4, nodePort: "nodeport | " + all4},
		},
		{
			name: "LoadBalancer without node ports (allocateLoadBalancerNodePorts false)",
			svc: clusterIPService(loadBalancerType, func(s *api.Service) {
				s.Spec.Ports[0].NodePort = 0
			}),
			want: want{clusterIP80: "- | " + all4, "internal 203.0.113.10:80/tcp": "external-ip | " + all4, "external 203.0.113.10:80/tcp": "external-ip | " + all4},
		},
		{name: "headless", svc: clusterIPService(func(s *api.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }), want: want{}},
		{name: "ExternalName", svc: &api.Service{Spec: api.ServiceSpec{Type: api.ServiceTypeExternalName}}, want: want{}},
		{name: "another proxy's", svc: clusterIPService(func(s *api.Service) { s.Labels = map[string]string{ProxyNameLabel: "other"} }), want: want{}},
		{name: "edgeplane's by name", svc: clusterIPService(func(s *api.Service) { s.Labels = map[string]string{ProxyNameLabel: ProxyName} }), want: want{clusterIP80: "- | " + all4}},
		{
			name: "IPv6 only",
			svc:  clusterIPService(func(s *api.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::10", []string{"fd00::10"} }),
			slices: []*api.EndpointSlice{func() *api.EndpointSlice {
				s := slice(httpPort, ep("fd00::5", "self", ""))
				s.AddressType = api.AddressTypeIPv6
				return s
			}()},
			want: want{},
		},
		{
			name: "dual stack: the IPv4 ClusterIP and the IPv4 slices",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::10", []string{"fd00::10", "10.96.0.10"}
			}),
			slices: []*api.EndpointSlice{slice(httpPort, epSelf), func() *api.EndpointSlice {
				s := slice(httpPort, ep("fd00::5", "self", ""))
				s.AddressType = api.AddressTypeIPv6
				return s
			}()},
			want: want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "ready endpoints only",
			svc:  clusterIPService(),
			slices: []*api.EndpointSlice{slice(httpPort, epSelf,
				conditions(epN2, false, false, false),  // not ready
				conditions(epN3, false, true, true),    // terminating, still serving
				conditions(epN4, false, false, true))}, // terminating
			want: want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "no ready endpoint: the serving terminating ones",
			svc:  clusterIPService(),
			slices: []*api.EndpointSlice{slice(httpPort,
				conditions(epSelf, false, false, false),
				conditions(epN2, false, true, true),
				conditions(epN3, false, true, true),
				conditions(epN4, false, false, true))},
			want: want{clusterIP80: "- | 10.244.1.5:8080,10.244.2.5:8080"},
		},
		{
			name:   "no endpoint at all",
			svc:    clusterIPService(nodePortType),
			slices: []*api.EndpointSlice{slice(httpPort)},
			want:   want{clusterIP80: "- | ", nodePort: "nodeport | "},
		},
		{
			name: "endpoint in two slices counts once, the readier",
			svc:  clusterIPService(),
			slices: []*api.EndpointSlice{
				slice(httpPort, conditions(epSelf, false, false, false)),
				slice(httpPort, epSelf, ep("bogus", "self", ""), api.Endpoint{}),
			},
			want: want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "slices of other address types and headless slices are skipped",
			svc:  clusterIPService(),
			slices: []*api.EndpointSlice{func() *api.EndpointSlice {
				s := slice(httpPort, epSelf)
				s.AddressType = api.AddressTypeFQDN
				return s
			}(), func() *api.EndpointSlice { s := slice(httpPort, epN2); s.Labels[HeadlessLabel] = ""; return s }(), nil},
			want: want{clusterIP80: "- | "},
		},
		{
			name: "internalTrafficPolicy Local: the ClusterIP uses this node's endpoints",
			svc: clusterIPService(nodePortType, func(s *api.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(api.ServiceInternalTrafficPolicyLocal)
				s.Spec.ExternalIPs = []string{"198.51.100.7"}
			}),
			want: want{
				clusterIP80:                    "- | " + selfEP,
				"internal 198.51.100.7:80/tcp": "external-ip | " + all4,
				"external 198.51.100.7:80/tcp": "external-ip | " + all4,
				nodePort:                       "nodeport | " + all4,
			},
		},
		{
			name: "internalTrafficPolicy Local without a local endpoint: none",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(api.ServiceInternalTrafficPolicyLocal)
			}),
			slices: []*api.EndpointSlice{slice(httpPort, epN2, epN3)},
			want:   want{clusterIP80: "- | "},
		},
		{
			name: "externalTrafficPolicy Local: external frontends use this node's endpoints and keep the source",
			svc: clusterIPService(loadBalancerType, func(s *api.Service) {
				s.Spec.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicyLocal
			}),
			want: want{
				clusterIP80:                    "- | " + all4,
				"internal 203.0.113.10:80/tcp": "external-ip | " + all4, // from pods: cluster-wide, as kube-proxy
				"external 203.0.113.10:80/tcp": "local,external-ip | " + selfEP,
				nodePort:                       "nodeport,local | " + selfEP,
			},
		},
		{
			name: "externalTrafficPolicy Local falls back to this node's serving terminating endpoints",
			svc:  clusterIPService(nodePortType, func(s *api.Service) { s.Spec.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicyLocal }),
			slices: []*api.EndpointSlice{slice(httpPort,
				conditions(epSelf, false, true, true), epN2)},
			want: want{clusterIP80: "- | 10.244.1.5:8080", nodePort: "nodeport,local | " + selfEP},
		},
		{
			name: "sessionAffinity ClientIP, default timeout",
			svc: clusterIPService(nodePortType, func(s *api.Service) {
				s.Spec.SessionAffinity = api.ServiceAffinityClientIP
			}),
			want: want{clusterIP80: "affinity(10800) | " + all4, nodePort: "affinity,nodeport(10800) | " + all4},
		},
		{
			name: "sessionAffinity ClientIP, 60 s",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.SessionAffinity = api.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &api.SessionAffinityConfig{ClientIP: &api.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
			}),
			want: want{clusterIP80: "affinity(60) | " + all4},
		},
	})
}

func TestFrontendsErrors(t *testing.T) {
	cluster := NewCluster("self", testNodes(), domain.DefaultPoolLabel)
	for name, c := range map[string]struct {
		svc *api.Service
		err string
	}{
		"no ClusterIP":  {clusterIPService(func(s *api.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }), "service ns/web: spec.clusterIP is not set"},
		"bad ClusterIP": {clusterIPService(func(s *api.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.0.300", nil }), `service ns/web: spec.clusterIP "10.96.0.300" is not an IP address`},
	} {
		if _, err := Frontends(Input{Service: c.svc, Cluster: cluster}); err == nil || err.Error() != c.err {
			t.Errorf("%s: %v, want %q", name, err, c.err)
		}
	}
}

func TestWarningReasons(t *testing.T) {
	res, err := Frontends(Input{
		Service: clusterIPService(func(s *api.Service) { s.Spec.ExternalIPs = []string{"x"} }),
		Slices:  allSlices(), Cluster: NewCluster("self", testNodes(), domain.DefaultPoolLabel), MaxBackends: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, w := range res.Warnings {
		reasons = append(reasons, w.Reason)
	}
	if !slices.Equal(reasons, []string{ReasonInvalidService, ReasonTooManyEndpoints}) {
		t.Errorf("reasons %v", reasons)
	}
}

// An SCTP port with endpoints on another port gets its own reason, once per Service port, and
// the same message for the same ports whatever the endpoints (the reconciler reports each
// distinct message once).
func TestWarningSCTPTargetPort(t *testing.T) {
	svc := clusterIPService(func(s *api.Service) {
		s.Spec.Ports = []api.ServicePort{
			{Name: "sig", Protocol: api.ProtocolSCTP, Port: 3868},
			{Name: "http", Protocol: api.ProtocolTCP, Port: 80}, // TCP may change ports
		}
	})
	cluster := NewCluster("self", testNodes(), domain.DefaultPoolLabel)
	ports := []port{{"sig", api.ProtocolSCTP, 3869}, {"http", api.ProtocolTCP, 8080}}
	var messages []string
	for _, eps := range [][]api.Endpoint{{epSelf, epN2}, {epN3}} {
		res, err := Frontends(Input{Service: svc, Slices: []*api.EndpointSlice{slice(ports, eps...)}, Cluster: cluster})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Warnings) != 1 || res.Warnings[0].Reason != ReasonUnsupportedSCTPTargetPort {
			t.Fatalf("warnings %v, want one %s", res.Warnings, ReasonUnsupportedSCTPTargetPort)
		}
		messages = append(messages, res.Warnings[0].Message)
	}
	if messages[0] != messages[1] {
		t.Errorf("the message changed with the endpoints:\n%s\n%s", messages[0], messages[1])
	}
	// No endpoint at all: nothing to refuse, nothing to say.
	res, err := Frontends(Input{Service: svc, Cluster: cluster})
	if err != nil || len(res.Warnings) != 0 {
		t.Errorf("no endpoints: warnings %v (%v)", res.Warnings, err)
	}
}

func TestCluster(t *testing.T) {
	c := NewCluster("self", testNodes(), domain.DefaultPoolLabel)
	if c.Local != (Node{Name: "self", Pool: "pool-a", Zone: "z1"}) || c.PoolOf("n3") != "pool-b" || c.PoolOf("n4") != "" || c.PoolOf("gone") != "" {
		t.Errorf("cluster %+v", c)
	}
	if !c.Equal(NewCluster("self", testNodes(), domain.DefaultPoolLabel)) || c.Equal(NewCluster("n2", testNodes(), domain.DefaultPoolLabel)) {
		t.Error("Equal")
	}
	if other := NewCluster("self", testNodes(), "alibabacloud.com/nodepool-id"); other.Local.Pool != "" || other.Equal(c) {
		t.Errorf("another pool label: %+v", other)
	}
	if missing := NewCluster("self", nil, domain.DefaultPoolLabel); missing.Local != (Node{Name: "self"}) {
		t.Errorf("local node unknown: %+v", missing.Local)
	}
}

func TestFrontendString(t *testing.T) {
	k := FrontendKey{VIP: NodePortVIP, Port: 30080, Proto: ProtoUDP, Scope: ScopeExternal}
	f := Frontend{Flags: FlagAffinity, AffinityTimeout: 5, Backends: []Backend{{netip.MustParseAddr("10.244.0.5"), 53}}}
	if got := k.String() + " " + f.String(); got != "external 0.0.0.0:30080/udp flags=affinity affinity=5s backends=[10.244.0.5:53]" {
		t.Errorf("%q", got)
	}
	if !f.Equal(Frontend{Flags: FlagAffinity, AffinityTimeout: 5, Backends: []Backend{{netip.MustParseAddr("10.244.0.5"), 53}}}) || f.Equal(Frontend{}) {
		t.Error("Equal")
	}
}

// TestFrontendsThousandsOfEndpoints: more endpoints than a frontend holds (lb.h's 16-bit count):
// the first 65535 by address, and a warning per frontend.
func TestFrontendsThousandsOfEndpoints(t *testing.T) {
	var many []*api.EndpointSlice
	for i := range 70 {
		var eps []api.Endpoint
		for j := range 1000 {
			n := i*1000 + j
			eps = append(eps, ep(fmt.Sprintf("10.%d.%d.%d", 100+n>>16, n>>8&255, n&255), "n2", ""))
		}
		many = append(many, slice(httpPort, eps...))
	}
	res, err := Frontends(Input{Service: clusterIPService(), Slices: many, Cluster: NewCluster("self", testNodes(), domain.DefaultPoolLabel)})
	if err != nil {
		t.Fatal(err)
	}
	f := res.Frontends[FrontendKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: ProtoTCP}]
	if len(f.Backends) != MaxBackends || f.Backends[0].IP != netip.MustParseAddr("10.100.0.0") ||
		f.Backends[MaxBackends-1].IP != netip.MustParseAddr("10.100.255.254") {
		t.Errorf("%d backends, first %v", len(f.Backends), f.Backends[0])
	}
	if len(res.Warnings) != 1 || res.Warnings[0].Reason != ReasonTooManyEndpoints || !strings.Contains(res.Warnings[0].Message, "has 70000 endpoints") {
		t.Errorf("warnings %v", res.Warnings)
	}
}

// TestFrontendsDuplicateEndpoints: an endpoint in two slices (while it moves between them) is one
// backend, as ready as its readiest copy, whether the port has few candidates (found by a linear
// search) or many (a map).
func TestFrontendsDuplicateEndpoints(t *testing.T) {
	vip := FrontendKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: ProtoTCP}
	for _, n := range []int{3, smallSet + 5} {
		var eps []api.Endpoint
		for i := range n {
			eps = append(eps, ep(fmt.Sprintf("10.244.9.%d", i+1), "n2", ""))
		}
		// The first copies are not ready (and not serving), the second and third ready: every
		// endpoint counts once, as ready. One more endpoint is only in the first slice, not ready:
		// left out.
		notReady := make([]api.Endpoint, 0, n+1)
		for _, e := range eps {
			notReady = append(notReady, conditions(e, false, false, false))
		}
		notReady = append(notReady, conditions(ep("10.244.9.250", "n2", ""), false, false, false))
		res, err := Frontends(Input{Service: clusterIPService(), Cluster: NewCluster("self", testNodes(), domain.DefaultPoolLabel),
			Slices: []*api.EndpointSlice{slice(httpPort, notReady...), slice(httpPort, eps...), slice(httpPort, eps...)}})
		if err != nil {
			t.Fatal(err)
		}
		got := res.Frontends[vip].Backends
		if len(got) != n || slices.ContainsFunc(got, func(b Backend) bool { return b.IP == netip.MustParseAddr("10.244.9.250") }) {
			t.Errorf("%d endpoints twice: backends %v, want each of the %d ready ones once", n, got, n)
		}
	}
}

// TestFrontendsUnreachable: endpoints in the pod CIDR of a node this node cannot reach (its
// domain is public to this one's) are left out before every other choice and counted per
// frontend; host network endpoints of that node and endpoints without a node stay.
func TestFrontendsUnreachable(t *testing.T) {
	cluster := func(local string) *Cluster {
		c := NewCluster(local, testNodes(), domain.DefaultPoolLabel)
		c.SetUnreachable("n3", netip.MustParsePrefix("10.244.2.0/24"))
		return c
	}
	hostNetN3 := ep("172.30.0.3", "n3", "z1")                   // n3's own address
	noNode := api.Endpoint{Addresses: []string{"172.30.0.100"}} // e.g. the API server
	vip := FrontendKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: ProtoTCP, Scope: ScopeInternal}
	np := FrontendKey{VIP: NodePortVIP, Port: 30080, Proto: ProtoTCP, Scope: ScopeExternal}
	type frontend struct {
		backends    string
		unreachable uint16
	}
	for _, c := range []struct {
		name  string
		svc   *api.Service
		eps   []api.Endpoint
		local string
		want  map[FrontendKey]frontend
	}{
		{"one of four unreachable", clusterIPService(nodePortType), []api.Endpoint{epSelf, epN2, epN3, epN4}, "self",
			map[FrontendKey]frontend{vip: {"10.244.0.5:8080,10.244.1.5:8080,10.244.3.5:8080", 1}, np: {"10.244.0.5:8080,10.244.1.5:8080,10.244.3.5:8080", 1}}},
		{"host network and node-less endpoints stay", clusterIPService(), []api.Endpoint{epN3, hostNetN3, noNode}, "self",
			map[FrontendKey]frontend{vip: {"172.30.0.3:8080,172.30.0.100:8080", 1}}},
		{"none reachable: no backend", clusterIPService(nodePortType), []api.Endpoint{epN3}, "self",
			map[FrontendKey]frontend{vip: {"", 1}, np: {"", 1}}},
		{"the fallback to terminating endpoints ignores unreachable ready ones", clusterIPService(),
			[]api.Endpoint{epN3, conditions(epN2, false, true, true)}, "self",
			map[FrontendKey]frontend{vip: {"10.244.1.5:8080", 1}}},
		{"PreferClose falls back to other zones when this zone's are unreachable",
			clusterIPService(func(s *api.Service) {
				s.Spec.TrafficDistribution = ptr.To(api.ServiceTrafficDistributionPreferClose)
			}),
			[]api.Endpoint{epN2, epN3}, "self", // self is in z1, like n3
			map[FrontendKey]frontend{vip: {"10.244.1.5:8080", 1}}},
		{"PreferClose counts only what it would have used", clusterIPService(func(s *api.Service) {
			s.Spec.TrafficDistribution = ptr.To(api.ServiceTrafficDistributionPreferClose)
		}), []api.Endpoint{epN2, epN3, epSelf}, "self",
			map[FrontendKey]frontend{vip: {"10.244.0.5:8080", 1}}},
		{"internalTrafficPolicy Local loses nothing", clusterIPService(func(s *api.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(api.ServiceInternalTrafficPolicyLocal)
		}), []api.Endpoint{epSelf, epN3}, "self",
			map[FrontendKey]frontend{vip: {"10.244.0.5:8080", 0}}},
		{"externalTrafficPolicy Local: only the internal frontend counts", clusterIPService(nodePortType, func(s *api.Service) {
			s.Spec.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicyLocal
		}), []api.Endpoint{epSelf, epN3}, "self",
			map[FrontendKey]frontend{vip: {"10.244.0.5:8080", 1}, np: {"10.244.0.5:8080", 0}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Frontends(Input{Service: c.svc, Slices: []*api.EndpointSlice{slice(httpPort, c.eps...)}, Cluster: cluster(c.local)})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Frontends) != len(c.want) {
				t.Errorf("%d frontends, want %d: %v", len(res.Frontends), len(c.want), res.Frontends)
			}
			for k, w := range c.want {
				f, ok := res.Frontends[k]
				var b []string
				for _, be := range f.Backends {
					b = append(b, be.String())
				}
				if got := (frontend{strings.Join(b, ","), f.Unreachable}); !ok || got != w {
					t.Errorf("%s = %+v (present %t), want %+v", k, got, ok, w)
				}
			}
		})
	}
	// Without SetUnreachable nothing is left out: the same endpoints, all four used.
	res, err := Frontends(Input{Service: clusterIPService(), Slices: allSlices(), Cluster: NewCluster("self", testNodes(), domain.DefaultPoolLabel)})
	if err != nil {
		t.Fatal(err)
	}
	if f := res.Frontends[vip]; len(f.Backends) != 4 || f.Unreachable != 0 {
		t.Errorf("every node reachable: %v", f)
	}
}

func TestClusterUnreachable(t *testing.T) {
	a, b := NewCluster("self", testNodes(), domain.DefaultPoolLabel), NewCluster("self", testNodes(), domain.DefaultPoolLabel)
	a.SetUnreachable("n3", netip.MustParsePrefix("10.244.2.0/24"))
	if a.Equal(b) || !slices.Equal(a.Unreachable(), []string{"n3"}) || len(b.Unreachable()) != 0 {
		t.Errorf("unreachable nodes: %v / %v, equal %t", a.Unreachable(), b.Unreachable(), a.Equal(b))
	}
	b.SetUnreachable("n3", netip.MustParsePrefix("10.244.2.0/24"))
	if !a.Equal(b) {
		t.Error("same unreachable nodes, not Equal")
	}
	f := Frontend{Unreachable: 2}
	if f.Equal(Frontend{}) || !strings.HasSuffix(f.String(), " unreachable=2") {
		t.Errorf("Equal/String ignore Unreachable: %q", f.String())
	}
}
