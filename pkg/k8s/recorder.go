package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
	"k8s.io/utils/lru"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// EventRecorder records events about objects. It has the method set of client-go's
// record.EventRecorder, so that tests can pass its FakeRecorder.
type EventRecorder interface {
	Event(object runtime.Object, eventtype, reason, message string)
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
	AnnotatedEventf(object runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any)
}

// Recorder is the agent's event recorder: what client-go's event broadcaster does for it, without
// linking that package. The broadcaster's correlator computes its updates as strategic merge
// patches, which links the OpenAPI models and a protobuf runtime (~1.5 MB of the agent's binary
// together with the metrics, and resident in every agent). What the agent relies on is kept:
//
//   - recording never blocks: events queue (up to maxQueuedEvents; more are dropped and logged)
//     and one goroutine writes them in order;
//   - an event identical to one written before (same source, object, type, reason and message;
//     the last eventCacheSize kept) raises that Event's count and last timestamp, a patch of the
//     three fields, or creates it again if it is gone;
//   - a source may write eventBurst events about an object, then one every eventRefill
//     (client-go's spam filter); the repeats it holds back still count;
//   - a create answered AlreadyExists was written by an earlier try whose answer was lost;
//   - an object name too long for the event's suffix gets an event name of its own;
//   - a write the API server did not answer is tried again eventTries times, eventRetry apart (the
//     first wait randomized), so that an outage of a minute or two loses nothing; a write it
//     refused is not. While the agent's monitor knows the API server unreachable
//     (FollowReachability), the write waits for its return instead, however long the cut lasts:
//     what the agent recorded during a partition is written after it, with its own timestamps.
//
// Left out: the broadcaster's aggregation of more than ten events about an object that differ only
// in their message (the agent's messages name what is wrong, and the spam filter bounds them), and
// its watchers and log sinks.
type Recorder struct {
	api    API
	scheme *runtime.Scheme
	source api.EventSource
	queue  chan *api.Event

	// now and retry are the clock and the wait between tries; tests shorten them.
	now   func() time.Time
	retry time.Duration
	// dropped counts the events dropped because the queue was full.
	dropped atomic.Uint64
	// lastName is the time in the last event's name: names differ even within one tick of the clock.
	lastName atomic.Int64
	// reachability, when set, holds a write the API server did not answer while it is known
	// unreachable, without counting the tries (FollowReachability).
	reachability *Reachability

	// seen (eventKey: seenEvent) and spam (spamKey: *tokenBucket) are the worker's: the events
	// written, and the rate of each object's.
	seen, spam *lru.Cache
}

const (
	maxQueuedEvents = 1000
	eventCacheSize  = 4096
	eventTries      = 12
	eventRetry      = 10 * time.Second
	eventBurst      = 25
	eventRefill     = 5 * time.Minute
)

// NewRecorder records events from source, writing them through client. Events are written once
// Run runs.
func NewRecorder(client API, scheme *runtime.Scheme, source api.EventSource) *Recorder {
	return &Recorder{
		api: client, scheme: scheme, source: source,
		queue: make(chan *api.Event, maxQueuedEvents),
		now:   time.Now, retry: eventRetry,
		seen: lru.New(eventCacheSize), spam: lru.New(eventCacheSize),
	}
}

var _ EventRecorder = (*Recorder)(nil)

func (r *Recorder) Event(object runtime.Object, eventtype, reason, message string) {
	r.record(object, nil, eventtype, reason, message)
}

