package service

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/domain"
)

// The cluster of the tests: this node "self" in pool-a and zone z1, with one endpoint per node.
//
//	node  pool    zone  endpoint
//	self  pool-a  z1    10.244.0.5
//	n2    pool-a  z2    10.244.1.5
//	n3    pool-b  z1    10.244.2.5
//	n4    -       -     10.244.3.5
func testNodes() []*corev1.Node {
	node := func(name, pool, zone string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
		if pool != "" {
			n.Labels[domain.DefaultPoolLabel] = pool
		}
		if zone != "" {
			n.Labels[ZoneLabel] = zone
		}
		return n
	}
	return []*corev1.Node{node("self", "pool-a", "z1"), node("n2", "pool-a", "z2"), node("n3", "pool-b", "z1"), node("n4", "", "")}
}

var (
	epSelf = ep("10.244.0.5", "self", "z1")
	epN2   = ep("10.244.1.5", "n2", "z2")
	epN3   = ep("10.244.2.5", "n3", "z1")
	epN4   = ep("10.244.3.5", "n4", "")
)

// hint gives e the EndpointSlice controller's zone hints.
func hint(e discoveryv1.Endpoint, zones ...string) discoveryv1.Endpoint {
	e.Hints = &discoveryv1.EndpointHints{}
	for _, z := range zones {
		e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
	}
	return e
}

func ep(ip, node, zone string) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(node)}
	if zone != "" {
		e.Zone = ptr.To(zone)
	}
	return e
}

// notReady, terminating... set an endpoint's conditions.
func conditions(e discoveryv1.Endpoint, ready, serving, terminating bool) discoveryv1.Endpoint {
	e.Conditions = discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
	return e
}

type port struct {
	name  string
	proto corev1.Protocol
	num   int32
}

func slice(ports []port, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-x", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.name), Protocol: ptr.To(p.proto), Port: ptr.To(p.num)})
	}
	return s
}

var httpPort = []port{{"http", corev1.ProtocolTCP, 8080}}

func allSlices() []*discoveryv1.EndpointSlice {
	return []*discoveryv1.EndpointSlice{slice(httpPort, epSelf, epN2, epN3, epN4)}
}

func clusterIPService(mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func nodePortType(s *corev1.Service) {
	s.Spec.Type = corev1.ServiceTypeNodePort
	s.Spec.Ports[0].NodePort = 30080
}

func loadBalancerType(s *corev1.Service) {
	nodePortType(s)
	s.Spec.Type = corev1.ServiceTypeLoadBalancer
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}}
}

