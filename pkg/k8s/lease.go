package k8s

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// Election makes one agent of the cluster the holder of a Lease, as client-go's leaderelection
// does with its LeaseLock, but on the narrow API (client-go's lock needs the clientset): the holder
// renews the Lease every Duration/3; the others read it as often and take it over once they have
// seen it unchanged for a whole Duration (measured on their own clock, so clock skew between nodes
// does not matter), through an update that the API server refuses if someone else changed the
// Lease first. A holder that stops (SIGTERM) releases it, so the next agent takes over at its next
// look; one that dies is replaced within about Duration + Duration/3. Each agent reads one small
// object every Duration/3 (with 15 s, 1,000 nodes make 200 reads a second).
type Election struct {
	API       API
	Namespace string
	Name      string
	Identity  string // this agent: its node name
	Duration  time.Duration

	held atomic.Bool

	mu         sync.Mutex
	onAcquire  []func()
	observed   string // the Lease's holder and renew time as last read
	observedAt time.Time
	renewed    time.Time // this agent's last successful write of the Lease
}

// Held reports whether this agent holds the Lease (as of its last renewal).
func (e *Election) Held() bool { return e.held.Load() }

// OnAcquire registers fn, called (from Run's goroutine) each time this agent takes the Lease.
func (e *Election) OnAcquire(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onAcquire = append(e.onAcquire, fn)
}

// Run takes part in the election until ctx is done, then releases the Lease if it holds it.
func (e *Election) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("lease", e.Namespace+"/"+e.Name)
	period := e.Duration / 3
	unusable := false // the Lease cannot be had at all (no RBAC, no namespace): everyone reports
	for {
		held, err := e.try(ctx)
		cannot := apierrors.IsForbidden(err) || apierrors.IsNotFound(err)
		switch {
		case held:
			e.renewed = time.Now()
		case err != nil && e.held.Load() && !unusable && time.Since(e.renewed) < e.Duration*2/3:
			held = true // a failed renewal; the Lease is still ours for a while: retry
		case cannot:
			// Better every agent's events than none (the behaviour without a Lease).
			held = true
		}
		if cannot != unusable && ctx.Err() == nil {
			unusable = cannot
			if cannot {
				logger.Error(err, "The reporter Lease cannot be used (apply deploy/'s RBAC and namespace): every agent records events about cluster-wide objects")
			} else {
				logger.Info("The reporter Lease can be used again")
			}
		}
		switch {
		case err != nil && !cannot && ctx.Err() == nil:
			logger.Error(err, "Taking part in the reporter election; retrying")
		case held && !e.held.Load():
			logger.Info("This agent now reports problems of cluster-wide objects")
		case !held && e.held.Load():
			logger.Info("Another agent reports problems of cluster-wide objects now")
		}
		was := e.held.Swap(held)
		if held && !was {
			e.mu.Lock()
			fns := append([]func(){}, e.onAcquire...)
			e.mu.Unlock()
			for _, fn := range fns {
				fn()
			}
		}
		wait := period
		if !held {
			wait += rand.N(period / 4) // spread the candidates' reads
		}
		select {
		case <-ctx.Done():
			if e.held.Swap(false) && !unusable {
				e.release(logger)
			}
			return
		case <-time.After(wait):
		}
	}
}

// try renews or takes the Lease when it may, reporting whether this agent holds it afterwards.
// Failing to renew in time counts as losing it.
func (e *Election) try(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, e.Duration/3)
	defer cancel()
	lease, err := e.API.GetLease(ctx, e.Namespace, e.Name)
	now := time.Now()
	if apierrors.IsNotFound(err) {
		_, err = e.API.CreateLease(ctx, e.Namespace, e.record(&coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace,
				Labels: map[string]string{"app.kubernetes.io/name": "edgeplane-agent"}},
		}, now, true))
		return err == nil, ignoreRace(err)
	}
	if err != nil {
		return false, err
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	e.mu.Lock()
	seen := holder + "@" + lease.Spec.RenewTime.String()
	if seen != e.observed {
		e.observed, e.observedAt = seen, now
	}
	expired := now.Sub(e.observedAt) > e.Duration
	e.mu.Unlock()
	if holder != e.Identity && holder != "" && !expired {
		return false, nil
	}
	_, err = e.API.UpdateLease(ctx, e.record(lease.DeepCopy(), now, holder != e.Identity))
	return err == nil, ignoreRace(err)
}

// record makes lease say this agent holds it as of now; taking marks a change of holder.
func (e *Election) record(lease *coordinationv1.Lease, now time.Time, taking bool) *coordinationv1.Lease {
	seconds := int32((e.Duration + time.Second - 1) / time.Second)
	t := metav1.NewMicroTime(now)
	lease.Spec.HolderIdentity = &e.Identity
	lease.Spec.LeaseDurationSeconds = &seconds
	lease.Spec.RenewTime = &t
	if taking {
		lease.Spec.AcquireTime = &t
		transitions := int32(0)
		if lease.Spec.LeaseTransitions != nil {
			transitions = *lease.Spec.LeaseTransitions + 1
		}
		lease.Spec.LeaseTransitions = &transitions
	}
	return lease
}

// release gives the Lease up on the way out: an empty holder, which every candidate may take at
// its next look.
func (e *Election) release(logger klog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	lease, err := e.API.GetLease(ctx, e.Namespace, e.Name)
	if err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == e.Identity {
		lease.Spec.HolderIdentity = nil
		_, err = e.API.UpdateLease(ctx, lease)
	}
	if err != nil {
		logger.Error(err, "Releasing the reporter Lease; another agent takes over when it expires")
	}
}

// ignoreRace: another agent created or changed the Lease between the read and the write; the
// next look sees who.
func ignoreRace(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
