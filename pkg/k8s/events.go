package k8s

import (
	"k8s.io/apimachinery/pkg/runtime"
)

// WhileHeld passes events to r only while held() (this agent holds the reporter Lease): problems of
// cluster-wide objects are then recorded once in the cluster, not once per agent. Whoever records
// through it also records the problems still present again when the Lease is taken (Election's
// OnAcquire), since what it dropped before is lost.
func WhileHeld(r EventRecorder, held func() bool) EventRecorder {
	return heldRecorder{r, held}
}

type heldRecorder struct {
	r    EventRecorder
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
