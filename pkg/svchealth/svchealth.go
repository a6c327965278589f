// Package svchealth serves the health check node ports of Services with externalTrafficPolicy:
// Local, as kube-proxy does. The API server gives such a LoadBalancer Service a
// spec.healthCheckNodePort; the cloud's load balancer probes it on every node and sends traffic
// only to nodes that answer 200, because a Local Service's node port drops what it has no local
// endpoint for. Every node runs one HTTP server per such Service on that port, on all addresses
// of its network namespace. Any path answers a small JSON document with the count of local
// endpoints: 200 when there is at least one, 503 when there is none.
//
// The count is the service reconciler's (pkg/controller), computed with the datapath's own
// decisions (pkg/service.HealthCheckOf): ready endpoints on this node, and none where NodePort
// isolation closes the Service here. A port that cannot be bound is logged and reported as a
// Warning event on its Service; the other Services' servers are not affected, and binding is
// retried at the Service's next reconcile.
package svchealth

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// ReasonFailedToStart is the Warning event's reason when a health check port cannot be bound
// (kube-proxy's).
const ReasonFailedToStart = "FailedToStartServiceHealthcheck"

// Config is what a Server needs.
type Config struct {
	NodeName string            // this node, named in events
	Recorder k8s.EventRecorder // optional
	// Address is the address the servers listen on; empty: every address of the node's network
	// namespace (kube-proxy's default).
	Address string
	// Proxy, optional, says whether the agent's service sync is current: when it is not, every
	// answer is 503 (serviceProxyHealthy false). It learns of each reconcile from SetHealthCheck.
	Proxy *ProxyHealth
}

// Server runs the health check servers of every Service that needs one on this node. Its
// SetHealthCheck is what the service reconciler calls after each reconcile.
type Server struct {
	cfg Config

	mu       sync.Mutex
	services map[string]*instance // by namespace/name
	closed   bool
}

// instance is one Service's health check port.
type instance struct {
	namespace, name string
	port            uint16
	endpoints       atomic.Int64
	srv             *http.Server // nil: binding failed; retried at the next SetHealthCheck
	failure         string       // the bind error last reported, so that it is reported once
}

// New returns a Server that serves nothing yet.
func New(cfg Config) *Server {
	return &Server{cfg: cfg, services: map[string]*instance{}}
}

// SetHealthCheck makes Service key (namespace/name) serve hc on its port; a port of 0 stops
// serving it (the Service is gone, or no longer needs one). svc, when known, names the Service
// in events. A changed port closes the old server before the new one opens.
func (s *Server) SetHealthCheck(key string, svc *api.Service, hc service.HealthCheck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.cfg.Proxy != nil {
		s.cfg.Proxy.reconciled()
	}
	inst := s.services[key]
	if inst != nil && (hc.Port == 0 || hc.Port != inst.port) {
		inst.close()
		delete(s.services, key)
		klog.V(2).InfoS("Closed a health check node port", "service", key, "port", inst.port)
		inst = nil
	}
	if hc.Port == 0 {
		return
	}
	if inst == nil {
		inst = &instance{port: hc.Port}
		inst.namespace, inst.name, _ = strings.Cut(key, "/")
		s.services[key] = inst
	}
	inst.endpoints.Store(int64(hc.LocalEndpoints))
	if inst.srv == nil {
		s.listenLocked(key, svc, inst)
	}
}

// listenLocked binds inst's port and serves it; a failure is logged and reported once per
// distinct error, and left for the next call to retry.
func (s *Server) listenLocked(key string, svc *api.Service, inst *instance) {
	addr := net.JoinHostPort(s.cfg.Address, strconv.Itoa(int(inst.port)))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if msg := err.Error(); msg != inst.failure {
			inst.failure = msg
			klog.ErrorS(err, "Failed to start a health check node port; load balancers see this node as down for the Service", "service", key, "port", inst.port)
			if s.cfg.Recorder != nil && svc != nil {
				s.cfg.Recorder.Eventf(svc, api.EventTypeWarning, ReasonFailedToStart,
					"node %s failed to start the health check node port %d: %v", s.cfg.NodeName, inst.port, err)
			}
		}
		return
	}
	inst.failure = ""
	inst.srv = &http.Server{Handler: s.handler(inst), ReadHeaderTimeout: 5 * time.Second}
	go func(srv *http.Server) {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Health check node port stopped", "service", key, "port", inst.port)
		}
	}(inst.srv)
	klog.V(2).InfoS("Opened a health check node port", "service", key, "addr", ln.Addr())
}

func (inst *instance) close() {
	if inst.srv != nil {
		_ = inst.srv.Close() // closes the listener and every connection, kept-alive ones too
	}
}

// Close stops every server; later calls to SetHealthCheck do nothing.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, inst := range s.services {
		inst.close()
	}
	s.services = map[string]*instance{}
	s.closed = true
}

// Response is the body of every answer, the document kube-proxy writes.
type Response struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (s *Server) handler(inst *instance) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		var r Response
		r.Service.Namespace, r.Service.Name = inst.namespace, inst.name
		r.LocalEndpoints = int(inst.endpoints.Load())
		r.ServiceProxyHealthy = s.cfg.Proxy == nil || s.cfg.Proxy.Healthy()
		body, _ := json.Marshal(r) // cannot fail: strings, an int and a bool
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		// The weight some load balancers read to spread traffic by local endpoints.
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(r.LocalEndpoints))
		if r.LocalEndpoints > 0 && r.ServiceProxyHealthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write(body)
	})
}
