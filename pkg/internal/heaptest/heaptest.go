// Package heaptest measures the heap for the benchmarks that report what a structure holds.
package heaptest

import "runtime"

// InUse is the heap in use after a collection: what is live, in bytes.
func InUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
