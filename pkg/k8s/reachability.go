package k8s

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Reachability follows whether the API server answers, for an agent that must keep working cut
// off from it (docs/autonomy.md). It probes the server on a connection of its own (Client.Probe:
// GET /version over HTTP/1.1, a fresh TCP connection after every failure, so a dead connection
// cannot hide a healed link): every Interval while the server answers, every Retry once a probe
// failed. Two failed probes in a row make the server unreachable; the first answer after that
// makes it reachable again, ends the outage, and runs the OnReconnect functions (the client closes
// its connections there, so watches stuck on a dead connection restart at once) before it lets the
// waiters of Wait go on.
//
// While the server is unreachable, the informers' lists and watches wait for it (Wait) instead of
// being sent into the dead link: there they would hang in TCP's retransmission backoff or fail
// into client-go's reflector backoff (up to a minute), and the agent would see the API server's
// changes after the link returns only when that timing allows.
type Reachability struct {
	probe             func(ctx context.Context) error
	interval, retry   time.Duration
	timeout           time.Duration
	failuresToOutage  int
	logger            klog.Logger
	now               func() time.Time
	mu                sync.Mutex
	reachable         bool
	since             time.Time     // start of the current state (the first failed probe of an outage)
	up                chan struct{} // closed while reachable
	outages           int
	last              Outage
	pending           []Outage // ended outages not yet taken by Reconnections
	onReconnect       []func(Outage)
	consecutiveFailed int
	firstFailed       time.Time
	lastErr           error
}

// Outage is one period the API server did not answer: from the first failed probe to the first
// answer after it.
type Outage struct {
	Start, End time.Time
}

// Duration is how long the outage lasted.
func (o Outage) Duration() time.Duration { return o.End.Sub(o.Start) }

// ReachabilityStatus is what Status reports.
type ReachabilityStatus struct {
	Reachable bool
	// Since is when the current state began: the last outage's end, or the current outage's start.
	Since time.Time
	// Outages counts the outages that ended since the agent started, and Last is the latest one.
	Outages int
	Last    Outage
	// Err is the last probe's error while unreachable.
	Err error
}

// Default probe timings: a probe every 10 s costs the API server one GET /version per agent and
// interval; while it fails, one a second, so the return of the link is noticed within a second.
const (
	DefaultProbeInterval = 10 * time.Second
	DefaultProbeRetry    = time.Second
	DefaultProbeTimeout  = 2 * time.Second
)

// NewReachability returns a monitor of probe, which must fail only when the server does not
// answer (a transport error or a timeout); it starts reachable and probes once Run starts.
func NewReachability(probe func(ctx context.Context) error, interval time.Duration) *Reachability {
	if interval <= 0 {
		interval = DefaultProbeInterval
	}
	r := &Reachability{
		probe: probe, interval: interval, retry: min(DefaultProbeRetry, interval), timeout: DefaultProbeTimeout,
		failuresToOutage: 2, now: time.Now, reachable: true, up: make(chan struct{}),
	}
	r.since = r.now()
	close(r.up)
	return r
}

// OnReconnect adds fn, called (in the monitor's goroutine) at the end of each outage.
func (r *Reachability) OnReconnect(fn func(Outage)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onReconnect = append(r.onReconnect, fn)
}

// Run probes until ctx is done. Once a probe has failed, a new one starts every Retry without
// waiting for the previous one (at most maxInFlight at a time): a probe whose connection attempt
// was lost in the cut would otherwise hold the next one back for its whole timeout after the
// link returned.
func (r *Reachability) Run(ctx context.Context) {
	r.logger = klog.FromContext(ctx)
	var inFlight sync.WaitGroup
	defer inFlight.Wait()
	slots := make(chan struct{}, maxInFlight)
	for {
		r.mu.Lock()
		failing := r.consecutiveFailed > 0
		r.mu.Unlock()
		next := r.interval
		if failing {
			next = r.retry
			select {
			case slots <- struct{}{}:
				inFlight.Go(func() {
					defer func() { <-slots }()
					r.probeOnce(ctx)
				})
			default: // maxInFlight probes are still waiting for an answer
			}
		} else {
			slots <- struct{}{}
			r.probeOnce(ctx)
			<-slots
			r.mu.Lock()
			if r.consecutiveFailed > 0 {
				next = r.retry
			}
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// maxInFlight bounds the probes waiting for an answer at once during an outage.
const maxInFlight = 4

func (r *Reachability) probeOnce(ctx context.Context) {
	start := r.now()
	pctx, cancel := context.WithTimeout(ctx, r.timeout)
	err := r.probe(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	r.observe(start, err)
}

// observe records the result of a probe sent at t.
func (r *Reachability) observe(t time.Time, err error) {
	r.mu.Lock()
	var (
		ended     *Outage
		callbacks []func(Outage)
		release   chan struct{}
	)
	switch {
	case err != nil && t.Before(r.since):
		// Sent before the current state began (a probe still in flight when another one saw the
		// server answer): it says nothing about now.
	case err != nil:
		r.lastErr = err
		if r.consecutiveFailed == 0 {
			r.firstFailed = t
		}
		r.consecutiveFailed++
		if r.reachable && r.consecutiveFailed >= r.failuresToOutage {
			r.reachable, r.since = false, r.firstFailed
			r.up = make(chan struct{})
			r.log().Info("API server unreachable: the datapath keeps forwarding on the last state it was given",
				"since", r.since.UTC().Format(time.RFC3339), "err", err)
		}
	case !r.reachable:
		o := Outage{Start: r.since, End: r.now()}
		r.reachable, r.since, r.consecutiveFailed, r.lastErr = true, o.End, 0, nil
		r.outages++
		r.last = o
		r.pending = append(r.pending[max(0, len(r.pending)-7):], o)
		// The waiters (the informers' lists and watches) go on only after the callbacks: the
		// client closes its connections there, and a request sent before that could take a
		// pooled connection the cut killed and fail into the reflector's backoff.
		release = r.up
		ended, callbacks = &o, append([]func(Outage){}, r.onReconnect...)
		r.log().Info("API server reachable again: resyncing", "outage", o.Duration().Round(time.Millisecond),
			"from", o.Start.UTC().Format(time.RFC3339), "to", o.End.UTC().Format(time.RFC3339))
	default:
		r.consecutiveFailed, r.lastErr = 0, nil
	}
	r.mu.Unlock()
	if ended != nil {
		for _, fn := range callbacks {
			fn(*ended)
		}
		close(release)
	}
}

func (r *Reachability) log() klog.Logger {
	if r.logger.GetSink() == nil {
		return klog.Background()
	}
	return r.logger
}

// Wait returns once the API server is reachable (at once while it is), or with ctx's error.
func (r *Reachability) Wait(ctx context.Context) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	up := r.up
	r.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status reports the current state.
func (r *Reachability) Status() ReachabilityStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ReachabilityStatus{Reachable: r.reachable, Since: r.since, Outages: r.outages, Last: r.last}
	if !r.reachable {
		s.Err = r.lastErr
	}
	return s
}

// TakeEnded returns the outages that ended since the last call (the last eight at most), for
// whoever reports them once (the agent's APIServerReconnected events).
func (r *Reachability) TakeEnded() []Outage {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.pending
	r.pending = nil
	return out
}
