package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/svchealth"
)

func TestKubeProxyMetricsPort(t *testing.T) {
	var r readiness
	newTelemetry(Config{BPFFSRoot: t.TempDir(), Resync: time.Second}, &r)
	for path, want := range map[string]string{"/proxyMode": proxyMode, "/healthz": "ok\n"} {
		rec := httptest.NewRecorder()
		r.kubeProxyHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || rec.Body.String() != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, rec.Code, rec.Body.String(), want)
		}
	}
	rec := httptest.NewRecorder()
	r.kubeProxyHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "edgeplane_build_info") {
		t.Errorf("GET /metrics: %d\n%s", rec.Code, rec.Body.String())
	}
	// Liveness is the agent's, as on --metrics-addr.
	r.addChecks(nil, func() error { return io.ErrUnexpectedEOF })
	rec = httptest.NewRecorder()
	r.kubeProxyHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("GET /healthz with a failing liveness check: %d", rec.Code)
	}
}

// A port held by someone else (kube-proxy, on a node moving to edgeplane) is retried, not fatal.
func TestKubeProxyMetricsPortTakesOverWhenFree(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := held.Addr().String()
	var r readiness
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.serveKubeProxy(ctx, addr); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond)
	held.Close()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(3 * svchealth.RetryPeriod)
	for {
		resp, err := client.Get("http://" + addr + "/proxyMode")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != proxyMode {
				t.Fatalf("/proxyMode = %q", body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving %s after the port was freed: %v", addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
