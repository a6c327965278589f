package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/klog/v2"
)

// proxyMode is what kube-proxy's /proxyMode answers where edgeplane replaces kube-proxy (kube-proxy
// itself answers iptables, ipvs or nftables).
const proxyMode = "edgeplane"

// kubeProxyRetry is how often the kube-proxy metrics server retries a port someone else holds.
const kubeProxyRetry = 5 * time.Second

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

// serveKubeProxy serves kubeProxyHandler on addr until ctx is done. A port held by another process
// (kube-proxy itself, still running on a node being moved to edgeplane) is no start-up failure, as
// for --healthz-bind-address: the agent logs it and retries until the port is free.
func (r *readiness) serveKubeProxy(ctx context.Context, addr string) {
	logger := klog.FromContext(ctx)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			srv := &http.Server{Handler: r.kubeProxyHandler(), ReadHeaderTimeout: 5 * time.Second}
			stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
			logger.V(2).Info("Serving kube-proxy's metrics port", "addr", addr)
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "kube-proxy metrics server stopped", "addr", addr)
			}
			stop()
		} else {
			logger.Error(err, "Cannot serve kube-proxy's metrics port (--metrics-bind-address); retrying", "addr", addr, "retry", kubeProxyRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(kubeProxyRetry):
		}
	}
}
