package k8s

import (
	"maps"
	"runtime"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

func poolLabels(name, pool string) map[string]string {
	return map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "apps.openyurt.io/nodepool": pool}
}

// The nodes of a pool share one set of pairs; each reads its own name where the value is its name.
func TestNodeLabelsShareTheirPairs(t *testing.T) {
	a1, a2 := NodeLabelsOf("a1", poolLabels("a1", "a")), NodeLabelsOf("a2", poolLabels("a2", "a"))
	b1 := NodeLabelsOf("b1", poolLabels("b1", "b"))
	if a1.set != a2.set {
		t.Error("two nodes of pool a do not share their labels")
	}
	if a1.set == b1.set {
		t.Error("nodes of pools a and b share their labels")
	}
	for _, c := range []struct {
		l    NodeLabels
		name string
	}{{a1, "a1"}, {a2, "a2"}, {b1, "b1"}} {
		if got := c.l.Get("kubernetes.io/hostname"); got != c.name {
			t.Errorf("%s: hostname %q", c.name, got)
		}
		if want := poolLabels(c.name, c.name[:1]); !maps.Equal(c.l.Map(), want) {
			t.Errorf("%s: labels %v, want %v", c.name, c.l.Map(), want)
		}
		if v, ok := c.l.Lookup("absent"); ok || v != "" || c.l.Has("absent") {
			t.Errorf("%s: an absent label is there: %q", c.name, v)
		}
		sel := labels.SelectorFromSet(labels.Set{"kubernetes.io/hostname": c.name})
		if !sel.Matches(c.l) {
			t.Errorf("%s: %v does not match %v", c.name, sel, c.l)
		}
	}
	if labels.SelectorFromSet(labels.Set{"kubernetes.io/hostname": "a1"}).Matches(a2) {
		t.Error("a2 matches a1's hostname")
	}
	if a1.Equal(a2) || !a1.Equal(NodeLabelsOf("a1", poolLabels("a1", "a"))) || a1.Equal(b1) {
		t.Error("Equal: a1 equals a2, or not itself, or equals b1")
	}
	// A set without the node's name in it is equal whatever the name.
	if x, y := NodeLabelsOf("x", map[string]string{"k": "v"}), NodeLabelsOf("y", map[string]string{"k": "v"}); !x.Equal(y) {
		t.Error("the same labels without a name differ")
	}
	// Sets whose pairs would join into the same text are different sets (values the API server
	// would refuse, but a fake clientset does not check).
	if p, q := NodeLabelsOf("p", map[string]string{"a": "x\x01b\x01y"}), NodeLabelsOf("q", map[string]string{"a": "x", "b": "y"}); p.set == q.set {
		t.Error("two different label sets share their pairs")
	}
	var none NodeLabels
	if none.Len() != 0 || none.Map() != nil || none.Has("kubernetes.io/hostname") || !none.Equal(NodeLabelsOf("n", nil)) {
		t.Error("the zero NodeLabels is not empty")
	}
}

// A set no node carries any more leaves the intern table once collected.
func TestNodeLabelsSetsGoWithTheirNodes(t *testing.T) {
	key := "\x16kubernetes.io/hostname\x01\x00\x16only.edgeplane.io/test\x04once"
	l := NodeLabelsOf("n", map[string]string{"kubernetes.io/hostname": "n", "only.edgeplane.io/test": "once"})
	labelSets.Lock()
	_, held := labelSets.m[key]
	labelSets.Unlock()
	if !held || l.Get("only.edgeplane.io/test") != "once" {
		t.Fatalf("the set is not interned under %q", key)
	}
	runtime.KeepAlive(l)
	l = NodeLabels{}
	for deadline := time.Now().Add(5 * time.Second); ; {
		runtime.GC()
		labelSets.Lock()
		_, held = labelSets.m[key]
		labelSets.Unlock()
		if !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the set of a node that is gone is still interned")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
