package k8s

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// BenchmarkNodeCache reports the heap an informer store holds per cached Node (fullNode: a
// kubelet-like Node, as a decoded watch event hands it over), for 5,000 Nodes: untrimmed, trimmed
// as before Nodes had their own trimming (managedFields, last-applied, images), and trimmed now.
func BenchmarkNodeCache(b *testing.B) {
	previous := func(n *corev1.Node) any {
		n.ManagedFields = nil
		delete(n.Annotations, lastApplied)
		n.Status.Images = nil
		return n
	}
	now := func(n *corev1.Node) any { obj, _ := TrimForCache(n); return obj }
	for _, v := range []struct {
		name string
		trim func(*corev1.Node) any
	}{{"untrimmed", func(n *corev1.Node) any { return n }}, {"previous", previous}, {"now", now}} {
		b.Run(v.name, func(b *testing.B) {
			const nodes = 5000
			var perNode float64
			for range b.N {
				store := cache.NewStore(cache.MetaNamespaceKeyFunc)
				before := heapInUse()
				for i := range nodes {
					n := fullNode()
					n.Name = fmt.Sprintf("node-%05d", i)
					if err := store.Add(v.trim(n)); err != nil {
						b.Fatal(err)
					}
				}
				perNode = float64(heapInUse()-before) / nodes
				runtime.KeepAlive(store)
			}
			b.ReportMetric(perNode, "heap-bytes/node")
		})
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
