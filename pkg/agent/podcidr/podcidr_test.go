package podcidr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

var clusterCIDR = netip.MustParsePrefix("10.244.0.0/16")

func node(name, podCIDR string, annotations map[string]string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Annotations: annotations},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR},
	}
}

// allocator is an Allocator on a fake API server seeded with objs, which cs serves.
func allocator(objs ...runtime.Object) (a *Allocator, cs *fake.Clientset) {
	cs = fake.NewClientset(objs...)
	return &Allocator{Client: k8stest.FromClientset(cs), ClusterCIDR: clusterCIDR, MaskSize: 24}, cs
}

func TestEnsureUsesSpecPodCIDR(t *testing.T) {
	a, _ := allocator(node("a", "10.244.7.0/24", nil))
	got, err := a.Ensure(context.Background(), "a")
	if err != nil || got != netip.MustParsePrefix("10.244.7.0/24") {
		t.Fatalf("Ensure = %v, %v; want 10.244.7.0/24", got, err)
	}
}

func TestEnsureRefusesBadSpecPodCIDR(t *testing.T) {
	for _, tc := range []struct{ name, cidr string }{
		{"outside cluster", "10.245.0.0/24"},
		{"overlaps peer", "10.244.1.0/24"},
		{"unparseable", "10.244.1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := allocator(node("a", tc.cidr, nil), node("b", "10.244.1.0/24", nil))
			if got, err := a.Ensure(context.Background(), "a"); err == nil {
				t.Fatalf("Ensure = %v; want an error", got)
			}
		})
	}
}

func TestEnsureAllocatesFirstFreeAndRecordsIt(t *testing.T) {
	a, cs := allocator(node("a", "", nil),
		node("b", "10.244.0.0/24", nil),
		node("c", "", map[string]string{k8s.PodCIDRAnnotation: "10.244.1.0/24"}))
	ctx := context.Background()
	got, err := a.Ensure(ctx, "a")
	if err != nil || got != netip.MustParsePrefix("10.244.2.0/24") {
		t.Fatalf("Ensure = %v, %v; want 10.244.2.0/24", got, err)
	}
	n, _ := cs.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	if n.Annotations[k8s.PodCIDRAnnotation] != "10.244.2.0/24" {
		t.Fatalf("annotation = %q", n.Annotations[k8s.PodCIDRAnnotation])
	}
	if _, err := cs.CoordinationV1().Leases(DefaultNamespace).Get(ctx, "edgeplane-podcidr-10-244-2-0-24", metav1.GetOptions{}); err != nil {
		t.Fatalf("claim: %v", err)
	}
	again, err := a.Ensure(ctx, "a")
	if err != nil || again != got {
		t.Fatalf("second Ensure = %v, %v; want %v", again, err, got)
	}
}

func TestEnsureSkipsLiveClaimsAndReleasesStaleOnes(t *testing.T) {
	ctx := context.Background()
	a, cs := allocator(node("a", "", nil), node("b", "", nil))
	// b claimed 10.244.0.0/24 but has not annotated yet; a deleted node "gone" holds 10.244.1.0/24.
	for _, c := range []struct{ holder, cidr string }{{"b", "10.244.0.0/24"}, {"gone", "10.244.1.0/24"}} {
		claim := newClaim(k8stest.Node(node(c.holder, "", nil)), netip.MustParsePrefix(c.cidr))
		if _, err := cs.CoordinationV1().Leases(DefaultNamespace).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.Ensure(ctx, "a")
	if err != nil || got != netip.MustParsePrefix("10.244.1.0/24") {
		t.Fatalf("Ensure = %v, %v; want the stale claim's 10.244.1.0/24", got, err)
	}
}

func TestEnsureExhausted(t *testing.T) {
	a, cs := allocator(node("a", "", nil), node("b", "10.244.0.0/24", nil))
	a.ClusterCIDR, a.MaskSize = netip.MustParsePrefix("10.244.0.0/23"), 24
	cs.CoreV1().Nodes().Create(context.Background(), node("c", "10.244.1.0/24", nil), metav1.CreateOptions{})
	if got, err := a.Ensure(context.Background(), "a"); err == nil {
		t.Fatalf("Ensure = %v; want ErrExhausted", got)
	}
}

// Many nodes allocating at once through one API server must all get distinct subnets.
func TestEnsureConcurrentAllocatorsGetDistinctCIDRs(t *testing.T) {
	const n = 16
	var objs []runtime.Object
	for i := range n {
		objs = append(objs, node(fmt.Sprintf("node-%d", i), "", nil))
	}
	cs := fake.NewClientset(objs...)
	got := make([]netip.Prefix, n)
	errs := make([]error, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			a := &Allocator{Client: k8stest.FromClientset(cs), ClusterCIDR: clusterCIDR, MaskSize: 24}
			start.Wait()
			got[i], errs[i] = a.Ensure(context.Background(), fmt.Sprintf("node-%d", i))
		}()
	}
	start.Done()
	done.Wait()
	seen := map[netip.Prefix]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("node-%d: %v", i, errs[i])
		}
		if j, dup := seen[got[i]]; dup {
			t.Fatalf("node-%d and node-%d both got %v", i, j, got[i])
		}
		seen[got[i]] = i
	}
}

