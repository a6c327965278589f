package k8s_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// One of several agents holds the Lease; when it stops, another takes over and is told so.
func TestElectionOneHolderAndHandOver(t *testing.T) {
	cs := fake.NewClientset()
	api := k8stest.FromClientset(cs)
	const n = 3
	var (
		elections [n]*k8s.Election
		cancels   [n]context.CancelFunc
		done      [n]chan struct{}
		acquired  [n]atomic.Int32
	)
	for i := range n {
		elections[i] = &k8s.Election{API: api, Namespace: "edgeplane-system", Name: "reporter",
			Identity: string(rune('a' + i)), Duration: 3 * time.Second}
		elections[i].OnAcquire(func() { acquired[i].Add(1) })
		ctx, cancel := context.WithCancel(t.Context())
		cancels[i], done[i] = cancel, make(chan struct{})
		go func() { defer close(done[i]); elections[i].Run(ctx) }()
	}
	defer func() {
		for i := range n {
			cancels[i]()
			<-done[i]
		}
	}()
	holder := waitHolder(t, elections[:], -1)
	time.Sleep(2 * time.Second) // a few renewals: still one holder
	if h := waitHolder(t, elections[:], -1); h != holder {
		t.Fatalf("holder changed from %d to %d without a reason", holder, h)
	}
	if acquired[holder].Load() != 1 {
		t.Errorf("OnAcquire ran %d times on the holder", acquired[holder].Load())
	}
	cancels[holder]()
	<-done[holder]
	lease, err := cs.CoordinationV1().Leases("edgeplane-system").Get(t.Context(), "reporter", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == elections[holder].Identity {
		t.Errorf("a stopped holder did not release the Lease: %+v", lease.Spec)
	}
	next := waitHolder(t, elections[:], holder)
	if acquired[next].Load() != 1 {
		t.Errorf("OnAcquire ran %d times on the new holder", acquired[next].Load())
	}
}

// waitHolder waits until exactly one election other than skip holds the Lease.
func waitHolder(t *testing.T, elections []*k8s.Election, skip int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		holder, holders := -1, 0
		for i, e := range elections {
			if i != skip && e.Held() {
				holder, holders = i, holders+1
			}
		}
		if holders == 1 {
			return holder
		}
		if holders > 1 {
			t.Fatalf("%d agents hold the Lease at once", holders)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no agent took the Lease")
	return -1
}

func TestWhileHeldPassesEventsOnlyWhileHeld(t *testing.T) {
	fake := record.NewFakeRecorder(4)
	var held atomic.Bool
	r := k8s.WhileHeld(fake, held.Load)
	r.Event(nil, "Warning", "A", "dropped")
	held.Store(true)
	r.Eventf(nil, "Warning", "B", "passed %d", 1)
	if len(fake.Events) != 1 {
		t.Fatalf("%d events, want 1", len(fake.Events))
	}
	if ev := <-fake.Events; ev != "Warning B passed 1" {
		t.Errorf("event %q", ev)
	}
}

// Without RBAC for the Lease (an upgrade that did not apply deploy/), every agent records events
// rather than none.
func TestElectionForbiddenFallsBackToEveryAgent(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("*", "leases", func(action k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "reporter", errors.New("no RBAC"))
	})
	e := &k8s.Election{API: k8stest.FromClientset(cs), Namespace: "edgeplane-system", Name: "reporter", Identity: "a", Duration: 3 * time.Second}
	acquired := make(chan struct{}, 1)
	e.OnAcquire(func() { acquired <- struct{}{} })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-acquired:
	case <-time.After(5 * time.Second):
		t.Fatal("an agent that cannot use the Lease never reports")
	}
	if !e.Held() {
		t.Error("Held() is false in the fallback")
	}
}
