package k8s_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

var source = api.EventSource{Component: "edgeplane-agent", Host: "n1"}

// recorderOn starts a recorder writing through client, with a clock the test moves and no wait
// between tries.
func recorderOn(t *testing.T, client k8s.API) (*k8s.Recorder, *time.Time) {
	t.Helper()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	r := k8s.NewRecorder(client, k8s.Scheme, source)
	k8s.SetRecorderClock(r, func() time.Time { return now }, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, &now
}

// events waits until the namespace holds want Events and returns them.
func events(t *testing.T, cs *fake.Clientset, namespace string, want int) []corev1.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a loaded machine and -race: the fake writes slowly
	for {
		list, err := cs.CoreV1().Events(namespace).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) == want || time.Now().After(deadline) {
			if len(list.Items) != want {
				var said []string
				for _, e := range list.Items[:min(len(list.Items), 30)] {
					said = append(said, fmt.Sprintf("%s %s/%s %q x%d", e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message, e.Count))
				}
				t.Fatalf("%d events in %q, want %d: %s", len(list.Items), namespace, want, strings.Join(said, "; "))
			}
			return list.Items
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countOf waits until the one Event of reason and message has count want.
func countOf(t *testing.T, cs *fake.Clientset, namespace, reason, message string, want int32) corev1.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := cs.CoreV1().Events(namespace).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var found []corev1.Event
		for _, e := range list.Items {
			if e.Reason == reason && e.Message == message {
				found = append(found, e)
			}
		}
		if len(found) == 1 && found[0].Count == want {
			return found[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("events of %s %q: %+v, want one of count %d", reason, message, found, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRecorderWritesAndCountsRepeats(t *testing.T) {
	cs := fake.NewClientset()
	r, now := recorderOn(t, k8stest.FromClientset(cs))
	node := &api.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-n1", ResourceVersion: "5"}}
	svc := &api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-web"}}

	r.Event(node, api.EventTypeWarning, "CloudGatewayIsolated", "cut off")
	e := events(t, cs, metav1.NamespaceDefault, 1)[0]
	first := e.FirstTimestamp
	ref := corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: "n1", UID: "uid-n1", ResourceVersion: "5"}
	if e.InvolvedObject != ref || e.Type != api.EventTypeWarning || e.Count != 1 || e.Source.Component != source.Component || e.Source.Host != source.Host ||
		e.ReportingController != "edgeplane-agent" || e.ReportingInstance != "n1" || !e.LastTimestamp.Equal(&first) {
		t.Errorf("the event as written: %+v", e)
	}

	// The same again, a minute later and about a newer version of the Node: the count of the same
	// Event rises.
	*now = now.Add(time.Minute)
	node.ResourceVersion = "6"
	r.Eventf(node, api.EventTypeWarning, "CloudGatewayIsolated", "cut %s", "off")
	e = countOf(t, cs, metav1.NamespaceDefault, "CloudGatewayIsolated", "cut off", 2)
	if !e.FirstTimestamp.Equal(&first) || !e.LastTimestamp.Time.Equal(*now) {
		t.Errorf("a repeated event's timestamps: first %v last %v, want %v and %v", e.FirstTimestamp, e.LastTimestamp, first, *now)
	}

	// Another message about it is another Event; so is an event about a Service, in its namespace,
	// with its annotations.
	r.Event(node, api.EventTypeWarning, "CloudGatewayIsolated", "cut off again")
	r.AnnotatedEventf(svc, map[string]string{"a": "b"}, api.EventTypeNormal, "Programmed", "%d frontends", 3)
	events(t, cs, metav1.NamespaceDefault, 2)
	e = events(t, cs, "shop", 1)[0]
	if e.InvolvedObject.Kind != "Service" || e.Message != "3 frontends" || e.Annotations["a"] != "b" || e.Type != api.EventTypeNormal {
		t.Errorf("the Service's event: %+v", e)
	}

	// An Event deleted in the API server is created again when repeated.
	if err := cs.CoreV1().Events("shop").Delete(t.Context(), e.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.AnnotatedEventf(svc, map[string]string{"a": "b"}, api.EventTypeNormal, "Programmed", "%d frontends", 3)
	countOf(t, cs, "shop", "Programmed", "3 frontends", 2)

	// What the recorder cannot reference or does not know is not written.
	r.Event(nil, api.EventTypeNormal, "Nothing", "x")
	r.Event(node, "Loud", "Nothing", "x")
	r.Event(svc, api.EventTypeNormal, "Last", "x") // written after the two above, had they been
	events(t, cs, "shop", 2)
	events(t, cs, metav1.NamespaceDefault, 2)
}

func TestRecorderLimitsEachObject(t *testing.T) {
	cs := fake.NewClientset()
	r, now := recorderOn(t, k8stest.FromClientset(cs))
	svc := &api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	other := &api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "other"}}
	for i := range 30 {
		r.Eventf(svc, api.EventTypeWarning, "Broken", "problem %d", i)
	}
	r.Event(other, api.EventTypeWarning, "Broken", "mark") // written after the 30, as far as they are
	countOf(t, cs, "shop", "Broken", "mark", 1)
	events(t, cs, "shop", 25+1)

	// One more every five minutes.
	*now = now.Add(5 * time.Minute)
	r.Eventf(svc, api.EventTypeWarning, "Broken", "problem %d", 30)
	r.Eventf(svc, api.EventTypeWarning, "Broken", "problem %d", 31)
	r.Event(other, api.EventTypeWarning, "Broken", "mark")
	countOf(t, cs, "shop", "Broken", "mark", 2)
	events(t, cs, "shop", 25+1+1)
}

// failingAPI fails the first creates of the events of reason First with err.
type failingAPI struct {
	k8s.API
	fails atomic.Int32
	err   error
	tries atomic.Int32
}

func (a *failingAPI) CreateEvent(ctx context.Context, event *api.Event) (*api.Event, error) {
	if event.Reason != "First" {
		return a.API.CreateEvent(ctx, event)
	}
	a.tries.Add(1)
	if a.fails.Add(-1) >= 0 {
		return nil, a.err
	}
	return a.API.CreateEvent(ctx, event)
}

func TestRecorderRetriesWhatWasNotAnswered(t *testing.T) {
	gr := schema.GroupResource{Resource: "events"}
	for _, tc := range []struct {
		name    string
		err     error
		fails   int32
		written bool
		tries   int32
	}{
		{"no answer, then written", errors.New("dial tcp: connection refused"), 3, true, 4},
		{"503 from a proxy, then written", apierrors.NewServiceUnavailable("cloud unreachable"), 2, true, 3},
		{"429, then written", apierrors.NewTooManyRequests("slow down", 1), 1, true, 2},
		{"no answer twelve times: dropped", errors.New("i/o timeout"), 100, false, 12},
		{"refused: not tried again", apierrors.NewForbidden(gr, "x", errors.New("no")), 1, false, 1},
		{"invalid: not tried again", apierrors.NewBadRequest("bad"), 1, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset()
			fapi := &failingAPI{API: k8stest.FromClientset(cs), err: tc.err}
			fapi.fails.Store(tc.fails)
			r, _ := recorderOn(t, fapi)
			node := &api.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
			r.Event(node, api.EventTypeWarning, "First", "x")
			r.Event(node, api.EventTypeWarning, "Mark", "x") // tried once the first is done with
			want := 1
			if tc.written {
				want = 2
			}
			evs := events(t, cs, metav1.NamespaceDefault, want)
			if tries := fapi.tries.Load(); tries != tc.tries {
				t.Errorf("the first event was tried %d times, want %d (%v)", tries, tc.tries, evs)
			}
		})
	}
}

// While the agent's monitor knows the API server unreachable, an event it did not answer waits
// for its return, however many tries that would have been, and is written then.
func TestRecorderHoldsEventsThroughAnOutage(t *testing.T) {
	cs := fake.NewClientset()
	fapi := &failingAPI{API: k8stest.FromClientset(cs), err: errors.New("dial tcp: i/o timeout")}
	fapi.fails.Store(1 << 20)
	reach := k8s.NewReachability(func(context.Context) error { return nil }, time.Second)
	clock := time.Now()
	k8s.ObserveProbe(reach, clock, fapi.err)
	k8s.ObserveProbe(reach, clock.Add(time.Second), fapi.err) // two failed probes: an outage
	r := k8s.NewRecorder(fapi, k8s.Scheme, source)
	k8s.SetRecorderClock(r, time.Now, time.Millisecond)
	r.FollowReachability(reach)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	node := &api.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	r.Event(node, api.EventTypeWarning, "First", "recorded during the cut")
	time.Sleep(200 * time.Millisecond) // 12 tries 1 ms apart would have dropped it long ago
	if tries := fapi.tries.Load(); tries != 1 {
		t.Errorf("tried %d times during the outage, want 1 (then held)", tries)
	}
	fapi.fails.Store(0)
	k8s.ObserveProbe(reach, clock.Add(time.Minute), nil) // the link returns
	e := events(t, cs, metav1.NamespaceDefault, 1)[0]
	if e.Reason != "First" || fapi.tries.Load() != 2 {
		t.Errorf("after the outage: %+v, %d tries", e, fapi.tries.Load())
	}
}

// lostAnswerAPI writes the first create of an event but answers it with a timeout.
type lostAnswerAPI struct {
	k8s.API
	lost atomic.Bool
}

func (a *lostAnswerAPI) CreateEvent(ctx context.Context, event *api.Event) (*api.Event, error) {
	written, err := a.API.CreateEvent(ctx, event)
	if err == nil && a.lost.CompareAndSwap(false, true) {
		return nil, errors.New("net/http: timeout awaiting response headers")
	}
	return written, err
}

// A create whose answer was lost is written: the next try's AlreadyExists says so, and a repeat
// raises the count of that one Event.
func TestRecorderCreateWhoseAnswerWasLost(t *testing.T) {
	cs := fake.NewClientset()
	r, _ := recorderOn(t, &lostAnswerAPI{API: k8stest.FromClientset(cs)})
	node := &api.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	r.Event(node, api.EventTypeWarning, "Cut", "x")
	r.Event(node, api.EventTypeWarning, "Cut", "x")
	countOf(t, cs, metav1.NamespaceDefault, "Cut", "x", 2)
}

// Occurrences over the rate are not written, but they count: the next write says how many there
// were.
func TestRecorderCountsWhatTheRateHeldBack(t *testing.T) {
	cs := fake.NewClientset()
	r, now := recorderOn(t, k8stest.FromClientset(cs))
	svc := &api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	other := &api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "other"}}
	for range 30 {
		r.Event(svc, api.EventTypeWarning, "Broken", "same")
	}
	r.Event(other, api.EventTypeWarning, "Broken", "mark")
	countOf(t, cs, "shop", "Broken", "mark", 1)
	countOf(t, cs, "shop", "Broken", "same", eventBurstForTest)
	*now = now.Add(5 * time.Minute)
	r.Event(svc, api.EventTypeWarning, "Broken", "same")
	countOf(t, cs, "shop", "Broken", "same", 31)
}

