package svchealth

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// ToBeDeletedTaint is the taint the cluster autoscaler puts on a node it is about to delete;
// /healthz then fails so that load balancers drain the node first (kube-proxy's KEP-3836).
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// ProxyHealth is kube-proxy's proxy health server (--healthz-bind-address, 0.0.0.0:10256): cloud
// load balancers of externalTrafficPolicy: Cluster Services probe its /healthz on every node.
// Both /healthz and /livez answer 200 while the service sync is current: the start-up pass has
// programmed every Service, and no change has waited longer than Timeout without a reconcile
// completing. /healthz also fails (503) while this node is being deleted or carries
// ToBeDeletedTaint. The Server of the health check node ports counts reconciles (Config.Proxy).
type ProxyHealth struct {
	// Timeout is how long queued changes may wait with no reconcile completing; kube-proxy
	// uses twice its sync period.
	Timeout time.Duration
	Ready   func() bool               // the start-up pass is done
	Pending func() int                // Services waiting for a reconcile
	Node    func() (*k8s.Node, error) // this node; nil or an error: eligible

	mu      sync.Mutex
	current time.Time // the sync was last known current: a reconcile ended, or nothing waited
}

// reconciled records that a reconcile completed.
func (p *ProxyHealth) reconciled() {
	p.mu.Lock()
	p.current = time.Now()
	p.mu.Unlock()
}

// Healthy reports whether the service sync is current (serviceProxyHealthy).
func (p *ProxyHealth) Healthy() bool {
	ok, _ := p.healthy(time.Now())
	return ok
}

// healthy reports whether the service sync is current, and when it last was.
func (p *ProxyHealth) healthy(now time.Time) (bool, time.Time) {
	if p.Ready != nil && !p.Ready() {
		return false, time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Pending == nil || p.Pending() == 0 {
		p.current = now
	}
	return now.Sub(p.current) <= p.Timeout, p.current
}

func (p *ProxyHealth) nodeEligible() bool {
	if p.Node == nil {
		return true
	}
	node, err := p.Node()
	if err != nil || node == nil {
		return true // not known yet: as kube-proxy, eligible until a node says otherwise
	}
	if node.Deleting {
		return false
	}
	for _, taint := range node.Spec.Taints {
		if taint.Key == ToBeDeletedTaint {
			return false
		}
	}
	return true
}

// Handler serves /healthz and /livez.
func (p *ProxyHealth) Handler() http.Handler {
	mux := http.NewServeMux()
	serve := func(withNode bool) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			now := time.Now()
			healthy, last := p.healthy(now)
			body := map[string]any{"lastUpdated": last, "currentTime": now}
			if withNode {
				eligible := p.nodeEligible()
				healthy = healthy && eligible
				body["nodeEligible"] = eligible
			}
			if healthy {
				body["lastUpdated"] = now // as kube-proxy: "recent" whenever healthy
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			if healthy {
				w.WriteHeader(http.StatusOK)
			} else {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			_ = json.NewEncoder(w).Encode(body)
		}
	}
	mux.Handle("/healthz", serve(true))
	mux.Handle("/livez", serve(false))
	return mux
}

// Run serves addr until ctx is done (Serve: a port held by another process is retried).
func (p *ProxyHealth) Run(ctx context.Context, addr string) {
	Serve(ctx, addr, p.Handler(), "the proxy health server", "--healthz-bind-address")
}
