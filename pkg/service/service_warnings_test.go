package service

import (
	"testing"

	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// TestFrontendsWarnings: what cannot be programmed is left out with a warning, the rest is:
// bad ports, more endpoints than the limit, SCTP endpoints on another port.
func TestFrontendsWarnings(t *testing.T) {
	runFrontendCases(t, []frontendCase{
		{
			name: "bad ports are left out, the rest is programmed",
			svc: clusterIPService(nodePortType, func(s *api.Service) {
				s.Spec.Ports = append(s.Spec.Ports,
					api.ServicePort{Name: "big", Protocol: api.ProtocolTCP, Port: 70000},
					api.ServicePort{Name: "zero", Protocol: api.ProtocolUDP, Port: 0},
					api.ServicePort{Name: "icmp", Protocol: "ICMP", Port: 7},
					api.ServicePort{Name: "np", Protocol: api.ProtocolTCP, Port: 81, NodePort: 65536},
					api.ServicePort{Name: "dup", Protocol: api.ProtocolTCP, Port: 80})
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
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.Ports = []api.ServicePort{{Name: "sig", Protocol: api.ProtocolSCTP, Port: 3868}}
			}),
			slices: []*api.EndpointSlice{
				slice([]port{{"sig", api.ProtocolSCTP, 3868}}, epSelf),
				slice([]port{{"sig", api.ProtocolSCTP, 9999}}, epN2),
				slice([]port{{"sig", api.ProtocolSCTP, 3869}}, epN3, epN4),
			},
			want: want{"internal 10.96.0.10:3868/sctp": "- | 10.244.0.5:3868,10.244.1.5:9999,10.244.2.5:3869,10.244.3.5:3869"},
			warnings: []string{
				`spec.ports[0] ("sig"): SCTP port 3868 has endpoints on ports 3869, 9999; edgeplane cannot change the port of an SCTP packet ` +
					`(its CRC32c would need recomputing), so connections to those endpoints are refused: make targetPort 3868`,
			},
		},
		{
			name: "SCTP, one other port; externalIPs use the cluster-wide endpoints",
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.Ports = []api.ServicePort{{Name: "sig", Protocol: api.ProtocolSCTP, Port: 3868}}
			}, func(s *api.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(api.ServiceInternalTrafficPolicyLocal)
				s.Spec.ExternalIPs = []string{"198.51.100.7"}
			}),
			slices: []*api.EndpointSlice{
				slice([]port{{"sig", api.ProtocolSCTP, 3868}}, epSelf),
				slice([]port{{"sig", api.ProtocolSCTP, 3869}}, epN2),
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
			svc: clusterIPService(func(s *api.Service) {
				s.Spec.Ports = []api.ServicePort{{Name: "sig", Protocol: api.ProtocolSCTP, Port: 3868}}
			}, func(s *api.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(api.ServiceInternalTrafficPolicyLocal)
			}),
			slices: []*api.EndpointSlice{
				slice([]port{{"sig", api.ProtocolSCTP, 3868}}, epSelf),
				slice([]port{{"sig", api.ProtocolSCTP, 3869}}, epN2),
			},
			want: want{"internal 10.96.0.10:3868/sctp": "- | 10.244.0.5:3868"},
		},
	})
}
