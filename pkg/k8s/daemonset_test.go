package k8s

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	metadatafake "k8s.io/client-go/metadata/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2"
)

func daemonSetMeta(uid types.UID) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "edgeplane-system", Name: "edgeplane-agent", UID: uid},
	}
}

func newMetadataClient(objs ...runtime.Object) *metadatafake.FakeMetadataClient {
	scheme := metadatafake.NewTestScheme()
	metav1.AddMetaToScheme(scheme)
	return metadatafake.NewSimpleMetadataClient(scheme, objs...)
}

func waitState(t *testing.T, d *OwnDaemonSet, want func(types.UID, bool) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		uid, deleted := d.state()
		if want(uid, deleted) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch state uid=%q deleted=%v never became what the test waits for", uid, deleted)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A DaemonSet seen and then deleted says "uninstall"; one that stays, was never seen, or cannot be
// asked about says "replaced".
func TestOwnDaemonSetDeleted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	client := newMetadataClient(daemonSetMeta("uid-1"))
	d := watchOwnDaemonSet(ctx, client, "edgeplane-system", "edgeplane-agent")
	defer d.Stop()
	waitState(t, d, func(uid types.UID, _ bool) bool { return uid == "uid-1" })

	if deleted, how := d.Deleted(ctx); deleted || how != "present" {
		t.Fatalf("present DaemonSet: Deleted = %v (%s), want false (present)", deleted, how)
	}
	if err := client.Resource(daemonSets).Namespace("edgeplane-system").Delete(ctx, "edgeplane-agent", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, func(_ types.UID, deleted bool) bool { return deleted })
	if deleted, how := d.Deleted(ctx); !deleted || how != "watch" {
		t.Fatalf("deleted DaemonSet: Deleted = %v (%s), want true (watch)", deleted, how)
	}
	// Created again (delete --cascade=orphan, then apply): the new one adopts the pods.
	if _, err := client.Resource(daemonSets).Namespace("edgeplane-system").(metadatafake.MetadataClient).CreateFake(daemonSetMeta("uid-2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, func(uid types.UID, deleted bool) bool { return uid == "uid-2" && !deleted })
	if deleted, how := d.Deleted(ctx); deleted {
		t.Fatalf("recreated DaemonSet: Deleted = %v (%s), want false", deleted, how)
	}
}

func TestOwnDaemonSetNeverSeen(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	d := watchOwnDaemonSet(ctx, newMetadataClient(), "edgeplane-system", "edgeplane-agent")
	defer d.Stop()
	time.Sleep(100 * time.Millisecond)
	if deleted, how := d.Deleted(ctx); deleted || how != "never seen" {
		t.Fatalf("Deleted = %v (%s), want false (never seen): an agent started outside a DaemonSet never uninstalls", deleted, how)
	}
}

// The SIGTERM can overtake the watch event: the one GET decides, and only a NotFound, a deletion
// timestamp on the UID seen, or the event arriving meanwhile count as a deletion.
func TestOwnDaemonSetAsksOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		object *metav1.PartialObjectMetadata // what the API server holds; nil: nothing
		err    error                         // what the GET fails with
		want   bool
	}{
		{name: "not found", want: true},
		{name: "being deleted", object: func() *metav1.PartialObjectMetadata {
			m := daemonSetMeta("uid-1")
			m.DeletionTimestamp = &metav1.Time{Time: time.Now()}
			m.Finalizers = []string{"foregroundDeletion"}
			return m
		}(), want: true},
		{name: "recreated", object: daemonSetMeta("uid-2"), want: false},
		{name: "token refused", object: daemonSetMeta("uid-1"), err: apierrors.NewUnauthorized("token expired"), want: false},
		{name: "forbidden", object: daemonSetMeta("uid-1"), err: apierrors.NewForbidden(daemonSets.GroupResource(), "edgeplane-agent", nil), want: false},
		{name: "unreachable", object: daemonSetMeta("uid-1"), err: context.DeadlineExceeded, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			if tc.object != nil {
				objs = append(objs, tc.object)
			}
			client := newMetadataClient(objs...)
			if tc.err != nil {
				client.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tc.err })
			}
			// Not watching: the state is what a watch saw before the SIGTERM.
			d := &OwnDaemonSet{namespace: "edgeplane-system", name: "edgeplane-agent", client: client, uid: "uid-1", logger: klog.Background(),
				refusedWait: 100 * time.Millisecond}
			if deleted, how := d.Deleted(t.Context()); deleted != tc.want {
				t.Fatalf("Deleted = %v (%s), want %v", deleted, how, tc.want)
			}
		})
	}
}

// kubectl delete -k: the namespace is deleted first, and its pods may be deleted before the
// DaemonSet (the SIGTERM finds it present, in a namespace being deleted); the agent's RBAC goes in
// the same breath (its GET refused), and the watch it opened before reports the deletion a moment
// later.
func TestOwnDaemonSetUninstallByKubectl(t *testing.T) {
	t.Run("namespace being deleted", func(t *testing.T) {
		ns := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-system", DeletionTimestamp: &metav1.Time{Time: time.Now()}, Finalizers: []string{"kubernetes"}}}
		client := newMetadataClient(daemonSetMeta("uid-1"), ns)
		d := &OwnDaemonSet{namespace: "edgeplane-system", name: "edgeplane-agent", client: client, uid: "uid-1", logger: klog.Background()}
		if deleted, how := d.Deleted(t.Context()); !deleted || how != "namespace being deleted" {
			t.Fatalf("Deleted = %v (%s), want true (namespace being deleted)", deleted, how)
		}
	})
	t.Run("RBAC gone, then the watch's event", func(t *testing.T) {
		client := newMetadataClient(daemonSetMeta("uid-1"))
		client.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(daemonSets.GroupResource(), "edgeplane-agent", nil)
		})
		d := &OwnDaemonSet{namespace: "edgeplane-system", name: "edgeplane-agent", client: client, uid: "uid-1", logger: klog.Background(),
			refusedWait: 5 * time.Second}
		go func() {
			time.Sleep(200 * time.Millisecond)
			d.gone("uid-1") // the watch's delete event
		}()
		if deleted, how := d.Deleted(t.Context()); !deleted {
			t.Fatalf("Deleted = %v (%s), want true once the watch saw the deletion", deleted, how)
		}
	})
	// The same through a real watch, and the SIGTERM first: the pod's deletion (the garbage
	// collector's, right after the DaemonSet's) ends the agent's context before the watch event
	// of the DaemonSet's deletion arrives, and the watch must outlive that context to hear it.
	t.Run("RBAC gone, SIGTERM, then the watch's event", func(t *testing.T) {
		client := newMetadataClient(daemonSetMeta("uid-1"))
		// The RBAC gone: GETs refused (the informer lists and watches, which stay allowed).
		client.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(daemonSets.GroupResource(), "edgeplane-agent", nil)
		})
		agentCtx, sigterm := context.WithCancel(t.Context())
		d := watchOwnDaemonSet(agentCtx, client, "edgeplane-system", "edgeplane-agent")
		defer d.Stop()
		waitState(t, d, func(uid types.UID, _ bool) bool { return uid == "uid-1" })
		sigterm()
		go func() {
			time.Sleep(200 * time.Millisecond)
			_ = client.Resource(daemonSets).Namespace("edgeplane-system").Delete(context.Background(), "edgeplane-agent", metav1.DeleteOptions{})
		}()
		if deleted, how := d.Deleted(context.WithoutCancel(agentCtx)); !deleted {
			t.Fatalf("Deleted = %v (%s), want true once the watch saw the deletion", deleted, how)
		}
	})
}
