package promtext_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeplane/edgeplane/pkg/metrics/promtext"
)

var (
	requests = &promtext.Desc{Name: "test_requests_total", Type: promtext.Counter, Labels: []string{"path", "code"},
		Help: "Requests, by path\nand code; a backslash \\ too."}
	latency = &promtext.Desc{Name: "test_latency_seconds", Type: promtext.Histogram, Labels: []string{"path"}, Help: "Latency."}
	up      = &promtext.Desc{Name: "test_up", Type: promtext.Gauge, Help: "Up."}
)

type collectorFunc func(s *promtext.Scrape)

func (f collectorFunc) Collect(s *promtext.Scrape) { f(s) }

func write(t *testing.T, r *promtext.Registry) (string, error) {
	t.Helper()
	var b bytes.Buffer
	err := r.Write(&b)
	return b.String(), err
}

// The text is exactly the exposition format: families by name, samples by label values, help and
// label values escaped, histograms' buckets cumulative with +Inf, _sum and _count.
func TestWriteIsTheTextFormat(t *testing.T) {
	r := &promtext.Registry{}
	reqs := promtext.NewValueVec(requests)
	lat := promtext.NewHistogramVec(latency, []float64{0.1, 1})
	r.Register(reqs, lat, collectorFunc(func(s *promtext.Scrape) { s.Add(up, 1) }))
	reqs.WithLabelValues("/b", "200").Add(2)
	reqs.WithLabelValues("/a\"quoted\"\n", "500").Inc()
	h := lat.WithLabelValues("/a")
	for _, v := range []float64{0.05, 0.1, 0.5, 3} {
		h.Observe(v)
	}
	lat.WithLabelValues("/nan").Observe(math.NaN()) // counted in +Inf's bucket, as client_golang does
	got, err := write(t, r)
	if err != nil {
		t.Fatal(err)
	}
	want := `# HELP promhttp_metric_handler_errors_total Total number of internal errors encountered by the promhttp metric handler.
# TYPE promhttp_metric_handler_errors_total counter
promhttp_metric_handler_errors_total{cause="gathering"} 0
# HELP test_latency_seconds Latency.
# TYPE test_latency_seconds histogram
test_latency_seconds_bucket{path="/a",le="0.1"} 2
test_latency_seconds_bucket{path="/a",le="1"} 3
test_latency_seconds_bucket{path="/a",le="+Inf"} 4
test_latency_seconds_sum{path="/a"} 3.65
test_latency_seconds_count{path="/a"} 4
test_latency_seconds_bucket{path="/nan",le="0.1"} 0
test_latency_seconds_bucket{path="/nan",le="1"} 0
test_latency_seconds_bucket{path="/nan",le="+Inf"} 1
test_latency_seconds_sum{path="/nan"} NaN
test_latency_seconds_count{path="/nan"} 1
# HELP test_requests_total Requests, by path\nand code; a backslash \\ too.
# TYPE test_requests_total counter
test_requests_total{path="/a\"quoted\"\n",code="500"} 1
test_requests_total{path="/b",code="200"} 2
# HELP test_up Up.
# TYPE test_up gauge
test_up 1
`
	if got != want {
		t.Errorf("written:\n%s\nwant:\n%s", got, want)
	}
	// And Prometheus' own parser reads it back.
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	if v := mfs["test_requests_total"].GetMetric()[0].GetLabel()[0].GetValue(); v != "/a\"quoted\"\n" {
		t.Errorf("the escaped label value read back as %q", v)
	}
	if c := mfs["test_latency_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); c != 4 {
		t.Errorf("histogram count read back as %d", c)
	}

	reqs.Reset()
	if got, _ := write(t, r); strings.Contains(got, "test_requests_total{") {
		t.Errorf("a reset family still has children:\n%s", got)
	}
}

