package metrics

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeplane/edgeplane/pkg/metrics/promtext"
)

// gatherer gathers what r serves through Prometheus' own parser of the text format, so that the
// tests read the text as a Prometheus server would (and lint it with client_golang's linter).
func gatherer(r *promtext.Registry) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		var b bytes.Buffer
		werr := r.Write(&b)
		p := expfmt.NewTextParser(model.UTF8Validation)
		byName, err := p.TextToMetricFamilies(&b)
		if err != nil {
			return nil, err
		}
		mfs := make([]*dto.MetricFamily, 0, len(byName))
		for _, mf := range byName {
			mfs = append(mfs, mf)
		}
		slices.SortFunc(mfs, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
		return mfs, werr
	})
}

// registryOf is a registry of collectors alone.
func registryOf(collectors ...promtext.Collector) *promtext.Registry {
	r := &promtext.Registry{}
	r.Register(collectors...)
	return r
}

// count is the number of series of family name r serves.
func count(t *testing.T, r *promtext.Registry, name string) int {
	t.Helper()
	mfs, err := gatherer(r).Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

func help(name string) string { return desc(name).Help }