func (r *Recorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.record(object, nil, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

func (r *Recorder) AnnotatedEventf(object runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any) {
	r.record(object, annotations, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

func (r *Recorder) record(object runtime.Object, annotations map[string]string, eventtype, reason, message string) {
	logger := klog.Background()
	ref, err := reference(r.scheme, object)
	if err != nil {
		logger.Error(err, "Not recording an event about an object it cannot reference", "reason", reason, "message", message)
		return
	}
	if eventtype != api.EventTypeNormal && eventtype != api.EventTypeWarning {
		logger.Error(nil, "Not recording an event of an unknown type", "type", eventtype, "reason", reason)
		return
	}
	now := r.now()
	event := NewEvent(ref, r.source, eventtype, reason, message, now, r.nameTime(now.UnixNano()))
	event.Annotations = annotations
	select {
	case r.queue <- event:
	default:
		// Logged at the 1st, 2nd, 4th, 8th... drop: a flood of events is not a flood of lines.
		if n := r.dropped.Add(1); n&(n-1) == 0 {
			logger.Error(nil, "Dropping an event: too many queued", "dropped", n, "object", klog.KRef(ref.Namespace, ref.Name), "reason", reason, "message", message)
		}
	}
}

// NewEvent is an event from source about ref at t, named after ref and nameNanos (its time in
// nanoseconds, unless two events share one), in ref's namespace or default for a cluster-scoped
// object: as client-go's recorder makes them.
func NewEvent(ref *api.ObjectReference, source api.EventSource, eventtype, reason, message string, t time.Time, nameNanos int64) *api.Event {
	name := ref.Name + "." + strconv.FormatInt(nameNanos, 16)
	if len(validation.IsDNS1123Subdomain(name)) > 0 { // a long object name, as client-go does
		name = fmt.Sprintf("%016x.%x", rand.Uint64(), nameNanos)
	}
	namespace := ref.Namespace
	if namespace == "" {
		namespace = metav1.NamespaceDefault // where the events of cluster-scoped objects live
	}
	at := metav1.NewTime(t)
	return &api.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: namespace},
		InvolvedObject: *ref,
		Reason:         reason, Message: message, Type: eventtype,
		FirstTimestamp: at, LastTimestamp: at, Count: 1,
		Source:              source,
		ReportingController: source.Component, ReportingInstance: source.Host,
	}
}

// nameTime is nanos, or just after the last event's when that is not earlier.
func (r *Recorder) nameTime(nanos int64) int64 {
	for {
		last := r.lastName.Load()
		next := max(nanos, last+1)
		if r.lastName.CompareAndSwap(last, next) {
			return next
		}
	}
}

// reference references object for an event: by its own kind when it carries one, else by the
// kind of its type: package api's, or as the scheme knows it (the compact types).
func reference(scheme *runtime.Scheme, object runtime.Object) (*api.ObjectReference, error) {
	if ref, ok := object.(*api.ObjectReference); ok {
		return ref, nil
	}
	if object == nil {
		return nil, errors.New("no object")
	}
	gvk := object.GetObjectKind().GroupVersionKind()
	if gvk.Empty() {
		gvk = api.KindOf(object)
	}
	if gvk.Empty() {
		kinds, _, err := scheme.ObjectKinds(object)
		if err != nil {
			return nil, err
		}
		if len(kinds) == 0 {
			return nil, fmt.Errorf("no kind for %T", object)
		}
		gvk = kinds[0]
	}
	m, err := meta.Accessor(object)
	if err != nil {
		return nil, err
	}
	return &api.ObjectReference{
		Kind: gvk.Kind, APIVersion: gvk.GroupVersion().String(),
		Namespace: m.GetNamespace(), Name: m.GetName(), UID: m.GetUID(), ResourceVersion: m.GetResourceVersion(),
	}, nil
}

// FollowReachability holds the writes the API server does not answer while reach says it is
// unreachable. Call it before Run.
func (r *Recorder) FollowReachability(reach *Reachability) { r.reachability = reach }

// Run writes the queued events until ctx is done; what is still queued then is not written. One
// Run at a time: the writer's state is its own.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case event := <-r.queue:
			r.write(ctx, event)
		}
	}
}

// eventKey is what makes two events the same one: the object, its version left out, and what is
// said about it.
type eventKey struct {
	object                     api.ObjectReference
	eventtype, reason, message string
}

// spamKey is what the spam filter counts per: the object, and the type of what is said.
type spamKey struct {
	object    api.ObjectReference
	eventtype string
}

// seenEvent is an Event as last written.
type seenEvent struct {
	namespace, name string
	count           int32
	first           metav1.Time
}

type tokenBucket struct {
	tokens float64
	at     time.Time
}

