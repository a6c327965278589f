package k8s

import (
	"encoding/binary"
	"iter"
	"maps"
	"runtime"
	"slices"
	"sync"
	"weak"

	"k8s.io/apimachinery/pkg/labels"
)

// NodeLabels are a cached Node's labels. The Nodes of a pool carry the same labels but for those
// whose value is the node's own name (kubelet's kubernetes.io/hostname), so the pairs are kept
// once for all of them, interned, with those values written as nameValue, and each Node keeps
// its name beside them: at 5,000 Nodes with kubelet's and a pool's ten labels that is 1.6 MB
// less than a sorted slice per Node (BenchmarkDecodedNodeCache). The zero value is no label.
// Two NodeLabels with the same pairs share their set (while either is alive), so Equal is a
// comparison of two words.
type NodeLabels struct {
	set  *labelSet
	name string
}

// labelSet is interned label pairs, sorted by key.
type labelSet struct{ kv KeyValues }

// nameValue stands, in an interned set, for the value equal to the node's name. No label value
// contains a NUL byte.
const nameValue = "\x00"

var _ labels.Labels = NodeLabels{}

// NodeLabelsOf is the labels m of the node called name.
func NodeLabelsOf(name string, m map[string]string) NodeLabels {
	if len(m) == 0 {
		return NodeLabels{}
	}
	kv := make(KeyValues, 0, len(m))
	for k, v := range m {
		if v == name {
			v = nameValue
		} else {
			v = interned(v)
		}
		kv = append(kv, KeyValue{interned(k), v})
	}
	return NodeLabels{set: internLabelSet(kv), name: name}
}

// Lookup is the value of key, and whether there is one.
func (l NodeLabels) Lookup(key string) (string, bool) {
	if l.set == nil {
		return "", false
	}
	v, ok := l.set.kv.Lookup(key)
	return l.value(v), ok
}

// value is the label value v of an interned set, for this node.
func (l NodeLabels) value(v string) string {
	if v == nameValue {
		return l.name
	}
	return v
}

// Get is the value of key; "" when there is none.
func (l NodeLabels) Get(key string) string {
	v, _ := l.Lookup(key)
	return v
}

// Has reports whether there is a value for key.
func (l NodeLabels) Has(key string) bool {
	_, ok := l.Lookup(key)
	return ok
}

// Len is the number of labels.
func (l NodeLabels) Len() int {
	if l.set == nil {
		return 0
	}
	return len(l.set.kv)
}

// All is every label, sorted by key.
func (l NodeLabels) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		if l.set == nil {
			return
		}
		for _, e := range l.set.kv {
			if !yield(e.Key, l.value(e.Value)) {
				return
			}
		}
	}
}

// Map is the labels as a map (a new one); nil when there are none.
func (l NodeLabels) Map() map[string]string {
	if l.Len() == 0 {
		return nil
	}
	return maps.Collect(l.All())
}

// Equal reports whether l and o are the same labels.
func (l NodeLabels) Equal(o NodeLabels) bool {
	if l.set != o.set {
		return false
	}
	return l.name == o.name || l.set == nil || !l.set.hasName()
}

func (s *labelSet) hasName() bool {
	for _, e := range s.kv {
		if e.Value == nameValue {
			return true
		}
	}
	return false
}

// String is the labels as labels.Set prints them.
func (l NodeLabels) String() string { return labels.Set(l.Map()).String() }

// labelSets interns label sets: one per distinct set of pairs, held weakly, so that a set no Node
// carries any more goes with its last Node.
var labelSets = struct {
	sync.Mutex
	m   map[string]weak.Pointer[labelSet]
	key []byte
}{m: map[string]weak.Pointer[labelSet]{}}

// internLabelSet is the interned set of the pairs kv (which it sorts, and keeps when the set is
// new).
func internLabelSet(kv KeyValues) *labelSet {
	slices.SortFunc(kv, byKey)
	labelSets.Lock()
	defer labelSets.Unlock()
	key := labelSets.key[:0]
	for _, e := range kv { // each string after its length: no pair of sets shares a key
		key = append(binary.AppendUvarint(key, uint64(len(e.Key))), e.Key...)
		key = append(binary.AppendUvarint(key, uint64(len(e.Value))), e.Value...)
	}
	labelSets.key = key
	if p, ok := labelSets.m[string(key)]; ok {
		if s := p.Value(); s != nil {
			return s
		}
	}
	s := &labelSet{kv: kv}
	k := string(key)
	labelSets.m[k] = weak.Make(s)
	runtime.AddCleanup(s, forgetLabelSet, k)
	return s
}

// forgetLabelSet drops the entry of an interned set that was collected, unless a new set took
// its key meanwhile.
func forgetLabelSet(key string) {
	labelSets.Lock()
	defer labelSets.Unlock()
	if p, ok := labelSets.m[key]; ok && p.Value() == nil {
		delete(labelSets.m, key)
	}
}
