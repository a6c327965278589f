package service

import (
	"testing"

	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// TestFrontendsTopology: which endpoints this node uses by place: trafficDistribution, topology
// hints and the openyurt.io/topologyKeys annotation (pool, node, zone).
func TestFrontendsTopology(t *testing.T) {
	runFrontendCases(t, []frontendCase{
		{
			name: "trafficDistribution PreferClose: this node's zone",
			svc: clusterIPService(nodePortType, func(s *api.Service) {
				s.Spec.TrafficDistribution = ptr.To(api.ServiceTrafficDistributionPreferClose)
			}),
			want: want{clusterIP80: "- | 10.244.0.5:8080,10.244.2.5:8080", nodePort: "nodeport | 10.244.0.5:8080,10.244.2.5:8080"},
		},
		{
			name: "trafficDistribution PreferSameZone: nothing ready in the zone, every endpoint",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.TrafficDistribution = ptr.To(api.ServiceTrafficDistributionPreferSameZone)
			}),
			slices: []*api.EndpointSlice{slice(httpPort, conditions(epSelf, false, true, true), epN2, epN4)},
			want:   want{clusterIP80: "- | 10.244.1.5:8080,10.244.3.5:8080"},
		},
		{
			name: "trafficDistribution PreferClose on a node without a zone: every endpoint",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.TrafficDistribution = ptr.To(api.ServiceTrafficDistributionPreferClose)
			}),
			local: "n4",
			want:  want{clusterIP80: "- | " + all4},
		},
		{
			name: "trafficDistribution PreferSameNode: this node, else its zone",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.TrafficDistribution = ptr.To(api.ServiceTrafficDistributionPreferSameNode)
			}),
			want: want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "trafficDistribution PreferSameNode without a local endpoint: the zone",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.TrafficDistribution = ptr.To(api.ServiceTrafficDistributionPreferSameNode)
			}),
			slices: []*api.EndpointSlice{slice(httpPort, epN2, epN3, epN4)},
			want:   want{clusterIP80: "- | 10.244.2.5:8080"},
		},
		{
			name: "topology hints (topology-mode Auto): the endpoints hinted for this node's zone",
			svc:  clusterIPService(nodePortType),
			// The EndpointSlice controller gave z1 only n3's endpoint, z2 the others.
			slices: []*api.EndpointSlice{slice(httpPort,
				hint(epSelf, "z2"), hint(epN2, "z2"), hint(epN3, "z1"), hint(epN4, "z2"))},
			want: want{clusterIP80: "- | 10.244.2.5:8080", nodePort: "nodeport | 10.244.2.5:8080"},
		},
		{
			name: "topology hints: an endpoint without hints (they are being added) turns them off",
			svc:  clusterIPService(),
			slices: []*api.EndpointSlice{slice(httpPort,
				hint(epSelf, "z2"), hint(epN2, "z2"), hint(epN3, "z1"), epN4)},
			want: want{clusterIP80: "- | " + all4},
		},
		{
			name: "topology hints: none for this node's zone, every endpoint",
			svc:  clusterIPService(),
			slices: []*api.EndpointSlice{slice(httpPort,
				hint(epSelf, "z2"), hint(epN2, "z2"), hint(epN3, "z2", "z3"), hint(epN4, "z3"))},
			want: want{clusterIP80: "- | " + all4},
		},
		{
			name:   "topology hints on a node without a zone: every endpoint",
			svc:    clusterIPService(),
			local:  "n4",
			slices: []*api.EndpointSlice{slice(httpPort, hint(epSelf, "z1"), hint(epN2, "z2"), hint(epN3, "z1"), hint(epN4, "z2"))},
			want:   want{clusterIP80: "- | " + all4},
		},
		{
			name: "topology hints: a not-ready endpoint's missing hints do not count, and Local policies decide",
			svc: clusterIPService(nodePortType, func(s *api.Service) {
				s.Spec.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicyLocal
			}),
			slices: []*api.EndpointSlice{slice(httpPort,
				hint(epSelf, "z2"), hint(epN2, "z2"), hint(epN3, "z1"), conditions(epN4, false, false, false))},
			want: want{clusterIP80: "- | 10.244.2.5:8080", nodePort: "nodeport,local | " + selfEP},
		},
		{
			name: "trafficDistribution with internalTrafficPolicy Local: the policy decides",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.TrafficDistribution = ptr.To(api.ServiceTrafficDistributionPreferClose)
				s.Spec.InternalTrafficPolicy = ptr.To(api.ServiceInternalTrafficPolicyLocal)
			}),
			slices: []*api.EndpointSlice{slice(httpPort, epN3)},
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
			slices: []*api.EndpointSlice{slice(httpPort, epSelf, api.Endpoint{Addresses: []string{"10.244.9.9"}}, ep("10.244.8.8", "gone", ""))},
			want:   want{clusterIP80: "- | " + selfEP},
		},
		{
			name: "topology pool, then externalTrafficPolicy Local and the ready fallback",
			svc: clusterIPService(nodePortType, annotate(TopologyAnnotation, TopologyNodePool), func(s *api.Service) {
				s.Spec.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicyLocal
			}),
			slices: []*api.EndpointSlice{slice(httpPort, conditions(epSelf, false, true, true), conditions(epN2, false, true, true), epN3)},
			want:   want{clusterIP80: "- | 10.244.0.5:8080,10.244.1.5:8080", nodePort: "nodeport,local | " + selfEP},
		},
		{
			name:   "topology from the policy, not the annotation (the reconciler's last valid value)",
			svc:    clusterIPService(annotate(TopologyAnnotation, "bogus")),
			policy: &Policy{Topology: TopologyNode},
			want:   want{clusterIP80: "- | " + selfEP},
		},
	})
}

// TestFrontendsNodePortIsolation: nodeport.openyurt.io/listen opens or closes this node's node
// ports by pool.
func TestFrontendsNodePortIsolation(t *testing.T) {
	runFrontendCases(t, []frontendCase{
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
			svc: clusterIPService(nodePortType, annotate(ListenAnnotation, "-pool-a,*"), func(s *api.Service) {
				s.Spec.SessionAffinity = api.ServiceAffinityClientIP
				s.Spec.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicyLocal
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
	})
}
