package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/agentinfo"
)

// The kernel families say what the probes found, one series per feature, and the release.
func TestSetKernel(t *testing.T) {
	m := New("", nil)
	m.SetKernel(agentinfo.Kernel{Release: "5.10.0-46-amd64", Features: []agentinfo.Feature{
		{Name: "tcx", Available: false}, {Name: "check_mtu", Available: true},
	}})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{
		KernelFeature + `{feature="tcx"} 0`,
		KernelFeature + `{feature="check_mtu"} 1`,
		KernelInfo + `{release="5.10.0-46-amd64"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