func annotate(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

// want describes frontends compactly: "scope vip:port/proto" -> "flags | backend,backend".
type want map[string]string

func describe(res Result) want {
	out := want{}
	for k, f := range res.Frontends {
		var b []string
		for _, be := range f.Backends {
			b = append(b, be.String())
		}
		v := f.Flags.String()
		if f.Flags&FlagAffinity != 0 {
			v += fmt.Sprintf("(%d)", f.AffinityTimeout)
		}
		out[k.String()] = v + " | " + strings.Join(b, ",")
	}
	return out
}

const (
	all4        = "10.244.0.5:8080,10.244.1.5:8080,10.244.2.5:8080,10.244.3.5:8080"
	selfEP      = "10.244.0.5:8080"
	clusterIP80 = "internal 10.96.0.10:80/tcp"
	nodePort    = "external 0.0.0.0:30080/tcp"
)

func TestFrontends(t *testing.T) {
	for _, c := range []struct {
		name     string
		svc      *corev1.Service
		slices   []*discoveryv1.EndpointSlice
		policy   *Policy // nil: read from the Service
		local    string  // this node; default self
		max      int
		want     want
		warnings []string // substrings, in order
	}{
		{
			name: "ClusterIP",
			svc:  clusterIPService(),
			want: want{clusterIP80: "- | " + all4},
		},
		{
			name: "ports by name and protocol, target ports from the slices",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{
					{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
					{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53},
					{Name: "sig", Protocol: corev1.ProtocolSCTP, Port: 3868},
					{Name: "unmatched", Protocol: corev1.ProtocolTCP, Port: 81},
				}
			}),
			slices: []*discoveryv1.EndpointSlice{
				slice([]port{{"dns", corev1.ProtocolUDP, 5353}, {"dns-tcp", corev1.ProtocolTCP, 5353}, {"sig", corev1.ProtocolSCTP, 3868}}, epSelf),
				// A rollout renumbered the named target port: each slice says its own.
				slice([]port{{"dns", corev1.ProtocolUDP, 5354}, {"dns-tcp", corev1.ProtocolUDP, 1}}, epN2),
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
			svc: clusterIPService(loadBalancerType, func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"198.51.100.7", "2001:db8::1", "203.0.113.10", "bogus"}
				s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress,
					corev1.LoadBalancerIngress{IP: "203.0.113.11", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
					corev1.LoadBalancerIngress{Hostname: "lb.example.com"},
					corev1.LoadBalancerIngress{IP: "203.0.113.12", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
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
			svc: clusterIPService(loadBalancerType, func(s *corev1.Service) {
				s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
				s.Spec.Ports[0].NodePort = 0
			}),
			want: want{clusterIP80: "- | " + all4, "internal 203.0.113.10:80/tcp": "external-ip | " + all4, "external 203.0.113.10:80/tcp": "external-ip | " + all4},
		},
		{name: "headless", svc: clusterIPService(func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }), want: want{}},
		{name: "ExternalName", svc: &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}, want: want{}},
		{name: "another proxy's", svc: clusterIPService(func(s *corev1.Service) { s.Labels = map[string]string{ProxyNameLabel: "other"} }), want: want{}},
		{name: "edgeplane's by name", svc: clusterIPService(func(s *corev1.Service) { s.Labels = map[string]string{ProxyNameLabel: ProxyName} }), want: want{clusterIP80: "- | " + all4}},
		{
			name: "IPv6 only",
			svc:  clusterIPService(func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::10", []string{"fd00::10"} }),
			slices: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				s := slice(httpPort, ep("fd00::5", "self", ""))
				s.AddressType = discoveryv1.AddressTypeIPv6
				return s
			}()},
			want: want{},
		},
		{
			name: "dual stack: the IPv4 ClusterIP and the IPv4 slices",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::10", []string{"fd00::10", "10.96.0.10"}
			}),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, epSelf), func() *discoveryv1.EndpointSlice {
				s := slice(httpPort, ep("fd00::5", "self", ""))
				s.AddressType = discoveryv1.AddressTypeIPv6
				return s
			}()},
			want: want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "ready endpoints only",
			svc:  clusterIPService(),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, epSelf,
				conditions(epN2, false, false, false),  // not ready
				conditions(epN3, false, true, true),    // terminating, still serving
				conditions(epN4, false, false, true))}, // terminating
			want: want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "no ready endpoint: the serving terminating ones",
			svc:  clusterIPService(),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort,
				conditions(epSelf, false, false, false),
				conditions(epN2, false, true, true),
				conditions(epN3, false, true, true),
				conditions(epN4, false, false, true))},
			want: want{clusterIP80: "- | 10.244.1.5:8080,10.244.2.5:8080"},
		},
		{
			name:   "no endpoint at all",
			svc:    clusterIPService(nodePortType),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort)},
			want:   want{clusterIP80: "- | ", nodePort: "nodeport | "},
		},
		{
			name: "endpoint in two slices counts once, the readier",
			svc:  clusterIPService(),
			slices: []*discoveryv1.EndpointSlice{
				slice(httpPort, conditions(epSelf, false, false, false)),
				slice(httpPort, epSelf, ep("bogus", "self", ""), discoveryv1.Endpoint{}),
			},
			want: want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "slices of other address types and headless slices are skipped",
			svc:  clusterIPService(),
			slices: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				s := slice(httpPort, epSelf)
				s.AddressType = discoveryv1.AddressTypeFQDN
				return s
			}(), func() *discoveryv1.EndpointSlice { s := slice(httpPort, epN2); s.Labels[HeadlessLabel] = ""; return s }(), nil},
			want: want{clusterIP80: "- | "},
		},
		{
			name: "internalTrafficPolicy Local: the ClusterIP uses this node's endpoints",
			svc: clusterIPService(nodePortType, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
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
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, epN2, epN3)},
			want:   want{clusterIP80: "- | "},
		},
		{
			name: "externalTrafficPolicy Local: external frontends use this node's endpoints and keep the source",
			svc: clusterIPService(loadBalancerType, func(s *corev1.Service) {
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
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
			svc:  clusterIPService(nodePortType, func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort,
				conditions(epSelf, false, true, true), epN2)},
			want: want{clusterIP80: "- | 10.244.1.5:8080", nodePort: "nodeport,local | " + selfEP},
		},
		{
			name: "sessionAffinity ClientIP, default timeout",
			svc: clusterIPService(nodePortType, func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			}),
			want: want{clusterIP80: "affinity(10800) | " + all4, nodePort: "affinity,nodeport(10800) | " + all4},
		},
		{
			name: "sessionAffinity ClientIP, 60 s",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
			}),
			want: want{clusterIP80: "affinity(60) | " + all4},
		},
		{
			name: "trafficDistribution PreferClose: this node's zone",
			svc: clusterIPService(nodePortType, func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
			}),
			want: want{clusterIP80: "- | 10.244.0.5:8080,10.244.2.5:8080", nodePort: "nodeport | 10.244.0.5:8080,10.244.2.5:8080"},
		},
		{
			name: "trafficDistribution PreferSameZone: nothing ready in the zone, every endpoint",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferSameZone)
			}),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, conditions(epSelf, false, true, true), epN2, epN4)},
			want:   want{clusterIP80: "- | 10.244.1.5:8080,10.244.3.5:8080"},
		},
		{
			name: "trafficDistribution PreferClose on a node without a zone: every endpoint",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
			}),
			local: "n4",
			want:  want{clusterIP80: "- | " + all4},
		},
		{
			name: "trafficDistribution PreferSameNode: this node, else its zone",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferSameNode)
			}),
			want: want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "trafficDistribution PreferSameNode without a local endpoint: the zone",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferSameNode)
			}),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, epN2, epN3, epN4)},
			want:   want{clusterIP80: "- | 10.244.2.5:8080"},
		},
		{
			name: "topology hints (topology-mode Auto): the endpoints hinted for this node's zone",
			svc:  clusterIPService(nodePortType),
			// The EndpointSlice controller gave z1 only n3's endpoint, z2 the others.
			slices: []*discoveryv1.EndpointSlice{slice(httpPort,
				hint(epSelf, "z2"), hint(epN2, "z2"), hint(epN3, "z1"), hint(epN4, "z2"))},
			want: want{clusterIP80: "- | 10.244.2.5:8080", nodePort: "nodeport | 10.244.2.5:8080"},
		},
		{
			name: "topology hints: an endpoint without hints (they are being added) turns them off",
			svc:  clusterIPService(),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort,
				hint(epSelf, "z2"), hint(epN2, "z2"), hint(epN3, "z1"), epN4)},
			want: want{clusterIP80: "- | " + all4},
		},
		{
			name: "topology hints: none for this node's zone, every endpoint",
			svc:  clusterIPService(),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort,
				hint(epSelf, "z2"), hint(epN2, "z2"), hint(epN3, "z2", "z3"), hint(epN4, "z3"))},
			want: want{clusterIP80: "- | " + all4},
		},
		{
			name:   "topology hints on a node without a zone: every endpoint",
			svc:    clusterIPService(),
			local:  "n4",
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, hint(epSelf, "z1"), hint(epN2, "z2"), hint(epN3, "z1"), hint(epN4, "z2"))},
			want:   want{clusterIP80: "- | " + all4},
		},
		{
			name: "topology hints: a not-ready endpoint's missing hints do not count, and Local policies decide",
			svc: clusterIPService(nodePortType, func(s *corev1.Service) {
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort,
				hint(epSelf, "z2"), hint(epN2, "z2"), hint(epN3, "z1"), conditions(epN4, false, false, false))},
			want: want{clusterIP80: "- | 10.244.2.5:8080", nodePort: "nodeport,local | " + selfEP},
		},
		{
			name: "trafficDistribution with internalTrafficPolicy Local: the policy decides",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, epN3)},
			want:   want{clusterIP80: "- | "},
		},
		{
			name: "topology kubernetes.io/hostname: this node's endpoints, every frontend",
			svc:  clusterIPService(nodePortType, annotate(TopologyAnnotation, TopologyHostname)),
			want: want{clusterIP80: "- | " + selfEP, nodePort: "nodeport | " + selfEP},
		},
		{
			name: "topology openyurt.io/nodepool: endpoints of this node's pool",
			svc:  clusterIPService(nodePortType, annotate(TopologyAnnotation, TopologyNodePool)),
			want: want{clusterIP80: "- | 10.244.0.5:8080,10.244.1.5:8080", nodePort: "nodeport | 10.244.0.5:8080,10.244.1.5:8080"},
		},
		{
			name:  "topology kubernetes.io/zone is the pool, seen from pool-b",
			svc:   clusterIPService(annotate(TopologyAnnotation, TopologyZone)),
			local: "n3",
			want:  want{clusterIP80: "- | 10.244.2.5:8080"},
		},
		{
			name:  "topology pool on a node in no pool: plain Kubernetes",
			svc:   clusterIPService(annotate(TopologyAnnotation, TopologyNodePool)),
			local: "n4",
			want:  want{clusterIP80: "- | " + all4},
		},
		{
			name:   "topology pool: endpoints without a node or on unknown nodes are not near",
			svc:    clusterIPService(annotate(TopologyAnnotation, TopologyNodePool)),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, epSelf, discoveryv1.Endpoint{Addresses: []string{"10.244.9.9"}}, ep("10.244.8.8", "gone", ""))},
			want:   want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "topology pool, then externalTrafficPolicy Local and the ready fallback",
			svc: clusterIPService(nodePortType, annotate(TopologyAnnotation, TopologyNodePool), func(s *corev1.Service) {
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}),
			slices: []*discoveryv1.EndpointSlice{slice(httpPort, conditions(epSelf, false, true, true), conditions(epN2, false, true, true), epN3)},
			want:   want{clusterIP80: "- | 10.244.0.5:8080,10.244.1.5:8080", nodePort: "nodeport,local | " + selfEP},
		},
		{
			name:   "topology from the policy, not the annotation (the reconciler's last valid value)",
			svc:    clusterIPService(annotate(TopologyAnnotation, "bogus")),
			policy: &Policy{Topology: TopologyNode},
			want:   want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "NodePort isolation: this pool does not listen",
			svc:  clusterIPService(loadBalancerType, annotate(ListenAnnotation, "pool-b")),
			want: want{
				clusterIP80:                    "- | " + all4,
				"internal 203.0.113.10:80/tcp": "external-ip | " + all4,
				"external 203.0.113.10:80/tcp": "external-ip | " + all4,
				nodePort:                       "nodeport,closed | ",
			},
		},
		{
			name: "NodePort isolation: closed carries neither affinity nor local",
			svc: clusterIPService(nodePortType, annotate(ListenAnnotation, "-pool-a,*"), func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}),
			want: want{clusterIP80: "affinity(10800) | " + all4, nodePort: "nodeport,closed | "},
		},
		{
			name: "NodePort isolation: this pool listens",
			svc:  clusterIPService(nodePortType, annotate(ListenAnnotation, "-pool-b,*")),
			want: want{clusterIP80: "- | " + all4, nodePort: "nodeport | " + all4},
		},
		{
			name:  "NodePort isolation: a node in no pool listens",
			svc:   clusterIPService(nodePortType, annotate(ListenAnnotation, "")),
			local: "n4",
			want:  want{clusterIP80: "- | " + all4, nodePort: "nodeport | " + all4},
		},
		{
			name: "NodePort isolation: the empty list closes every pool",
			svc:  clusterIPService(nodePortType, annotate(ListenAnnotation, "")),
			want: want{clusterIP80: "- | " + all4, nodePort: "nodeport,closed | "},
		},
		{
			name:   "NodePort isolation: the policy's rule, not the annotation's",
			svc:    clusterIPService(nodePortType, annotate(ListenAnnotation, "pool-a,,")),
			policy: &Policy{Listen: ListenEverywhere},
			want:   want{clusterIP80: "- | " + all4, nodePort: "nodeport | " + all4},
		},
		{
			name: "bad ports are left out, the rest is programmed",
			svc: clusterIPService(nodePortType, func(s *corev1.Service) {
				s.Spec.Ports = append(s.Spec.Ports,
					corev1.ServicePort{Name: "big", Protocol: corev1.ProtocolTCP, Port: 70000},
					corev1.ServicePort{Name: "zero", Protocol: corev1.ProtocolUDP, Port: 0},
					corev1.ServicePort{Name: "icmp", Protocol: "ICMP", Port: 7},
					corev1.ServicePort{Name: "np", Protocol: corev1.ProtocolTCP, Port: 81, NodePort: 65536},
					corev1.ServicePort{Name: "dup", Protocol: corev1.ProtocolTCP, Port: 80})
			}),
			want: want{clusterIP80: "- | " + all4, nodePort: "nodeport | " + all4, "internal 10.96.0.10:81/tcp": "- | "},
			warnings: []string{
				`spec.ports[1] ("big") left out: port 70000 is out of range 1-65535`,
				`spec.ports[2] ("zero") left out: port 0 is out of range`,
				`spec.ports[3] ("icmp") left out: protocol "ICMP" is not TCP, UDP or SCTP`,
				`spec.ports[4] ("np"): node port 65536 is out of range`,
				`frontend internal 10.96.0.10:80/tcp is listed twice`,
			},
		},
		{
			name: "too many endpoints: the first by address",
			svc:  clusterIPService(nodePortType),
			max:  2,
			want: want{clusterIP80: "- | 10.244.0.5:8080,10.244.1.5:8080", nodePort: "nodeport | 10.244.0.5:8080,10.244.1.5:8080"},
			warnings: []string{
				"frontend internal 10.96.0.10:80/tcp has 4 endpoints; the datapath holds 2 per frontend",
				"frontend external 0.0.0.0:30080/tcp has 4 endpoints",
			},
		},
		{
			// The datapath refuses SCTP backends on another port (it cannot follow a port change
			// in the CRC32c): said in a warning; the frontend is programmed as for TCP.
			name: "SCTP endpoints on another port than the Service's",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{{Name: "sig", Protocol: corev1.ProtocolSCTP, Port: 3868}}
			}),
			slices: []*discoveryv1.EndpointSlice{
				slice([]port{{"sig", corev1.ProtocolSCTP, 3868}}, epSelf),
				slice([]port{{"sig", corev1.ProtocolSCTP, 9999}}, epN2),
				slice([]port{{"sig", corev1.ProtocolSCTP, 3869}}, epN3, epN4),
			},
			want: want{"internal 10.96.0.10:3868/sctp": "- | 10.244.0.5:3868,10.244.1.5:9999,10.244.2.5:3869,10.244.3.5:3869"},
			warnings: []string{
				`spec.ports[0] ("sig"): SCTP port 3868 has endpoints on ports 3869, 9999; edgeplane cannot change the port of an SCTP packet ` +
					`(its CRC32c would need recomputing), so connections to those endpoints are refused: make targetPort 3868`,
			},
		},
		{
			name: "SCTP, one other port; externalIPs use the cluster-wide endpoints",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{{Name: "sig", Protocol: corev1.ProtocolSCTP, Port: 3868}}
			}, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
				s.Spec.ExternalIPs = []string{"198.51.100.7"}
			}),
			slices: []*discoveryv1.EndpointSlice{
				slice([]port{{"sig", corev1.ProtocolSCTP, 3868}}, epSelf),
				slice([]port{{"sig", corev1.ProtocolSCTP, 3869}}, epN2),
			},
			want: want{
				"internal 10.96.0.10:3868/sctp":   "- | 10.244.0.5:3868",
				"internal 198.51.100.7:3868/sctp": "external-ip | 10.244.0.5:3868,10.244.1.5:3869",
				"external 198.51.100.7:3868/sctp": "external-ip | 10.244.0.5:3868,10.244.1.5:3869",
			},
			warnings: []string{`spec.ports[0] ("sig"): SCTP port 3868 has endpoints on port 3869;`},
		},
		{
			// internalTrafficPolicy Local: this node's ClusterIP uses only its own endpoint, on the
			// Service's port; the others' port is not this node's concern.
			name: "SCTP, only the endpoints this node uses count",
			svc: clusterIPService(func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{{Name: "sig", Protocol: corev1.ProtocolSCTP, Port: 3868}}
			}, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}),
			slices: []*discoveryv1.EndpointSlice{
				slice([]port{{"sig", corev1.ProtocolSCTP, 3868}}, epSelf),
				slice([]port{{"sig", corev1.ProtocolSCTP, 3869}}, epN2),
			},
			want: want{"internal 10.96.0.10:3868/sctp": "- | 10.244.0.5:3868"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			local := c.local
			if local == "" {
				local = "self"
			}
			endpointSlices := c.slices
			if endpointSlices == nil {
				endpointSlices = allSlices()
			}
			policy := Policy{}
			if c.policy != nil {
				policy = *c.policy
			} else {
				var err error
				policy.Topology, err = TopologyOf(c.svc)
				if err != nil {
					t.Fatal(err)
				}
				if policy.Listen, err = ListenOf(c.svc); err != nil {
					t.Fatal(err)
				}
			}
			res, err := Frontends(Input{Service: c.svc, Slices: endpointSlices, Cluster: NewCluster(local, testNodes(), domain.DefaultPoolLabel), Policy: policy, MaxBackends: c.max})
			if err != nil {
				t.Fatal(err)
			}
			got := describe(res)
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for k, v := range got {
				if _, ok := c.want[k]; !ok {
					t.Errorf("unexpected %s = %q", k, v)
				}
			}
			if len(res.Warnings) != len(c.warnings) {
				t.Fatalf("warnings %v, want %d", res.Warnings, len(c.warnings))
			}
			for i, w := range c.warnings {
				if !strings.Contains(res.Warnings[i].Message, w) {
					t.Errorf("warning %d = %q, want %q", i, res.Warnings[i].Message, w)
				}
			}
		})
	}
}

