package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// readiness is what /readyz reports: the datapath is attached and the informers have synced and the
// maps hold every node; the checks added later (metrics.go) keep verifying both while the agent
// runs. /healthz reports liveness: the process answers and its live checks pass.
type readiness struct {
	datapath atomic.Bool
	synced   atomic.Bool

	metrics http.Handler // /metrics; nil: not served

	mu          sync.Mutex
	readyChecks []func() error
	liveChecks  []func() error
	// notes are lines /readyz adds to its answer, ready or not, without deciding it (the API
	// server's reachability, autonomy.go); "" adds none.
	notes []func() string
}

// addNote adds a line /readyz reports after its verdict.
func (r *readiness) addNote(note func() string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, note)
}

func (r *readiness) noteLines() string {
	r.mu.Lock()
	notes := slices.Clone(r.notes)
	r.mu.Unlock()
	var b strings.Builder
	for _, n := range notes {
		if line := n(); line != "" {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// addChecks adds a readiness and a liveness check (either may be nil); an error is the problem.
func (r *readiness) addChecks(ready, live func() error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ready != nil {
		r.readyChecks = append(r.readyChecks, ready)
	}
	if live != nil {
		r.liveChecks = append(r.liveChecks, live)
	}
}

func (r *readiness) problems() []string {
	var p []string
	if !r.datapath.Load() {
		p = append(p, "datapath not attached")
	}
	if !r.synced.Load() {
		p = append(p, "informers not synced")
	}
	r.mu.Lock()
	checks := slices.Clone(r.readyChecks)
	r.mu.Unlock()
	return append(p, failing(checks)...)
}

func (r *readiness) liveProblems() []string {
	r.mu.Lock()
	checks := slices.Clone(r.liveChecks)
	r.mu.Unlock()
	return failing(checks)
}

func failing(checks []func() error) []string {
	var p []string
	for _, check := range checks {
		if err := check(); err != nil {
			p = append(p, err.Error())
		}
	}
	return p
}

// healthz answers a liveness probe.
func (r *readiness) healthz(w http.ResponseWriter, _ *http.Request) {
	if p := r.liveProblems(); len(p) > 0 {
		http.Error(w, strings.Join(p, "; "), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (r *readiness) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", r.healthz)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if p := r.problems(); len(p) > 0 {
			http.Error(w, strings.Join(p, "; ")+"\n"+r.noteLines(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok\n"+r.noteLines())
	})
	if r.metrics != nil {
		mux.Handle("/metrics", r.metrics)
	}
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