func TestSubnets(t *testing.T) {
	var got []string
	for p := range subnets(netip.MustParsePrefix("10.0.0.0/22"), 24) {
		got = append(got, p.String())
	}
	want := "[10.0.0.0/24 10.0.1.0/24 10.0.2.0/24 10.0.3.0/24]"
	if fmt.Sprint(got) != want {
		t.Fatalf("subnets = %v; want %v", got, want)
	}
}

func TestClaimName(t *testing.T) {
	if got := claimName(netip.MustParsePrefix("10.244.3.0/24")); got != "edgeplane-podcidr-10-244-3-0-24" {
		t.Fatalf("claimName = %s", got)
	}
}

// TestEnsureChecksAgainstNodesFromCache: with a Nodes source the allocator checks the pod CIDR
// against the Nodes it lists and lists none from the API server; when the source fails, it does.
func TestEnsureChecksAgainstNodesFromCache(t *testing.T) {
	listsOfNodes := func(cs *fake.Clientset) int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "list" && a.GetResource().Resource == "nodes" {
				n++
			}
		}
		return n
	}
	a, cs := allocator(node("a", "10.244.7.0/24", nil), node("b", "10.244.1.0/24", nil))
	a.Nodes = func(context.Context) ([]*k8s.Node, error) {
		return []*k8s.Node{k8stest.Node(node("a", "10.244.7.0/24", nil)), k8stest.Node(node("b", "10.244.1.0/24", nil))}, nil
	}
	if got, err := a.Ensure(context.Background(), "a"); err != nil || got != netip.MustParsePrefix("10.244.7.0/24") {
		t.Fatalf("Ensure = %v, %v; want 10.244.7.0/24", got, err)
	}
	if n := listsOfNodes(cs); n != 0 {
		t.Errorf("%d lists of nodes from the API server, want 0", n)
	}
	a.Nodes = func(context.Context) ([]*k8s.Node, error) {
		return []*k8s.Node{k8stest.Node(node("a", "10.244.7.0/24", nil)), k8stest.Node(node("b", "10.244.7.0/24", nil))}, nil
	}
	if got, err := a.Ensure(context.Background(), "a"); err == nil {
		t.Errorf("Ensure = %v with b's pod CIDR overlapping in the cache; want an error", got)
	}
	a.Nodes = func(context.Context) ([]*k8s.Node, error) { return nil, fmt.Errorf("not synced") }
	if got, err := a.Ensure(context.Background(), "a"); err != nil || got != netip.MustParsePrefix("10.244.7.0/24") {
		t.Fatalf("Ensure = %v, %v; want 10.244.7.0/24", got, err)
	}
	if n := listsOfNodes(cs); n != 1 {
		t.Errorf("%d lists of nodes from the API server after the cache failed, want 1", n)
	}
}

// An answer the API server gives only for a moment (YurtHub's cache: "specified key is under
// accessing" while the informers list through it) is retried; a lasting one is not.
func TestEnsureRetriesTransientAnswers(t *testing.T) {
	a, cs := allocator(node("a", "10.244.7.0/24", nil))
	a.RetryInterval = 10 * time.Millisecond
	gets := 0
	cs.PrependReactor("get", "nodes", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if gets++; gets <= 2 {
			return true, nil, apierrors.NewInternalError(errors.New("specified key is under accessing"))
		}
		return false, nil, nil
	})
	got, err := a.Ensure(t.Context(), "a")
	if err != nil || got != netip.MustParsePrefix("10.244.7.0/24") || gets != 3 {
		t.Fatalf("Ensure = %v, %v after %d GETs; want 10.244.7.0/24 after 3", got, err, gets)
	}

	a, cs = allocator(node("a", "10.244.7.0/24", nil))
	a.RetryInterval = 10 * time.Millisecond
	gets = 0
	cs.PrependReactor("get", "nodes", func(action k8stesting.Action) (bool, runtime.Object, error) {
		gets++
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "a", errors.New("no"))
	})
	if got, err := a.Ensure(t.Context(), "a"); !apierrors.IsForbidden(err) || gets != 1 {
		t.Fatalf("Ensure = %v, %v after %d GETs; want Forbidden after 1", got, err, gets)
	}
}