func TestFrontendsErrors(t *testing.T) {
	cluster := NewCluster("self", testNodes(), domain.DefaultPoolLabel)
	for name, c := range map[string]struct {
		svc *corev1.Service
		err string
	}{
		"no ClusterIP":  {clusterIPService(func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }), "service ns/web: spec.clusterIP is not set"},
		"bad ClusterIP": {clusterIPService(func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.0.300", nil }), `service ns/web: spec.clusterIP "10.96.0.300" is not an IP address`},
	} {
		if _, err := Frontends(Input{Service: c.svc, Cluster: cluster}); err == nil || err.Error() != c.err {
			t.Errorf("%s: %v, want %q", name, err, c.err)
		}
	}
}

func TestWarningReasons(t *testing.T) {
	res, err := Frontends(Input{
		Service: clusterIPService(func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"x"} }),
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
	svc := clusterIPService(func(s *corev1.Service) {
		s.Spec.Ports = []corev1.ServicePort{
			{Name: "sig", Protocol: corev1.ProtocolSCTP, Port: 3868},
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}, // TCP may change ports
		}
	})
	cluster := NewCluster("self", testNodes(), domain.DefaultPoolLabel)
	ports := []port{{"sig", corev1.ProtocolSCTP, 3869}, {"http", corev1.ProtocolTCP, 8080}}
	var messages []string
	for _, eps := range [][]discoveryv1.Endpoint{{epSelf, epN2}, {epN3}} {
		res, err := Frontends(Input{Service: svc, Slices: []*discoveryv1.EndpointSlice{slice(ports, eps...)}, Cluster: cluster})
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
	var many []*discoveryv1.EndpointSlice
	for i := range 70 {
		var eps []discoveryv1.Endpoint
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
		var eps []discoveryv1.Endpoint
		for i := range n {
			eps = append(eps, ep(fmt.Sprintf("10.244.9.%d", i+1), "n2", ""))
		}
		// The first copies are not ready (and not serving), the second and third ready: every
		// endpoint counts once, as ready. One more endpoint is only in the first slice, not ready:
		// left out.
		notReady := make([]discoveryv1.Endpoint, 0, n+1)
		for _, e := range eps {
			notReady = append(notReady, conditions(e, false, false, false))
		}
		notReady = append(notReady, conditions(ep("10.244.9.250", "n2", ""), false, false, false))
		res, err := Frontends(Input{Service: clusterIPService(), Cluster: NewCluster("self", testNodes(), domain.DefaultPoolLabel),
			Slices: []*discoveryv1.EndpointSlice{slice(httpPort, notReady...), slice(httpPort, eps...), slice(httpPort, eps...)}})
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
	hostNetN3 := ep("172.30.0.3", "n3", "z1")                           // n3's own address
	noNode := discoveryv1.Endpoint{Addresses: []string{"172.30.0.100"}} // e.g. the API server
	vip := FrontendKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: ProtoTCP, Scope: ScopeInternal}
	np := FrontendKey{VIP: NodePortVIP, Port: 30080, Proto: ProtoTCP, Scope: ScopeExternal}
	type frontend struct {
		backends    string
		unreachable uint16
	}
	for _, c := range []struct {
		name  string
		svc   *corev1.Service
		eps   []discoveryv1.Endpoint
		local string
		want  map[FrontendKey]frontend
	}{
		{"one of four unreachable", clusterIPService(nodePortType), []discoveryv1.Endpoint{epSelf, epN2, epN3, epN4}, "self",
			map[FrontendKey]frontend{vip: {"10.244.0.5:8080,10.244.1.5:8080,10.244.3.5:8080", 1}, np: {"10.244.0.5:8080,10.244.1.5:8080,10.244.3.5:8080", 1}}},
		{"host network and node-less endpoints stay", clusterIPService(), []discoveryv1.Endpoint{epN3, hostNetN3, noNode}, "self",
			map[FrontendKey]frontend{vip: {"172.30.0.3:8080,172.30.0.100:8080", 1}}},
		{"none reachable: no backend", clusterIPService(nodePortType), []discoveryv1.Endpoint{epN3}, "self",
			map[FrontendKey]frontend{vip: {"", 1}, np: {"", 1}}},
		{"the fallback to terminating endpoints ignores unreachable ready ones", clusterIPService(),
			[]discoveryv1.Endpoint{epN3, conditions(epN2, false, true, true)}, "self",
			map[FrontendKey]frontend{vip: {"10.244.1.5:8080", 1}}},
		{"PreferClose falls back to other zones when this zone's are unreachable",
			clusterIPService(func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
			}),
			[]discoveryv1.Endpoint{epN2, epN3}, "self", // self is in z1, like n3
			map[FrontendKey]frontend{vip: {"10.244.1.5:8080", 1}}},
		{"PreferClose counts only what it would have used", clusterIPService(func(s *corev1.Service) {
			s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
		}), []discoveryv1.Endpoint{epN2, epN3, epSelf}, "self",
			map[FrontendKey]frontend{vip: {"10.244.0.5:8080", 1}}},
		{"internalTrafficPolicy Local loses nothing", clusterIPService(func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
		}), []discoveryv1.Endpoint{epSelf, epN3}, "self",
			map[FrontendKey]frontend{vip: {"10.244.0.5:8080", 0}}},
		{"externalTrafficPolicy Local: only the internal frontend counts", clusterIPService(nodePortType, func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}), []discoveryv1.Endpoint{epSelf, epN3}, "self",
			map[FrontendKey]frontend{vip: {"10.244.0.5:8080", 1}, np: {"10.244.0.5:8080", 0}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Frontends(Input{Service: c.svc, Slices: []*discoveryv1.EndpointSlice{slice(httpPort, c.eps...)}, Cluster: cluster(c.local)})
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
