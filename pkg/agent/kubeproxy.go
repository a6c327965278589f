package agent

import (
	"context"
	"fmt"
	"net/http"

	"github.com/edgeplane/edgeplane/pkg/svchealth"
)

// proxyMode is what kube-proxy's /proxyMode answers where edgeplane replaces kube-proxy (kube-proxy
// itself answers iptables, ipvs or nftables).
const proxyMode = "edgeplane"

// kubeProxyHandler serves kube-proxy's metrics port (--metrics-bind-address, kube-proxy's
// 127.0.0.1:10249) for the tools and tests that query it on every node: /proxyMode names the proxy,
// /metrics is the agent's own metrics (edgeplane_*, not kube-proxy's kubeproxy_*), /healthz the
// agent's liveness, as on --metrics-addr.
func (r *readiness) kubeProxyHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fmt.Fprint(w, proxyMode)
	})
	mux.HandleFunc("/healthz", r.healthz)
	if r.metrics != nil {
		mux.Handle("/metrics", r.metrics)
	}
	return mux
}

// serveKubeProxy serves kubeProxyHandler on addr until ctx is done; a port held by another process
// (kube-proxy itself, on a node being moved to edgeplane) is retried, as for --healthz-bind-address.
func (r *readiness) serveKubeProxy(ctx context.Context, addr string) {
	svchealth.Serve(ctx, addr, r.kubeProxyHandler(), "kube-proxy's metrics port", "--metrics-bind-address")
}
