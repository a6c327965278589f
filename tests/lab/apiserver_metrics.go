package lab

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// APIServerMetrics reads the API server's /metrics (as the lab's admin) and returns every sample
// whose metric name is one of names, keyed by its series as exposed: `name{label="v",...}`.
func (l *Lab) APIServerMetrics(ctx context.Context, names ...string) (map[string]float64, error) {
	raw, err := l.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the api server's metrics: %w", err)
	}
	return parseMetrics(string(raw), names), nil
}

// parseMetrics reads Prometheus' text format, keeping the samples of the named metrics.
func parseMetrics(text string, names []string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series := line[:i]
		name, _, _ := strings.Cut(series, "{")
		keep := false
		for _, n := range names {
			keep = keep || name == n
		}
		if !keep {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[series] = v
		}
	}
	return out
}
