package svchealth

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

func proxyAnswer(t *testing.T, h http.Handler, path string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s: body %q: %v", path, rec.Body, err)
	}
	if rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("%s: headers %v", path, rec.Header())
	}
	return rec.Code, body
}

func TestProxyHealth(t *testing.T) {
	var ready atomic.Bool
	var pending atomic.Int64
	node := &k8s.Node{Name: "n1"}
	var nodeNow atomic.Pointer[k8s.Node]
	nodeNow.Store(node)
	p := &ProxyHealth{
		Timeout: 50 * time.Millisecond,
		Ready:   ready.Load,
		Pending: func() int { return int(pending.Load()) },
		Node:    func() (*k8s.Node, error) { return nodeNow.Load(), nil },
	}
	s := New(Config{NodeName: "n1", Address: "127.0.0.1", Proxy: p})
	defer s.Close()
	h := p.Handler()
	expect := func(step string, healthz, livez int) {
		t.Helper()
		if code, body := proxyAnswer(t, h, "/healthz"); code != healthz {
			t.Errorf("%s: /healthz %d %v, want %d", step, code, body, healthz)
		}
		if code, body := proxyAnswer(t, h, "/livez"); code != livez {
			t.Errorf("%s: /livez %d %v, want %d", step, code, body, livez)
		}
	}

	expect("start-up pass not done", 503, 503)
	ready.Store(true)
	expect("programmed, nothing waits", 200, 200)
	if _, body := proxyAnswer(t, h, "/healthz"); body["nodeEligible"] != true {
		t.Errorf("nodeEligible %v", body["nodeEligible"])
	}

	// Changes wait and no reconcile completes for longer than the timeout: the sync is stale.
	pending.Store(3)
	time.Sleep(2 * p.Timeout)
	expect("changes stuck", 503, 503)
	// A reconcile completes (the reconciler hands every Service to SetHealthCheck): current.
	s.SetHealthCheck("ns/web", nil, service.HealthCheck{})
	expect("a reconcile completed", 200, 200)
	pending.Store(0)
	time.Sleep(2 * p.Timeout)
	expect("idle: nothing waits", 200, 200)

	// The node is about to go: /healthz drains it, /livez does not care.
	tainted := node.DeepCopy()
	tainted.Spec.Taints = []api.Taint{{Key: ToBeDeletedTaint, Effect: api.TaintEffectNoSchedule}}
	nodeNow.Store(tainted)
	expect("ToBeDeletedByClusterAutoscaler", 503, 200)
	if _, body := proxyAnswer(t, h, "/healthz"); body["nodeEligible"] != false {
		t.Errorf("nodeEligible %v", body["nodeEligible"])
	}
	deleting := node.DeepCopy()
	deleting.Deleting = true
	nodeNow.Store(deleting)
	expect("being deleted", 503, 200)

	// serviceProxyHealthy of the health check node ports follows the same signal.
	nodeNow.Store(node)
	port := freePort(t)
	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: port, LocalEndpoints: 1})
	ready.Store(false)
	if a := mustGet(t, port, "/"); a.status != http.StatusServiceUnavailable || a.body.ServiceProxyHealthy {
		t.Errorf("health check node port while the sync is not current: %s", a.rawBody)
	}
}

func TestProxyHealthRun(t *testing.T) {
	blocker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := blocker.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&ProxyHealth{Timeout: time.Minute}).Run(ctx, addr)
	}()
	// The port is taken: Run keeps trying instead of failing the agent; once it is free, it serves.
	time.Sleep(100 * time.Millisecond)
	blocker.Close()
	url := fmt.Sprintf("http://%s/livez", addr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("/livez: %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never served after the port freed up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-done
	if resp, err := client.Get(url); err == nil {
		resp.Body.Close()
		t.Error("still serving after ctx was done")
	}
}
