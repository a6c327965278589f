// Package promtext keeps metrics and serves them in Prometheus' text exposition format (0.0.4):
// counters, gauges and histograms, with or without labels, and collectors that read their values
// at scrape time.
//
// It is what the agent used of client_golang, without linking it: client_golang's registry
// gathers into protobuf messages, which links a protobuf runtime, and with the OpenAPI models
// client-go's event recorder linked that was ~2 MB of every agent's binary and of its resident
// memory. A scrape here collects every collector into families, sorts them by name and their
// samples by label values, and writes the text.
package promtext

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Type is a family's metric type.
type Type string

const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// Desc describes a family: its name, help, type and label names.
type Desc struct {
	Name   string
	Help   string
	Type   Type
	Labels []string
}

// Collector adds samples to a scrape.
type Collector interface {
	Collect(s *Scrape)
}

// Scrape is one scrape's samples by family, and the errors the collectors met.
type Scrape struct {
	families map[string]*family
	errs     []error
}

type family struct {
	desc    *Desc
	samples []sample
}

type sample struct {
	labels []string
	value  float64
	// upper and counts (not cumulative, the last for +Inf) are a histogram's buckets.
	upper  []float64
	counts []uint64
}

// Add adds a sample of a counter or gauge family. labelValues are in the order of d.Labels.
func (s *Scrape) Add(d *Desc, value float64, labelValues ...string) {
	s.add(d, sample{labels: labelValues, value: value})
}

// AddHistogram adds a histogram's sample: its sum, and the count of observations in each bucket
// (counts has one more than upper, for +Inf).
func (s *Scrape) AddHistogram(d *Desc, upper []float64, counts []uint64, sum float64, labelValues ...string) {
	s.add(d, sample{labels: labelValues, value: sum, upper: upper, counts: counts})
}

func (s *Scrape) add(d *Desc, smp sample) {
	if len(smp.labels) != len(d.Labels) {
		s.Fail(fmt.Errorf("%s: %d label values for labels %v", d.Name, len(smp.labels), d.Labels))
		return
	}
	f, ok := s.families[d.Name]
	if !ok {
		f = &family{desc: d}
		s.families[d.Name] = f
	} else if f.desc != d && !sameDesc(f.desc, d) {
		s.Fail(fmt.Errorf("%s: described twice, differently", d.Name))
		return
	}
	f.samples = append(f.samples, smp)
}

func sameDesc(a, b *Desc) bool {
	return a.Name == b.Name && a.Help == b.Help && a.Type == b.Type && slices.Equal(a.Labels, b.Labels)
}

// Fail reports that a collector could not read what it reports; what it added is still served.
func (s *Scrape) Fail(err error) { s.errs = append(s.errs, err) }

// Registry is a set of collectors.
type Registry struct {
	mu         sync.Mutex
	collectors []Collector
	// failures counts the scrapes a collector failed in (promhttp_metric_handler_errors_total).
	failures Value
}

var handlerErrors = &Desc{
	Name: "promhttp_metric_handler_errors_total", Type: Counter, Labels: []string{"cause"},
	Help: "Total number of internal errors encountered by the promhttp metric handler.",
}

// Register adds collectors.
func (r *Registry) Register(cs ...Collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectors = append(r.collectors, cs...)
}

// Write collects every collector and writes the text format to w. The collectors' errors are
// returned joined (a *CollectError), after everything else was written; an error writing to w
// is returned as it is.
func (r *Registry) Write(w io.Writer) error {
	r.mu.Lock()
	collectors := slices.Clone(r.collectors)
	r.mu.Unlock()
	s := &Scrape{families: map[string]*family{}}
	for _, c := range collectors {
		c.Collect(s)
	}
	for _, f := range s.families {
		if err := f.sort(); err != nil {
			s.Fail(err)
		}
	}
	if len(s.errs) > 0 {
		r.failures.Add(1)
	}
	s.Add(handlerErrors, r.failures.Get(), "gathering")
	b := bufio.NewWriter(w)
	for _, name := range slices.Sorted(maps.Keys(s.families)) {
		s.families[name].write(b)
	}
	if err := b.Flush(); err != nil {
		return err
	}
	if len(s.errs) > 0 {
		return &CollectError{errors.Join(s.errs...)}
	}
	return nil
}

// CollectError is what collectors could not collect in a scrape; the rest was written.
type CollectError struct{ Err error }

func (e *CollectError) Error() string { return e.Err.Error() }
func (e *CollectError) Unwrap() error { return e.Err }

// sort sorts the samples by label values and drops those whose labels repeat an earlier one's.
func (f *family) sort() error {
	slices.SortStableFunc(f.samples, func(x, y sample) int { return slices.Compare(x.labels, y.labels) })
	var dup error
	f.samples = slices.CompactFunc(f.samples, func(x, y sample) bool {
		if slices.Equal(x.labels, y.labels) {
			dup = fmt.Errorf("%s: two samples labelled %v; served the first", f.desc.Name, y.labels)
			return true
		}
		return false
	})
	return dup
}

func (f *family) write(b *bufio.Writer) {
	d := f.desc
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", d.Name, escapeHelp(d.Help), d.Name, d.Type)
	for _, smp := range f.samples {
		if d.Type != Histogram {
			writeSample(b, d.Name, d.Labels, smp.labels, "", "", smp.value)
			continue
		}
		var cumulative uint64
		for j, n := range smp.counts {
			cumulative += n
			le := "+Inf"
			if j < len(smp.upper) {
				le = formatFloat(smp.upper[j])
			}
			writeSample(b, d.Name+"_bucket", d.Labels, smp.labels, "le", le, float64(cumulative))
		}
		writeSample(b, d.Name+"_sum", d.Labels, smp.labels, "", "", smp.value)
		writeSample(b, d.Name+"_count", d.Labels, smp.labels, "", "", float64(cumulative))
	}
}

func writeSample(b *bufio.Writer, name string, labels, values []string, extraLabel, extraValue string, v float64) {
	b.WriteString(name)
	if len(labels) > 0 || extraLabel != "" {
		b.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(b, `%s="%s"`, l, escapeLabel(values[i]))
		}
		if extraLabel != "" {
			if len(labels) > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(b, `%s="%s"`, extraLabel, extraValue)
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(formatFloat(v))
	b.WriteByte('\n')
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Handler serves the registry. A collector's error is passed to onError; the rest is served.
func (r *Registry) Handler(onError func(error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		var out io.Writer = w
		if acceptsGzip(req.Header.Get("Accept-Encoding")) {
			w.Header().Set("Content-Encoding", "gzip")
			gz := gzip.NewWriter(w)
			defer gz.Close()
			out = gz
		}
		var collectErr *CollectError
		if err := r.Write(out); errors.As(err, &collectErr) && onError != nil {
			onError(collectErr.Err)
		} // else the client went away: nothing to tell
	})
}

// acceptsGzip tells whether an Accept-Encoding header allows gzip: named without q=0.
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
		if !ok {
			return true
		}
		v, err := strconv.ParseFloat(q, 64)
		return err == nil && v > 0
	}
	return false
}
