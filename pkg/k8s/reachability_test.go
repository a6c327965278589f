package k8s

import (
	"context"
	"errors"
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
	// A failure, then an answer: no outage.
	r.observe(clock.Add(time.Second), cut)
	r.observe(clock.Add(2*time.Second), nil)
	if s := r.Status(); !s.Reachable || s.Outages != 1 {
		t.Fatalf("a single failed probe counted as an outage: %+v", s)
	}
}
