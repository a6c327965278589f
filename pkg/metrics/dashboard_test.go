package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const (
	dashboardPath = "../../deploy/grafana/edgeplane-dashboard.json"
	docPath       = "../../docs/metrics.md"
)

// targetLabels are the labels the scrape adds (docs/metrics.md, "Scraping"); le is a histogram's.
var targetLabels = []string{"node", "instance", "job", "le"}

var (
	metricName = regexp.MustCompile(`\bedgeplane_[a-z0-9_]+`)
	grouping   = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	matcher    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	labelValue = regexp.MustCompile(`label_values\(\s*[a-z0-9_]+\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// queries collects every PromQL expression of a dashboard: panel targets and query variables.
func queries(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
				*out = append(*out, s)
				continue
			}
			queries(x, out)
		}
	case []any:
		for _, x := range v {
			queries(x, out)
		}
	}
}

// family resolves a name in a query to its family: histograms are queried as _bucket, _sum, _count.
func family(byName map[string]Family, name string) (Family, bool) {
	if f, ok := byName[name]; ok {
		return f, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := byName[strings.TrimSuffix(name, suffix)]; ok && f.Type == "histogram" && strings.HasSuffix(name, suffix) {
			return f, true
		}
	}
	return Family{}, false
}

// TestDashboardUsesExportedMetrics keeps deploy/grafana from drifting: every query names only
// families the agent exports, and only labels they (or the scrape) have.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if v, _ := dash["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion %v: want a current Grafana schema", dash["schemaVersion"])
	}
	if !hasDatasourceVariable(dash) {
		t.Error("no template variable \"datasource\" of type datasource, query prometheus")
	}
	byName := map[string]Family{}
	for _, f := range Families() {
		byName[f.Name] = f
	}
	var exprs []string
	queries(dash, &exprs)
	if len(exprs) < 10 {
		t.Fatalf("found %d queries in %s", len(exprs), dashboardPath)
	}
	for _, expr := range exprs {
		names := metricName.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("query %q names no edgeplane metric", expr)
		}
		labels := slices.Clone(targetLabels)
		for _, name := range names {
			f, ok := family(byName, name)
			if !ok {
				t.Errorf("query %q: the agent exports no %s", expr, name)
				continue
			}
			labels = append(labels, f.Labels...)
		}
		var used []string
		for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(g[1], ",") {
				used = append(used, strings.TrimSpace(l))
			}
		}
		for _, m := range matcher.FindAllStringSubmatch(expr, -1) {
			used = append(used, m[1])
		}
		for _, m := range labelValue.FindAllStringSubmatch(expr, -1) {
			used = append(used, m[1])
		}
		for _, l := range used {
			if l != "" && !slices.Contains(labels, l) {
				t.Errorf("query %q: label %s is not on %v", expr, l, names)
			}
		}
	}
}

func hasDatasourceVariable(dash map[string]any) bool {
	templating, _ := dash["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	for _, v := range list {
		v, _ := v.(map[string]any)
		if v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus" {
			return true
		}
	}
	return false
}

// TestDocListsFamilies keeps docs/metrics.md listing every family.
func TestDocListsFamilies(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Families() {
		if !strings.Contains(string(doc), "`"+f.Name+"`") {
			t.Errorf("%s does not describe %s", docPath, f.Name)
		}
	}
	byName := map[string]Family{}
	for _, f := range Families() {
		byName[f.Name] = f
	}
	for _, name := range metricName.FindAllString(string(doc), -1) {
		if _, ok := family(byName, name); !ok {
			t.Errorf("%s mentions %s, which the agent does not export", docPath, name)
		}
	}
}
