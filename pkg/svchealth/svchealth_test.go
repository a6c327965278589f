package svchealth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// freePort is a TCP port nothing listens on at 127.0.0.1 now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

type answer struct {
	status  int
	header  http.Header
	body    Response
	rawBody string
}

var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, port uint16, path string) (answer, error) {
	t.Helper()
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, header: resp.Header, rawBody: string(raw)}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("body %q: %v", raw, err)
	}
	return a, nil
}

func mustGet(t *testing.T, port uint16, path string) answer {
	t.Helper()
	a, err := get(t, port, path)
	if err != nil {
		t.Fatalf("GET :%d%s: %v", port, path, err)
	}
	return a
}

func refused(t *testing.T, port uint16) {
	t.Helper()
	if _, err := get(t, port, "/"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("port %d: %v, want connection refused", port, err)
	}
}

func svcObject(name string) *api.Service {
	return &api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}}
}

func TestAnswers(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	proxy := &ProxyHealth{Timeout: time.Minute, Ready: healthy.Load}
	s := New(Config{NodeName: "n1", Address: "127.0.0.1", Proxy: proxy})
	defer s.Close()
	port := freePort(t)

	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: port, LocalEndpoints: 2})
	for _, path := range []string{"/", "/healthz", "/any/path?x=1"} {
		a := mustGet(t, port, path)
		if a.status != http.StatusOK {
			t.Errorf("%s: status %d, want 200", path, a.status)
		}
		want := `{"service":{"namespace":"ns","name":"web"},"localEndpoints":2,"serviceProxyHealthy":true}`
		if a.rawBody != want {
			t.Errorf("%s: body %s, want %s", path, a.rawBody, want)
		}
		for k, v := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff", "X-Load-Balancing-Endpoint-Weight": "2"} {
			if got := a.header.Get(k); got != v {
				t.Errorf("%s: header %s = %q, want %q", path, k, got, v)
			}
		}
	}

	// No local endpoint: 503, weight 0; the same server (no rebind for a count change).
	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: port, LocalEndpoints: 0})
	a := mustGet(t, port, "/")
	if a.status != http.StatusServiceUnavailable || a.body.LocalEndpoints != 0 || a.header.Get("X-Load-Balancing-Endpoint-Weight") != "0" {
		t.Errorf("no endpoints: status %d, body %s, weight %q", a.status, a.rawBody, a.header.Get("X-Load-Balancing-Endpoint-Weight"))
	}

	// Endpoints, but the service sync is late: 503, as kube-proxy.
	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: port, LocalEndpoints: 1})
	healthy.Store(false)
	a = mustGet(t, port, "/")
	if a.status != http.StatusServiceUnavailable || a.body.ServiceProxyHealthy || a.body.LocalEndpoints != 1 {
		t.Errorf("sync late: status %d, body %s", a.status, a.rawBody)
	}
	healthy.Store(true)
	if a := mustGet(t, port, "/"); a.status != http.StatusOK {
		t.Errorf("sync current again: status %d", a.status)
	}
}

func TestPortFollowsService(t *testing.T) {
	s := New(Config{NodeName: "n1", Address: "127.0.0.1"})
	defer s.Close()
	p1, p2 := freePort(t), freePort(t)
	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: p1, LocalEndpoints: 1})
	s.SetHealthCheck("ns/api", svcObject("api"), service.HealthCheck{Port: p2, LocalEndpoints: 3})
	if a := mustGet(t, p2, "/"); a.body.Service.Name != "api" || a.body.LocalEndpoints != 3 {
		t.Errorf("api: %s", a.rawBody)
	}

	// web's port moves: the old one closes, the new one answers.
	p3 := freePort(t)
	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: p3, LocalEndpoints: 1})
	refused(t, p1)
	if a := mustGet(t, p3, "/"); a.body.Service.Name != "web" || a.status != http.StatusOK {
		t.Errorf("web on its new port: %d %s", a.status, a.rawBody)
	}

	// web goes (deleted, or no longer Local): its port closes; api is untouched.
	s.SetHealthCheck("ns/web", nil, service.HealthCheck{})
	refused(t, p3)
	if a := mustGet(t, p2, "/"); a.status != http.StatusOK {
		t.Errorf("api after web went: %d", a.status)
	}

	s.Close()
	refused(t, p2)
	s.SetHealthCheck("ns/api", svcObject("api"), service.HealthCheck{Port: p2, LocalEndpoints: 3})
	refused(t, p2) // closed for good
}

func TestBindFailure(t *testing.T) {
	recorder := record.NewFakeRecorder(10)
	s := New(Config{NodeName: "n1", Address: "127.0.0.1", Recorder: recorder})
	defer s.Close()
	blocker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := uint16(blocker.Addr().(*net.TCPAddr).Port)
	other := freePort(t)

	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: taken, LocalEndpoints: 1})
	s.SetHealthCheck("ns/api", svcObject("api"), service.HealthCheck{Port: other, LocalEndpoints: 1})
	if a := mustGet(t, other, "/"); a.status != http.StatusOK {
		t.Errorf("the other Service's port: %d", a.status)
	}
	// The failure is reported once, however often the reconciler says the same thing.
	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: taken, LocalEndpoints: 1})
	var events []string
	for len(recorder.Events) > 0 {
		events = append(events, <-recorder.Events)
	}
	if len(events) != 1 || !strings.HasPrefix(events[0], "Warning "+ReasonFailedToStart+" node n1 failed to start the health check node port") {
		t.Fatalf("events %q, want one %s", events, ReasonFailedToStart)
	}

	// The port frees up: the next reconcile binds it.
	blocker.Close()
	s.SetHealthCheck("ns/web", svcObject("web"), service.HealthCheck{Port: taken, LocalEndpoints: 1})
	if a := mustGet(t, taken, "/"); a.status != http.StatusOK || a.body.Service.Name != "web" {
		t.Errorf("after the port freed up: %d %s", a.status, a.rawBody)
	}
}
