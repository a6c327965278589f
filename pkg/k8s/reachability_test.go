package k8s

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestReachabilityOutage: one failed probe is not an outage, two are; Wait blocks during it; the
// first answer ends it (duration from the first failed probe), runs OnReconnect and queues it
// once for TakeEnded.
func TestReachabilityOutage(t *testing.T) {
	r := NewReachability(func(context.Context) error { return nil }, time.Second)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return clock }
	r.since = clock // the monitor started at the fake clock
	var reconnected []Outage
	r.OnReconnect(func(o Outage) { reconnected = append(reconnected, o) })
	cut := errors.New("i/o timeout")

	t0 := clock
	r.observe(t0, cut)
	if !r.Status().Reachable {
		t.Fatal("one failed probe made the API server unreachable")
	}
	r.observe(t0.Add(time.Second), cut)
	if s := r.Status(); s.Reachable || !s.Since.Equal(t0) || s.Err != cut {
		t.Fatalf("after two failed probes: %+v, want unreachable since %v", s, t0)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := r.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait during the outage: %v, want it to block until the deadline", err)
	}
	clock = t0.Add(90 * time.Second)
	r.observe(clock, nil)
	s := r.Status()
	if !s.Reachable || s.Outages != 1 || s.Last.Duration() != 90*time.Second {
		t.Fatalf("after the answer: %+v, want reachable, 1 outage of 90s", s)
	}
	if err := r.Wait(t.Context()); err != nil {
		t.Fatalf("Wait after the outage: %v", err)
	}
	if len(reconnected) != 1 || reconnected[0] != s.Last {
		t.Fatalf("OnReconnect saw %v, want [%v]", reconnected, s.Last)
	}
	if got := r.TakeEnded(); len(got) != 1 || got[0] != s.Last {
		t.Fatalf("TakeEnded = %v, want [%v]", got, s.Last)
	}
	if got := r.TakeEnded(); len(got) != 0 {
		t.Fatalf("TakeEnded again = %v, want none", got)
	}
	// Probes sent before the answer that ended the outage and failing after it are stale.
	r.observe(t0.Add(89*time.Second), cut)
	r.observe(t0.Add(89*time.Second), cut)
	if s := r.Status(); !s.Reachable {
		t.Fatalf("failures of probes sent during the outage, reported after its end, started another: %+v", s)
	}
	// A failure, then an answer: no outage.
	r.observe(clock.Add(time.Second), cut)
	r.observe(clock.Add(2*time.Second), nil)
	if s := r.Status(); !s.Reachable || s.Outages != 1 {
		t.Fatalf("a single failed probe counted as an outage: %+v", s)
	}
}

// TestReachabilityNoticesReturnWithinRetry: during an outage a probe lost in the cut (no answer
// until its timeout) does not hold back the next one, so the end is noticed about one retry after
// the link returns, not a whole probe timeout later.
func TestReachabilityNoticesReturnWithinRetry(t *testing.T) {
	var cut atomic.Bool
	cut.Store(true)
	r := NewReachability(func(ctx context.Context) error {
		if cut.Load() {
			<-ctx.Done() // a dropped SYN: nothing comes back
			return ctx.Err()
		}
		return nil
	}, 20*time.Millisecond)
	r.retry, r.timeout = 200*time.Millisecond, 500*time.Millisecond // as 1 s and 2 s: at most 3 in flight
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for r.Status().Reachable {
		if time.Now().After(deadline) {
			t.Fatal("no outage after 10 s of probes without answers")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // probes in flight, each waiting for its timeout
	cut.Store(false)
	healed := time.Now()
	for !r.Status().Reachable {
		if time.Since(healed) > 5*time.Second {
			t.Fatal("the return not noticed within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Probes waiting for each other would notice it up to a timeout and a retry (700 ms) later.
	if took := time.Since(healed); took > 450*time.Millisecond {
		t.Errorf("the return noticed %v after it, want about one retry (%v)", took, r.retry)
	} else {
		t.Logf("the return noticed %v after it", took)
	}
}

// TestReachabilityReleasesWaitersAfterReconnect: a list or watch waiting out the outage goes on
// only after the OnReconnect functions ran (the client's connections closed), never on a pooled
// connection the cut killed.
func TestReachabilityReleasesWaitersAfterReconnect(t *testing.T) {
	r := NewReachability(func(context.Context) error { return nil }, time.Second)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return clock }
	r.since = clock
	cut := errors.New("i/o timeout")
	r.observe(clock, cut)
	r.observe(clock.Add(time.Second), cut)

	var closed atomic.Bool
	waited := make(chan bool, 1)
	go func() {
		if err := r.Wait(t.Context()); err != nil {
			t.Errorf("Wait: %v", err)
		}
		waited <- closed.Load()
	}()
	r.OnReconnect(func(Outage) {
		time.Sleep(20 * time.Millisecond) // a waiter released early would run now
		closed.Store(true)
	})
	time.Sleep(10 * time.Millisecond) // the waiter blocks in Wait
	clock = clock.Add(time.Minute)
	r.observe(clock, nil)
	select {
	case afterCallbacks := <-waited:
		if !afterCallbacks {
			t.Fatal("Wait returned before the OnReconnect functions ran")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the outage ended")
	}
}