// A collector that fails is reported and counted; the rest, its own samples included, is served.
// Two samples with the same labels are an error too: the first is served.
func TestWriteServesTheRestOfAFailure(t *testing.T) {
	r := &promtext.Registry{}
	r.Register(collectorFunc(func(s *promtext.Scrape) {
		s.Add(up, 1)
		s.Fail(errors.New("pin unreadable"))
		s.Add(requests, 1, "only one label")
	}), collectorFunc(func(s *promtext.Scrape) { s.Add(up, 0) }))
	got, err := write(t, r)
	if err == nil || !strings.Contains(err.Error(), "pin unreadable") || !strings.Contains(err.Error(), "1 label values") ||
		!strings.Contains(err.Error(), "two samples") {
		t.Errorf("error: %v", err)
	}
	if !strings.Contains(got, "\ntest_up 1\n") || strings.Contains(got, "test_up 0") || strings.Contains(got, "test_requests_total{") {
		t.Errorf("written:\n%s", got)
	}
	got, _ = write(t, r)
	if !strings.Contains(got, `promhttp_metric_handler_errors_total{cause="gathering"} 2`) {
		t.Errorf("failed scrapes not counted:\n%s", got)
	}
}

func TestHistogramBounds(t *testing.T) {
	h := promtext.NewHistogramVec(latency, []float64{1, 2, math.Inf(1)}) // +Inf is implied: left out
	r := &promtext.Registry{}
	r.Register(h)
	h.WithLabelValues("/").Observe(5)
	if got, _ := write(t, r); strings.Count(got, `le="+Inf"`) != 1 {
		t.Errorf("+Inf bucket not written once:\n%s", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("bounds that do not increase accepted")
		}
	}()
	promtext.NewHistogramVec(latency, []float64{1, 1})
}

func TestHandler(t *testing.T) {
	r := &promtext.Registry{}
	var failed error
	r.Register(collectorFunc(func(s *promtext.Scrape) { s.Add(up, 1); s.Fail(errors.New("x")) }))
	h := r.Handler(func(err error) { failed = err })
	for _, tc := range []struct {
		accept string
		gz     bool
	}{{"", false}, {"deflate, gzip;q=1.0", true}, {"gzip", true}, {"gzip; q=0, identity", false}} {
		gz := tc.gz
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept-Encoding", tc.accept)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body := io.Reader(rec.Body)
		if gz {
			if rec.Header().Get("Content-Encoding") != "gzip" {
				t.Fatalf("not gzipped for %q", tc.accept)
			}
			zr, err := gzip.NewReader(rec.Body)
			if err != nil {
				t.Fatal(err)
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4") ||
			!strings.Contains(string(b), "\ntest_up 1\n") || failed == nil {
			t.Errorf("Accept-Encoding %q: %d %v %q, error %v", tc.accept, rec.Code, rec.Header(), b, failed)
		}
	}
}

func TestValuesAddConcurrently(t *testing.T) {
	v := promtext.NewValueVec(requests)
	h := promtext.NewHistogramVec(latency, promtext.ExponentialBuckets(0.001, 10, 3))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				v.WithLabelValues("/", "200").Add(0.5)
				h.WithLabelValues("/").Observe(0.01)
			}
		})
	}
	wg.Wait()
	r := &promtext.Registry{}
	r.Register(v, h)
	got, _ := write(t, r)
	for _, want := range []string{`test_requests_total{path="/",code="200"} 4000`, `test_latency_seconds_bucket{path="/",le="0.001"} 0`,
		`test_latency_seconds_bucket{path="/",le="0.01"} 8000`, `test_latency_seconds_count{path="/"} 8000`} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
}

// The Go runtime's and the process' families are there, and the process' are this process'.
func TestRuntimeCollectors(t *testing.T) {
	r := &promtext.Registry{}
	r.Register(promtext.GoCollector{}, promtext.ProcessCollector{})
	got, err := write(t, r)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"go_goroutines", "go_threads", "go_memstats_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_gc_cycles_total",
		"process_cpu_seconds_total", "process_open_fds", "process_max_fds", "process_virtual_memory_bytes"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	value := func(name string) float64 {
		m := mfs[name].GetMetric()[0]
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		return m.GetCounter().GetValue()
	}
	if rss := value("process_resident_memory_bytes"); rss < 1<<20 || rss > 4<<30 {
		t.Errorf("resident memory %v bytes", rss)
	}
	if heap := value("go_memstats_heap_inuse_bytes"); heap < value("go_memstats_alloc_bytes") || heap == 0 {
		t.Errorf("heap in use %v, allocated %v", heap, value("go_memstats_alloc_bytes"))
	}
	if start, now := value("process_start_time_seconds"), float64(time.Now().Unix()); start < now-3600 || start > now+2 {
		t.Errorf("start time %v, now %v", start, now)
	}
}
