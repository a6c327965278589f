package k8s

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
)

// WhileHeld passes events to r only while held() (this agent holds the reporter Lease): problems of
// cluster-wide objects are then recorded once in the cluster, not once per agent. Whoever records
// through it also records the problems still present again when the Lease is taken (Election's
// OnAcquire), since what it dropped before is lost.
func WhileHeld(r record.EventRecorder, held func() bool) record.EventRecorder {
	return heldRecorder{r, held}
}

type heldRecorder struct {
	r    record.EventRecorder
	held func() bool
}

func (h heldRecorder) Event(object runtime.Object, eventtype, reason, message string) {
	if h.held() {
		h.r.Event(object, eventtype, reason, message)
	}
}

func (h heldRecorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	if h.held() {
		h.r.Eventf(object, eventtype, reason, messageFmt, args...)
	}
}

func (h heldRecorder) AnnotatedEventf(object runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any) {
	if h.held() {
		h.r.AnnotatedEventf(object, annotations, eventtype, reason, messageFmt, args...)
	}
}

// EventSink is where an event broadcaster (record.NewBroadcaster) writes the events it records.
func EventSink(api API) record.EventSink { return eventSink{api} }

// eventSink gives the broadcaster, which passes no context, the API's event methods.
type eventSink struct{ api API }

func (s eventSink) Create(event *corev1.Event) (*corev1.Event, error) {
	return s.api.CreateEvent(context.Background(), event)
}

func (s eventSink) Update(event *corev1.Event) (*corev1.Event, error) {
	return s.api.UpdateEvent(context.Background(), event)
}

func (s eventSink) Patch(event *corev1.Event, patch []byte) (*corev1.Event, error) {
	return s.api.PatchEvent(context.Background(), event, patch)
}
