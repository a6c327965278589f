package k8s_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// handlerCalls records what a handler was called with, as "add a (initial)", "update a", "delete a".
type handlerCalls struct {
	mu  sync.Mutex
	got []string
}

func (e *handlerCalls) record(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, fmt.Sprintf(format, args...))
}

func (e *handlerCalls) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

func (e *handlerCalls) handler() cache.ResourceEventHandler {
	name := func(obj any) string {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		return obj.(*k8s.Node).Name
	}
	return cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			if initial {
				e.record("add %s (initial)", name(obj))
			} else {
				e.record("add %s", name(obj))
			}
		},
		UpdateFunc: func(_, obj any) { e.record("update %s", name(obj)) },
		DeleteFunc: func(obj any) { e.record("delete %s", name(obj)) },
	}
}

// The agent's informers call every handler for every event, in line: one registered before the
// start is given the initial list as it is processed, one registered after it every cached
// object first; both then see each change, and the informer reports when it stopped.
func TestInformerHandlers(t *testing.T) {
	node := func(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }
	cs := fake.NewClientset(node("a"), node("b"))
	inf := k8s.NewInformers(k8stest.FromClientset(cs), "self")
	nodes := inf.Nodes()
	var early, late handlerCalls
	earlyReg, err := nodes.AddEventHandler(early.handler())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer inf.Shutdown()
	defer cancel()
	inf.Start(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), nodes.HasSynced, earlyReg.HasSynced) {
		t.Fatal("not synced")
	}
	if got := early.list(); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"add a (initial)", "add b (initial)"}) {
		t.Errorf("registered before the start: %v", got)
	}
	lateReg, err := nodes.AddEventHandler(late.handler())
	if err != nil {
		t.Fatal(err)
	}
	if got := late.list(); !lateReg.HasSynced() || !slices.Equal(slices.Sorted(slices.Values(got)), []string{"add a (initial)", "add b (initial)"}) {
		t.Errorf("registered after the sync: %v (synced %v), want every cached object first", got, lateReg.HasSynced())
	}

	if _, err := cs.CoreV1().Nodes().Create(ctx, node("c"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labeled := node("a")
	labeled.Labels = map[string]string{"x": "y"}
	if _, err := cs.CoreV1().Nodes().Update(ctx, labeled, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	changes := []string{"add c", "update a", "delete b"}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		e, l := early.list(), late.list()
		if len(e) >= 5 && len(l) >= 5 {
			if !slices.Equal(e[2:], changes) || !slices.Equal(l[2:], changes) {
				t.Errorf("changes: %v and %v, want %v for both", e[2:], l[2:], changes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("changes not seen within 10 s: %v and %v", e, l)
		}
	}
	if nodes.IsStopped() {
		t.Error("stopped while running")
	}
	cancel()
	inf.Shutdown()
	if !nodes.IsStopped() {
		t.Error("not stopped once its context is done")
	}
}
