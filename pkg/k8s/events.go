package k8s

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
)

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
