package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// healthChecks records what the reconciler hands to the health check servers.
type healthChecks map[string]service.HealthCheck

func (h healthChecks) SetHealthCheck(key string, _ *api.Service, hc service.HealthCheck) {
	if hc.Port == 0 {
		delete(h, key)
		return
	}
	h[key] = hc
}

func localLB(mods ...func(*corev1.Service)) *corev1.Service {
	return webService(append([]func(*corev1.Service){func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 31000
	}}, mods...)...)
}

// TestServicesHealthCheck: the health check follows the Service, its endpoints' readiness on
// this node and NodePort isolation, as the datapath does.
func TestServicesHealthCheck(t *testing.T) {
	f := newSvcFixture(t, localLB(), threeEndpoints())
	hc := healthChecks{}
	f.r.cfg.HealthChecks = hc
	check := func(step string, want map[string]service.HealthCheck) {
		t.Helper()
		f.r.queue.Add(serviceKey) // seeding the indexer runs no handler
		f.drain(t)
		if len(hc) != len(want) {
			t.Errorf("%s: health checks %v, want %v", step, hc, want)
		}
		for k, v := range want {
			if hc[k] != v {
				t.Errorf("%s: %s = %+v, want %+v", step, k, hc[k], v)
			}
		}
	}
	check("one local endpoint", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 1}})
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf + "," + beN2 + "," + beN3, svcNP: "nodeport,local | " + beSelf})

	// A second local pod; then this node's endpoints go not ready.
	f.seed(webSlice(endpointOn("10.244.0.5", "self", true), endpointOn("10.244.0.6", "self", true), endpointOn("10.244.1.5", "n2", true)))
	check("two local endpoints", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 2}})
	f.seed(webSlice(endpointOn("10.244.0.5", "self", false), endpointOn("10.244.1.5", "n2", true)))
	check("local endpoint not ready", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 0}})
	f.seed(threeEndpoints())
	check("ready again", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 1}})

	// NodePort isolation closes this node's pool (pool-a): the datapath drops, so 0.
	f.seed(localLB(withAnnotation(service.ListenAnnotation, "pool-b")))
	check("listen closes pool-a", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 0}})
	f.expect(t, map[string]string{svcCIP: "- | " + beSelf + "," + beN2 + "," + beN3, svcNP: "nodeport,closed | "})
	// An annotation that does not parse: the last valid value (closed) still applies.
	f.seed(localLB(withAnnotation(service.ListenAnnotation, "pool-a,,")))
	check("invalid listen keeps closed", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 0}})
	f.seed(localLB(withAnnotation(service.ListenAnnotation, "pool-a")))
	check("listen opens pool-a", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 1}})

	// This node moves to pool-b: closed again, without a Service change.
	nodes := svcNodes()
	nodes[0].Labels = map[string]string{domain.DefaultPoolLabel: "pool-b"}
	f.seed(nodes[0])
	f.r.nodeDirty.Store(true)
	check("this node moved to pool-b", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 0}})
	f.seed(svcNodes()[0])
	f.r.nodeDirty.Store(true)
	check("back in pool-a", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 1}})

	// The port changes; then the Service becomes Cluster; then it comes back and is deleted.
	f.seed(localLB(withAnnotation(service.ListenAnnotation, "pool-a"), func(s *corev1.Service) { s.Spec.HealthCheckNodePort = 31001 }))
	check("new port", map[string]service.HealthCheck{serviceKey: {Port: 31001, LocalEndpoints: 1}})
	f.seed(webService(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer }))
	check("Cluster policy", map[string]service.HealthCheck{})
	f.seed(localLB())
	check("Local again", map[string]service.HealthCheck{serviceKey: {Port: 31000, LocalEndpoints: 1}})
	f.remove(localLB())
	check("deleted", map[string]service.HealthCheck{})
}
