package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestReadyz(t *testing.T) {
	var r readiness
	get := func(path string) int {
		rec := httptest.NewRecorder()
		r.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if get("/healthz") != http.StatusOK || get("/readyz") != http.StatusServiceUnavailable {
		t.Fatal("before start-up: want healthz 200, readyz 503")
	}
	r.datapath.Store(true)
	if get("/readyz") != http.StatusServiceUnavailable {
		t.Fatal("informers not synced: want readyz 503")
	}
	r.synced.Store(true)
	if get("/readyz") != http.StatusOK {
		t.Fatal("ready: want readyz 200")
	}
}
