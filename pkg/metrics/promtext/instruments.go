package promtext

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Value is a float64 that goroutines add to and set: a counter's or a gauge's.
type Value struct{ bits atomic.Uint64 }

func (v *Value) Get() float64  { return math.Float64frombits(v.bits.Load()) }
func (v *Value) Set(f float64) { v.bits.Store(math.Float64bits(f)) }
func (v *Value) Inc()          { v.Add(1) }
func (v *Value) Dec()          { v.Add(-1) }
func (v *Value) Add(f float64) {
	for {
		old := v.bits.Load()
		if v.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+f)) {
			return
		}
	}
}

// HistogramValue counts observations in buckets.
type HistogramValue struct {
	upper  []float64
	counts []atomic.Uint64 // one more than upper: +Inf
	sum    Value
}

// Observe counts v in the first bucket whose upper bound is not below it (NaN: in +Inf's).
func (h *HistogramValue) Observe(v float64) {
	i := len(h.upper)
	if !math.IsNaN(v) {
		i, _ = slices.BinarySearch(h.upper, v)
	}
	h.counts[i].Add(1)
	h.sum.Add(v)
}

func (h *HistogramValue) read() (counts []uint64, sum float64) {
	counts = make([]uint64, len(h.counts))
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
	}
	return counts, h.sum.Get()
}

// ExponentialBuckets is count upper bounds, the first start, each factor times the one before.
func ExponentialBuckets(start, factor float64, count int) []float64 {
	b := make([]float64, count)
	for i := range b {
		b[i] = start
		start *= factor
	}
	return b
}

// vec is a family's children, one per set of label values.
type vec[M any] struct {
	desc     *Desc
	newChild func() *M
	mu       sync.RWMutex
	children map[string]*child[M]
}

type child[M any] struct {
	labels []string
	metric *M
}

func (v *vec[M]) with(labelValues []string) *M {
	if len(labelValues) != len(v.desc.Labels) {
		panic("promtext: " + v.desc.Name + " takes labels " + strings.Join(v.desc.Labels, ",")) // a programming error, as in client_golang
	}
	key := strings.Join(labelValues, "\xff")
	v.mu.RLock()
	c, ok := v.children[key]
	v.mu.RUnlock()
	if ok {
		return c.metric
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c, ok := v.children[key]; ok {
		return c.metric
	}
	if v.children == nil {
		v.children = map[string]*child[M]{}
	}
	c = &child[M]{labels: slices.Clone(labelValues), metric: v.newChild()}
	v.children[key] = c
	return c.metric
}

// Reset removes every child.
func (v *vec[M]) Reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	clear(v.children)
}

func (v *vec[M]) each(f func(labels []string, m *M)) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, c := range v.children {
		f(c.labels, c.metric)
	}
}

// ValueVec is a counter or gauge family: a Value per set of label values.
type ValueVec struct{ vec[Value] }

// NewValueVec returns the family d (a counter or a gauge), with no child yet.
func NewValueVec(d *Desc) *ValueVec {
	return &ValueVec{vec[Value]{desc: d, newChild: func() *Value { return new(Value) }}}
}

// WithLabelValues is the child of labelValues, created at zero when new.
func (v *ValueVec) WithLabelValues(labelValues ...string) *Value { return v.with(labelValues) }

func (v *ValueVec) Collect(s *Scrape) {
	v.each(func(labels []string, m *Value) { s.Add(v.desc, m.Get(), labels...) })
}

// HistogramVec is a histogram family.
type HistogramVec struct{ vec[HistogramValue] }

// NewHistogramVec returns the histogram family d with the buckets' upper bounds, which must
// increase strictly; +Inf's bucket is always there (a last bound of +Inf is left out).
func NewHistogramVec(d *Desc, upper []float64) *HistogramVec {
	if n := len(upper); n > 0 && math.IsInf(upper[n-1], 1) {
		upper = upper[:n-1]
	}
	for i := 1; i < len(upper); i++ {
		if !(upper[i] > upper[i-1]) {
			panic(fmt.Sprintf("promtext: %s: bucket bounds %v do not increase", d.Name, upper)) // a programming error, as in client_golang
		}
	}
	upper = slices.Clone(upper)
	return &HistogramVec{vec[HistogramValue]{desc: d, newChild: func() *HistogramValue {
		return &HistogramValue{upper: upper, counts: make([]atomic.Uint64, len(upper)+1)}
	}}}
}

// WithLabelValues is the child of labelValues, created empty when new.
func (v *HistogramVec) WithLabelValues(labelValues ...string) *HistogramValue {
	return v.with(labelValues)
}

func (v *HistogramVec) Collect(s *Scrape) {
	v.each(func(labels []string, h *HistogramValue) {
		counts, sum := h.read()
		s.AddHistogram(v.desc, h.upper, counts, sum, labels...)
	})
}
