package services

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/pkg/svchealth"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// healthAnswer is one probe of a health check node port, as a cloud load balancer sees it.
type healthAnswer struct {
	status int
	weight string // X-Load-Balancing-Endpoint-Weight
	body   svchealth.Response
	raw    string
}

func (a healthAnswer) String() string { return fmt.Sprintf("%d %s", a.status, a.raw) }

// getFrom GETs http://dst/path from ns on a connection of its own, as a load balancer's probe.
func getFrom(ns lab.Netns, dst netip.AddrPort, path string) (*http.Response, error) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return lab.DialTCP(ns, dst, 500*time.Millisecond)
		},
	}}
	return client.Get("http://" + dst.String() + path)
}

// probeHealth GETs a health check node port's /healthz from ns.
func probeHealth(ns lab.Netns, dst netip.AddrPort) (healthAnswer, error) {
	resp, err := getFrom(ns, dst, "/healthz")
	if err != nil {
		return healthAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return healthAnswer{}, err
	}
	a := healthAnswer{status: resp.StatusCode, weight: resp.Header.Get("X-Load-Balancing-Endpoint-Weight"), raw: string(raw)}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		return a, fmt.Errorf("headers %v", resp.Header)
	}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		return a, fmt.Errorf("body %q: %w", raw, err)
	}
	return a, nil
}

// testHealthCheckNodePort: a LoadBalancer Service with externalTrafficPolicy: Local whose only
// backend is web-n1. Every node serves its spec.healthCheckNodePort to the outside: 200 with one
// local endpoint on n1, 503 with none on n2 and n3. Then, live: the backend goes not ready, NodePort
// isolation closes n1's pool, the Service goes; each change is timed from the API call to the
// first probe that sees it.
func testHealthCheckNodePort(t *testing.T, c *cluster) {
	ctx := t.Context()
	const name, selectLabel = "hc-local", "edgeplane.test/healthcheck"
	web1, n1 := c.web[0], c.nodes[0]
	pods := c.lab.Client.CoreV1().Pods(lab.PodNamespace)
	label := func(value string) {
		t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, selectLabel, value)
		if _, err := pods.Patch(context.Background(), web1.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	label(`"yes"`)
	t.Cleanup(func() {
		label("null")
		_ = web1.SetReady(context.Background(), true)
		_ = c.lab.DeleteService(context.Background(), name)
	})
	svc, err := c.lab.CreateService(ctx, name, lab.ServiceOptions{
		Type:                  corev1.ServiceTypeLoadBalancer,
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		Selector:              map[string]string{selectLabel: "yes"},
		Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolTCP}},
	})
	if err != nil {
		t.Fatal(err)
	}
	hcnp := uint16(svc.Spec.HealthCheckNodePort)
	if hcnp == 0 {
		t.Fatal("the API server allocated no healthCheckNodePort")
	}
	if _, err := c.lab.WaitReadyEndpoints(ctx, name, 1, waitLimit); err != nil {
		t.Fatal(err)
	}

	// waitHealth probes node n until it answers status with local endpoints, and returns how
	// long after since that was.
	waitHealth := func(n *lab.Node, since time.Time, status, local int) time.Duration {
		t.Helper()
		dst := netip.AddrPortFrom(n.IP, hcnp)
		deadline := time.Now().Add(waitLimit)
		for {
			a, err := probeHealth(c.lab.Outside, dst)
			if err == nil && a.status == status && a.body.LocalEndpoints == local {
				if a.weight != fmt.Sprint(local) || a.body.Service.Namespace != lab.PodNamespace || a.body.Service.Name != name || !a.body.ServiceProxyHealthy {
					t.Errorf("%s: %s, weight %q", n.Name, a, a.weight)
				}
				return time.Since(since)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s:%d: %v (%v), want %d with %d local endpoints", n.Name, hcnp, a, err, status, local)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

	start := time.Now()
	for i, n := range c.nodes {
		status, local := http.StatusServiceUnavailable, 0
		if i == 0 {
			status, local = http.StatusOK, 1
		}
		waitHealth(n, start, status, local)
	}
	t.Logf("health check node port %d: n1 200 (1 local endpoint), n2 and n3 503 (0)", hcnp)
	// kube-proxy's proxy health server (eTP Cluster load balancers probe it): every node's sync
	// is current and no node is being drained.
	for _, n := range c.nodes {
		for _, path := range []string{"/healthz", "/livez"} {
			resp, err := getFrom(c.lab.Outside, netip.AddrPortFrom(n.IP, 10256), path)
			if err != nil {
				t.Fatalf("%s:10256%s: %v", n.Name, path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || (path == "/healthz" && !strings.Contains(string(body), `"nodeEligible":true`)) {
				t.Errorf("%s:10256%s: %d %s", n.Name, path, resp.StatusCode, body)
			}
		}
	}
	// The datapath agrees: n1's node port reaches its own backend.
	answers(t, c.lab.Outside, corev1.ProtocolTCP, netip.AddrPortFrom(n1.IP, nodePortOf(svc, 0)), 5, exactly(web1.Name))

	var timings []string
	start = time.Now()
	if err := web1.SetReady(ctx, false); err != nil {
		t.Fatal(err)
	}
	timings = append(timings, "backend not ready -> 503: "+ms(waitHealth(n1, start, http.StatusServiceUnavailable, 0)))
	start = time.Now()
	if err := web1.SetReady(ctx, true); err != nil {
		t.Fatal(err)
	}
	timings = append(timings, "ready again -> 200: "+ms(waitHealth(n1, start, http.StatusOK, 1)))

	// n1 is in pool-a: listening only in pool-b closes its node port, so it must report 0.
	start = time.Now()
	c.annotate(t, name, "nodeport.openyurt.io/listen", "pool-b")
	timings = append(timings, "listen=pool-b closes n1 -> 503: "+ms(waitHealth(n1, start, http.StatusServiceUnavailable, 0)))
	waitHealth(c.nodes[2], start, http.StatusServiceUnavailable, 0) // pool-b listens, but has no backend
	start = time.Now()
	c.annotate(t, name, "nodeport.openyurt.io/listen", "")
	timings = append(timings, "annotation removed -> 200: "+ms(waitHealth(n1, start, http.StatusOK, 1)))

	start = time.Now()
	if err := c.lab.DeleteService(ctx, name); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		dst := netip.AddrPortFrom(n.IP, hcnp)
		deadline := time.Now().Add(waitLimit)
		for {
			_, err := probeHealth(c.lab.Outside, dst)
			if errors.Is(err, syscall.ECONNREFUSED) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s:%d still open after the Service was deleted: %v", n.Name, hcnp, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		timings = append(timings, fmt.Sprintf("Service deleted -> %s's port closed: %s", n.Name, ms(time.Since(start))))
	}
	t.Logf("time from the API call to the first probe that saw it (10 ms polling): %s", strings.Join(timings, "; "))
}