// take takes a token if there is one, refilling one each eventRefill up to eventBurst.
func (b *tokenBucket) take(now time.Time) bool {
	b.tokens = min(eventBurst, b.tokens+now.Sub(b.at).Seconds()/eventRefill.Seconds())
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (r *Recorder) write(ctx context.Context, event *api.Event) {
	logger := klog.FromContext(ctx).WithValues("object", klog.KRef(event.InvolvedObject.Namespace, event.InvolvedObject.Name), "reason", event.Reason)
	object := event.InvolvedObject
	object.ResourceVersion = ""
	key := eventKey{object, event.Type, event.Reason, event.Message}
	cached, repeated := r.seen.Get(key)
	if repeated {
		// The count is of occurrences: those over the rate below count too, as in client-go.
		prev := cached.(seenEvent)
		prev.count++
		r.seen.Add(key, prev)
		event.Name, event.Namespace = prev.name, prev.namespace
		event.Count, event.FirstTimestamp = prev.count, prev.first
	}
	cached, ok := r.spam.Get(spamKey{object, event.Type})
	bucket, _ := cached.(*tokenBucket)
	if !ok {
		bucket = &tokenBucket{tokens: eventBurst, at: event.LastTimestamp.Time}
		r.spam.Add(spamKey{object, event.Type}, bucket)
	}
	if !bucket.take(event.LastTimestamp.Time) {
		logger.V(2).Info("Not writing an event: its object's events are over their rate")
		return
	}
	for try := 1; ; try++ {
		written, err := r.writeOnce(ctx, event, repeated)
		if apierrors.IsAlreadyExists(err) {
			// An earlier try created it and its answer was lost.
			logger.V(5).Info("An event was written by an earlier try")
			written, err = event, nil
		}
		if err == nil {
			r.seen.Add(key, seenEvent{namespace: written.Namespace, name: written.Name, count: written.Count, first: written.FirstTimestamp})
			return
		}
		if apierrors.HasStatusCause(err, api.NamespaceTerminatingCause) {
			logger.V(5).Info("Not writing an event: its namespace is being deleted")
			return
		}
		if refused(err) {
			logger.Error(err, "The API server refused an event; not writing it")
			return
		}
		if r.reachability != nil && !r.reachability.Status().Reachable {
			logger.V(2).Info("Holding an event until the API server is reachable again")
			if r.reachability.Wait(ctx) != nil || !sleep(ctx, time.Duration(rand.Float64()*float64(r.retry))) {
				return // the wait randomized: the agents of a site do not all write at the return
			}
			try-- // a try during the outage does not count
			continue
		}
		if try == eventTries {
			logger.Error(err, "Not writing an event: the API server did not answer", "tries", try)
			return
		}
		wait := r.retry
		if try == 1 {
			wait = time.Duration(rand.Float64() * float64(wait)) // agents cut off together do not retry together
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// sleep waits d, or returns false when ctx is done first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// refused tells whether the API server answered a write with a refusal that another try would get
// again: a 4xx status other than 429. An error without a status (no answer), a 429 and a 5xx (a
// proxy such as YurtHub answering for an unreachable API server) are tried again.
func refused(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	code := status.Status().Code
	return code >= 400 && code < 500 && code != http.StatusTooManyRequests
}

// writeOnce creates event, or raises the count of the Event it repeats; when that one is gone, it
// creates it anew.
func (r *Recorder) writeOnce(ctx context.Context, event *api.Event, repeated bool) (*api.Event, error) {
	if repeated {
		patch, err := json.Marshal(struct {
			Count         int32       `json:"count"`
			LastTimestamp metav1.Time `json:"lastTimestamp"`
			Message       string      `json:"message"`
		}{event.Count, event.LastTimestamp, event.Message})
		if err != nil {
			return nil, err
		}
		written, err := r.api.PatchEvent(ctx, event, patch)
		if !apierrors.IsNotFound(err) {
			return written, err
		}
	}
	created := *event
	created.ResourceVersion = ""
	return r.api.CreateEvent(ctx, &created)
}
