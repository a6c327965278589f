package agent

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// TestReadyzNamesAPIServerOutage: /readyz's verdict does not depend on the API server, and its
// answer says whether the API server is unreachable (since when) or which outage was the last.
func TestReadyzNamesAPIServerOutage(t *testing.T) {
	var r readiness
	now := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	status := k8s.ReachabilityStatus{Reachable: false, Since: now.Add(-90 * time.Second), Err: errors.New("i/o timeout")}
	r.addNote(func() string { return apiserverNote(status, now) })
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		r.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	r.datapath.Store(true)
	r.synced.Store(true)
	if code, body := get(); code != http.StatusOK || !strings.Contains(body, "apiserver: unreachable since 2026-12-06T07:58:30Z (1m30s)") || !strings.Contains(body, "i/o timeout") {
		t.Errorf("during an outage: %d %q, want 200 naming it", code, body)
	}
	r.synced.Store(false)
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "informers not synced") || !strings.Contains(body, "apiserver: unreachable") {
		t.Errorf("unsynced during an outage: %d %q, want 503 with both", code, body)
	}
	r.synced.Store(true)
	status = k8s.ReachabilityStatus{Reachable: true, Since: now, Outages: 2, Last: k8s.Outage{Start: now.Add(-90 * time.Second), End: now}}
	if code, body := get(); code != http.StatusOK || !strings.Contains(body, "apiserver: reachable; 2 outage(s), the last 1m30s from 2026-12-06T07:58:30Z to 2026-12-06T08:00:00Z") {
		t.Errorf("after outages: %d %q", code, body)
	}
}