// eventBurstForTest is the recorder's burst per object.
const eventBurstForTest = 25

// An object whose name leaves no room for the event's suffix gets an event name of its own.
func TestRecorderNamesEventsOfLongNames(t *testing.T) {
	cs := fake.NewClientset()
	r, _ := recorderOn(t, k8stest.FromClientset(cs))
	long := strings.Repeat("a", 250)
	r.Event(&api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: long}}, api.EventTypeNormal, "R", "m")
	e := events(t, cs, "shop", 1)[0]
	if len(e.Name) > 253 || strings.HasPrefix(e.Name, "aaa") || e.InvolvedObject.Name != long {
		t.Errorf("event %q about %q", e.Name, e.InvolvedObject.Name)
	}
}

func TestRecorderDropsWhenTheQueueIsFull(t *testing.T) {
	cs := fake.NewClientset()
	r := k8s.NewRecorder(k8stest.FromClientset(cs), k8s.Scheme, source)
	for i := range 1200 { // nothing writes yet
		r.Event(&api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprint("s", i)}}, api.EventTypeNormal, "R", "m")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	events(t, cs, "shop", 1000)
	// The other 200 were dropped: an event recorded now is the next one written.
	r.Event(&api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "mark"}}, api.EventTypeNormal, "R", "m")
	events(t, cs, "shop", 1001)
}
