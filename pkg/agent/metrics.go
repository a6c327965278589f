package agent

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/metrics"
)

// stuckWork is how long one reconcile may run before /healthz calls the agent wedged: reconciles
// write a few map entries and read a lister, so minutes mean a deadlock or a hung syscall.
const stuckWork = 5 * time.Minute

// telemetry is the agent's side of /metrics (pkg/metrics) and of the checks that keep /readyz and
// /healthz true to the running agent after start-up: the programs stay attached, the informers
// stay synced and running, the convergence loop keeps turning and no reconcile hangs. Liveness
// never depends on reaching the API server: an edge node cut off from the cloud keeps its agent.
type telemetry struct {
	metrics  *metrics.Metrics
	lastPass atomic.Int64 // unix nanoseconds of the last convergence pass; 0 before the first
}

// newTelemetry creates the registry and adds /metrics and the checks to ready.
func newTelemetry(cfg Config, ready *readiness) *telemetry {
	t := &telemetry{metrics: metrics.New(cfg.Version, metrics.NewDatapathCollector(cfg.BPFFSRoot))}
	ready.metrics = t.metrics.Handler()
	ready.addChecks(func() error {
		if !ready.datapath.Load() {
			return nil // reported as "datapath not attached"
		}
		return attachmentsInPlace(cfg.BPFFSRoot)
	}, func() error {
		return t.wedged(3*cfg.Resync + time.Minute)
	})
	return t
}

// attachmentsInPlace fails when one of the agent's required programs is not attached under root.
func attachmentsInPlace(root string) error {
	a, err := datapath.ReadAttachments(root)
	if err != nil {
		return fmt.Errorf("reading attachments: %w", err)
	}
	return requiredAttached(a)
}

// requiredAttached fails naming the first required attachment missing from a. The optional ones
// (the XDP link, absent on a NIC without native XDP) are only reported, by /metrics.
func requiredAttached(a datapath.Attachments) error {
	for _, p := range datapath.AttachPoints {
		if !a.Attached[p] {
			return fmt.Errorf("%s not attached", p)
		}
	}
	return nil
}

// wedged fails when the convergence loop has not run for longer than maxGap since its first pass,
// or a reconcile has been running for longer than stuckWork.
func (t *telemetry) wedged(maxGap time.Duration) error {
	if last := t.lastPass.Load(); last != 0 {
		if gap := time.Since(time.Unix(0, last)); gap > maxGap {
			return fmt.Errorf("no convergence pass for %s", gap.Round(time.Second))
		}
	}
	if queue, s := t.metrics.LongestRunningWork(); s > stuckWork.Seconds() {
		return fmt.Errorf("a %s reconcile has been running for %.0fs", queue, s)
	}
	return nil
}

// converged records a convergence pass.
func (t *telemetry) converged() { t.lastPass.Store(time.Now().UnixNano()) }

// watchInformers exports each informer's sync state and adds it to the checks: /readyz until it
// has synced, /healthz if it stops while the agent runs.
func (t *telemetry) watchInformers(ready *readiness, byResource map[string]k8s.Informer) {
	for resource, inf := range byResource {
		t.metrics.SetWatch(resource, inf.HasSynced)
		ready.addChecks(func() error {
			if !inf.HasSynced() {
				return fmt.Errorf("%s informer not synced", resource)
			}
			return nil
		}, func() error {
			if inf.IsStopped() {
				return fmt.Errorf("%s informer stopped", resource)
			}
			return nil
		})
	}
}
