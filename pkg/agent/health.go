package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// readiness is what /readyz reports: the datapath is attached and the informers have synced and the
// maps hold every node.
type readiness struct {
	datapath atomic.Bool
	synced   atomic.Bool
}

func (r *readiness) problems() []string {
	var p []string
	if !r.datapath.Load() {
		p = append(p, "datapath not attached")
	}
	if !r.synced.Load() {
		p = append(p, "informers not synced")
	}
	return p
}

func (r *readiness) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if p := r.problems(); len(p) > 0 {
			http.Error(w, strings.Join(p, "; "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// serve listens on addr until ctx is done. Listening happens before it returns, so a port clash
// fails the start-up.
func (r *readiness) serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on --metrics-addr %s: %w", addr, err)
	}
	srv := &http.Server{Handler: r.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			klog.FromContext(ctx).Error(err, "Health server stopped", "addr", addr)
		}
	}()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return nil
}
