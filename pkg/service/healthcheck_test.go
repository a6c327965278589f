package service

import (
	"testing"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

func etpLocal(s *api.Service) {
	s.Spec.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicyLocal
	s.Spec.HealthCheckNodePort = 31000
}

func TestHealthCheckOf(t *testing.T) {
	// Two ports on one pod: the pod counts once.
	twoPorts := func(s *api.Service) {
		s.Spec.Ports = append(s.Spec.Ports, api.ServicePort{Name: "dns", Protocol: api.ProtocolUDP, Port: 53, NodePort: 30053})
	}
	twoPortSlices := []*api.EndpointSlice{slice([]port{{"http", api.ProtocolTCP, 8080}, {"dns", api.ProtocolUDP, 5353}},
		epSelf, ep("10.244.0.6", "self", "z1"), epN2)}
	for _, c := range []struct {
		name   string
		svc    *api.Service
		slices []*api.EndpointSlice
		policy *Policy // nil: read from the Service
		want   HealthCheck
	}{
		{name: "LoadBalancer, Local, one local endpoint", svc: clusterIPService(loadBalancerType, etpLocal),
			slices: allSlices(), want: HealthCheck{31000, 1}},
		{name: "NodePort, Local", svc: clusterIPService(nodePortType, etpLocal),
			slices: allSlices(), want: HealthCheck{31000, 1}},
		{name: "no local endpoint", svc: clusterIPService(loadBalancerType, etpLocal),
			slices: []*api.EndpointSlice{slice(httpPort, epN2, epN3)}, want: HealthCheck{31000, 0}},
		{name: "two local pods behind two ports count twice, not four times", svc: clusterIPService(loadBalancerType, etpLocal, twoPorts),
			slices: twoPortSlices, want: HealthCheck{31000, 2}},
		{name: "not ready does not count", svc: clusterIPService(loadBalancerType, etpLocal),
			slices: []*api.EndpointSlice{slice(httpPort, conditions(epSelf, false, false, false), epN2)}, want: HealthCheck{31000, 0}},
		{name: "serving but terminating does not count (the load balancer drains the node)", svc: clusterIPService(loadBalancerType, etpLocal),
			slices: []*api.EndpointSlice{slice(httpPort, conditions(epSelf, false, true, true))}, want: HealthCheck{31000, 0}},
		{name: "a slice without the service's port does not count", svc: clusterIPService(loadBalancerType, etpLocal),
			slices: []*api.EndpointSlice{slice([]port{{"other", api.ProtocolTCP, 9}}, epSelf)}, want: HealthCheck{31000, 0}},
		{name: "listen closes this node's pool", svc: clusterIPService(loadBalancerType, etpLocal, annotate(ListenAnnotation, "pool-b")),
			slices: allSlices(), want: HealthCheck{31000, 0}},
		{name: "listen opens this node's pool", svc: clusterIPService(loadBalancerType, etpLocal, annotate(ListenAnnotation, "pool-b,pool-a")),
			slices: allSlices(), want: HealthCheck{31000, 1}},
		{name: "the reconciler's last valid value applies, not the annotation", svc: clusterIPService(loadBalancerType, etpLocal, annotate(ListenAnnotation, "pool-a,,")),
			slices: allSlices(), policy: &Policy{Listen: ListenNowhere}, want: HealthCheck{31000, 0}},
		{name: "topology does not hide local endpoints", svc: clusterIPService(loadBalancerType, etpLocal, annotate(TopologyAnnotation, TopologyNodePool)),
			slices: allSlices(), want: HealthCheck{31000, 1}},
		{name: "Cluster policy: none", svc: clusterIPService(loadBalancerType, func(s *api.Service) { s.Spec.HealthCheckNodePort = 31000 }),
			slices: allSlices(), want: HealthCheck{}},
		{name: "no port allocated: none", svc: clusterIPService(loadBalancerType, etpLocal, func(s *api.Service) { s.Spec.HealthCheckNodePort = 0 }),
			slices: allSlices(), want: HealthCheck{}},
		{name: "another proxy's Service: none", svc: clusterIPService(loadBalancerType, etpLocal, func(s *api.Service) {
			s.Labels = map[string]string{ProxyNameLabel: "other"}
		}), slices: allSlices(), want: HealthCheck{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			policy := Policy{}
			if c.policy != nil {
				policy = *c.policy
			} else {
				var err error
				if policy.Topology, err = TopologyOf(c.svc); err != nil {
					t.Fatal(err)
				}
				if policy.Listen, err = ListenOf(c.svc); err != nil {
					t.Fatal(err)
				}
			}
			got := HealthCheckOf(Input{Service: c.svc, Slices: c.slices, Cluster: NewCluster("self", testNodes(), domain.DefaultPoolLabel), Policy: policy})
			if got != c.want {
				t.Errorf("HealthCheckOf = %+v, want %+v", got, c.want)
			}
		})
	}
}
