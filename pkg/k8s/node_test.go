package k8s

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// The lister reads the cached Nodes by name and by label selector, which it matches against the
// Nodes' own labels (their ObjectMeta, which the store keys them by, leaves them out).
func TestNodeLister(t *testing.T) {
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for name, pool := range map[string]string{"a1": "a", "a2": "a", "b1": "b", "none": ""} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if pool != "" {
			n.Labels = map[string]string{"apps.openyurt.io/nodepool": pool, "kubernetes.io/hostname": name}
		}
		if err := indexer.Add(nodeOf(n)); err != nil {
			t.Fatal(err)
		}
	}
	l := NewNodeLister(indexer)
	names := func(selector labels.Selector) []string {
		t.Helper()
		nodes, err := l.List(selector)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range nodes {
			out = append(out, n.Name)
		}
		slices.Sort(out)
		return out
	}
	if got := names(labels.Everything()); !slices.Equal(got, []string{"a1", "a2", "b1", "none"}) {
		t.Errorf("every node: %v", got)
	}
	if got := names(labels.SelectorFromSet(labels.Set{"apps.openyurt.io/nodepool": "a"})); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("pool a: %v", got)
	}
	sel, err := labels.Parse("apps.openyurt.io/nodepool,kubernetes.io/hostname notin (a2)")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(sel); !slices.Equal(got, []string{"a1", "b1"}) {
		t.Errorf("%s: %v", sel, got)
	}
	if n, err := l.Get("b1"); err != nil || n.Labels.Get("apps.openyurt.io/nodepool") != "b" {
		t.Errorf("Get(b1) = %+v, %v", n, err)
	}
	if _, err := l.Get("gone"); !apierrors.IsNotFound(err) {
		t.Errorf("Get(gone): %v, want NotFound", err)
	}
	// A Node the transform did not compact is an error, not a deleted Node.
	if err := indexer.Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "raw"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get("raw"); err == nil || apierrors.IsNotFound(err) {
		t.Errorf("Get(raw) of a corev1.Node: %v, want an error other than NotFound", err)
	}
	if nodes, err := l.List(labels.Everything()); err == nil || len(nodes) != 4 {
		t.Errorf("List with a corev1.Node cached: %d nodes, %v; want the 4 others and an error", len(nodes), err)
	}
}

// KeyValues answer as the map they were made from.
func TestKeyValues(t *testing.T) {
	m := map[string]string{"b": "2", "a": "1", "c": ""}
	kv := KeyValuesOf(m)
	if !slices.IsSortedFunc(kv, byKey) {
		t.Errorf("not sorted: %v", kv)
	}
	for _, k := range []string{"a", "b", "c", "d", ""} {
		want, wantOK := m[k]
		if got, ok := kv.Lookup(k); got != want || ok != wantOK || kv.Get(k) != want || kv.Has(k) != wantOK {
			t.Errorf("%q: %q %t, want %q %t", k, got, ok, want, wantOK)
		}
	}
	if got := kv.Map(); len(got) != len(m) || got["a"] != "1" || got["c"] != "" {
		t.Errorf("Map() = %v, want %v", got, m)
	}
	if KeyValuesOf(nil) != nil || KeyValues(nil).Map() != nil {
		t.Error("no pairs: want nil both ways")
	}
}
