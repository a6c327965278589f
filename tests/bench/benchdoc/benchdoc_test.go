package main

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgeplane/edgeplane/tests/bench/results"
)

// svgTexts parses an SVG document and returns its root element's name and the text of its
// <text> elements; the test fails if it is not well-formed XML.
func svgTexts(t *testing.T, path string) (string, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	var root string
	var texts []string
	inText := false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed: %v", path, err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = e.Name.Local
			}
			inText = e.Name.Local == "text"
		case xml.EndElement:
			inText = false
		case xml.CharData:
			if inText {
				texts = append(texts, strings.TrimSpace(string(e)))
			}
		}
	}
	return root, texts
}

// The generator renders a fixture of two machines: charts for each machine that has the data,
// each an SVG document naming every metric (or panel) and baseline, and a table per machine
// between the markers of the document, whose hand-written rest stays as it was.
func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "docs", "benchmarks.md")
	charts := filepath.Join(dir, "docs", "bench")
	if err := os.MkdirAll(filepath.Dir(doc), 0o755); err != nil {
		t.Fatal(err)
	}
	hand := "# Benchmarks\n\nWritten by hand.\n\n" + beginMarker + "\nstale\n" + endMarker + "\n\n## Reproduce\nby hand too\n"
	if err := os.WriteFile(doc, []byte(hand), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := generate("testdata/results.json", doc, charts); err != nil {
		t.Fatal(err)
	}

	entries, err := os.ReadDir(charts)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"cross-node-fast-vm.svg", "cross-node-old-vm.svg", "route-mode-fast-vm.svg", "services-fast-vm.svg", "services-one-step-vm.svg"}
	if !slices.Equal(names, want) {
		t.Fatalf("charts %v, want %v (old-vm has no Services results, only fast-vm route mode's)", names, want)
	}

	root, texts := svgTexts(t, filepath.Join(charts, "cross-node-fast-vm.svg"))
	if root != "svg" {
		t.Errorf("root element %q", root)
	}
	for _, l := range []string{"UDP RR (trans/s)", "TCP RR across CPUs (trans/s)", "TCP stream (Mbit/s)",
		"TCP stream, CPU-s per Gbit (lower is better)", "8 TCP streams (Mbit/s)", "TCP CRR (conn/s)",
		"TCP CRR (conn/s) via ClusterIP", "64-byte UDP at 50,000 pkt/s, CPU-us per packet (lower is better)",
		"vs Flannel", "vs underlay"} {
		if !slices.Contains(texts, l) {
			t.Errorf("cross-node chart has no label %q: %q", l, texts)
		}
	}
	if !slices.ContainsFunc(texts, func(s string) bool { return strings.Contains(s, "fast-vm") }) {
		t.Errorf("cross-node chart does not name its machine: %q", texts)
	}
	root, texts = svgTexts(t, filepath.Join(charts, "route-mode-fast-vm.svg"))
	if root != "svg" {
		t.Errorf("root element %q", root)
	}
	for _, l := range []string{"UDP RR (trans/s)", "TCP stream (Mbit/s)", "TCP stream, CPU-s per Gbit (lower is better)",
		"UDP RR (trans/s) across the gateway", "64-byte UDP at 40,000 pkt/s, sender CPU-us per packet (lower is better)",
		"vs edgeplane VXLAN", "vs underlay"} {
		if !slices.Contains(texts, l) {
			t.Errorf("route-mode chart has no label %q: %q", l, texts)
		}
	}
	if !slices.ContainsFunc(texts, func(s string) bool { return strings.Contains(s, "route mode") && strings.Contains(s, "fast-vm") }) {
		t.Errorf("route-mode chart does not say what it is and name its machine: %q", texts)
	}
	root, texts = svgTexts(t, filepath.Join(charts, "services-fast-vm.svg"))
	if root != "svg" {
		t.Errorf("root element %q", root)
	}
	for _, l := range []string{"ClusterIP TCP RR (trans/s)", "ClusterIP connect rate (conn/s)",
		"Isolated NodePort drop (pkt/s, one CPU)", "kube-proxy", "edgeplane", "kube-proxy-norule",
		"edgeplane-native", "Services programmed"} {
		if !slices.Contains(texts, l) {
			t.Errorf("services chart has no label %q: %q", l, texts)
		}
	}
	if slices.Contains(texts, "NodePort forward to a local pod (pkt/s)") {
		t.Error("services chart draws a panel the fixture has no data for")
	}
	// One step of Services, on log axes, with its min = max.
	if root, texts := svgTexts(t, filepath.Join(charts, "services-one-step-vm.svg")); root != "svg" ||
		!slices.Contains(texts, "Isolated NodePort drop (pkt/s, one CPU)") || !slices.Contains(texts, "edgeplane-native") {
		t.Errorf("one-step services chart: root %q, texts %q", root, texts)
	}

	out, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	md := string(out)
	if !strings.HasPrefix(md, "# Benchmarks\n\nWritten by hand.\n\n"+beginMarker) ||
		!strings.HasSuffix(md, endMarker+"\n\n## Reproduce\nby hand too\n") || strings.Contains(md, "stale") {
		t.Errorf("hand-written parts not kept or generated part not replaced:\n%s", md)
	}
	for _, s := range []string{
		"### Machine `fast-vm`\n\nCPU: AMD EPYC, 2 CPUs, kernel 6.18.44.",
		"2026-12-06T05:00:00Z (git abc123): cross-node, cross-node-clusterip, cross-node-background",
		"2026-12-06T06:00:00Z (git abc123): services at 1, 1000 Services",
		"![cross-node-fast-vm](bench/cross-node-fast-vm.svg)",
		"![services-fast-vm](bench/services-fast-vm.svg)",
		"| metric | flannel | edgeplane | vs flannel | vs underlay | underlay | vs flannel |",
		"| UDP RR (trans/s) | 100,000 | 160,000 | 1.60x (1.55-1.64) | 0.80x (0.77-0.81) | 200,000 | 2.00x (1.99-2.01) |",
		"| TCP stream, CPU-s per Gbit | 0.06 | 0.05 | 0.83x (0.78-0.87) |",
		"| TCP CRR (conn/s) | 4,100 | 8,100 | 1.98x (1.95-2.00) |",
		// The fixed rate comes from the unit.
		"| 64-byte UDP at 50,000 pkt/s, CPU-us per packet | 9.4 | 7.2 | 0.77x (0.74-0.80) | 1.15x (1.12-1.18) | 6.3 | 0.67x (0.65-0.70) |",
		"| 64-byte UDP at 40,000 pkt/s, sender CPU-us per packet | 5.2 | 4.9 | 0.94x (0.92-0.96) | 1.12x (1.10-1.14) | 6.2 |",
		"0.06 busy CPUs (0.04, 0.06)",
		"![route-mode-fast-vm](bench/route-mode-fast-vm.svg)",
		"2026-12-06T08:00:00Z (git def456): route-mode, route-mode-gateway",
		"Route mode, pod to pod on one L2 segment (edgeplane-route) against edgeplane's VXLAN, Flannel host-gw and the underlay, medians of 3 rounds",
		"| metric | edgeplane | edgeplane-route | vs edgeplane | vs underlay | flannel-hostgw | vs edgeplane | vs underlay | underlay | vs edgeplane |",
		"| TCP stream (Mbit/s) | 36,500 | 42,000 | 1.15x (1.13-1.17) | 0.98x (0.97-0.99) | 40,000 | 1.10x (1.08-1.12) | 0.94x (0.93-0.95) | 43,000 | 1.18x (1.16-1.20) |",
		// Against the underlay as the baseline: no second "vs underlay" column.
		"| metric | underlay | edgeplane-route | vs underlay |\n| --- | --- | --- | --- |\n| UDP RR (trans/s) | 152,000 | 148,000 | 0.97x (0.95-0.98) |\n",
		"| Services programmed | 1 | 1,000 |",
		"| clusterip connect rate (conn/s), edgeplane | 36,000 (1.20x, 1.10-1.30) | 37,000 (1.19x, 1.10-1.30) |",
		"### Machine `old-vm`\n\nCPU: not recorded, 2 CPUs, kernel 6.18. recorded by hand.\nRuns: not recorded (revision not recorded): cross-node.",
		"Cross-node, pod to pod, medians (rounds not recorded)",
		"| UDP RR (trans/s) | 30,766 | 43,294 | 1.37x (1.22-1.43) |\n",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("document lacks %q:\n%s", s, md)
		}
	}
	if strings.Index(md, "### Machine `fast-vm`") > strings.Index(md, "### Machine `old-vm`") {
		t.Error("machines not in the file's order")
	}

	// A second run over its own output changes nothing.
	if err := generate("testdata/results.json", doc, charts); err != nil {
		t.Fatal(err)
	}
	again, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != md {
		t.Errorf("not idempotent:\n%s", again)
	}
}

func TestSplice(t *testing.T) {
	got, err := Splice("intro\n", beginMarker+"\nnew\n"+endMarker)
	if err != nil || got != "intro\n\n"+beginMarker+"\nnew\n"+endMarker+"\n" {
		t.Errorf("no markers yet: %q, %v", got, err)
	}
	if _, err := Splice("a\n"+beginMarker+"\nb\n", "x"); err == nil {
		t.Error("a missing end marker: no error")
	}
	if _, err := Splice(endMarker+"\n"+beginMarker, "x"); err == nil {
		t.Error("markers out of order: no error")
	}
}

// The committed tables and charts are what the committed results render to: after a benchmark
// run, `make bench-charts` (the end of `make bench`) must have been run and its output committed.
func TestCommittedUpToDate(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	committed, err := os.ReadFile(filepath.Join(root, "docs", "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	doc := filepath.Join(dir, "docs", "benchmarks.md")
	if err := os.MkdirAll(filepath.Dir(doc), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(doc, committed, 0o644); err != nil {
		t.Fatal(err)
	}
	charts := filepath.Join(dir, "docs", "bench")
	if err := generate(filepath.Join(root, "bench", "results.json"), doc, charts); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(doc); string(got) != string(committed) {
		t.Error("docs/benchmarks.md's generated section differs from bench/results.json's: run make bench-charts")
	}
	entries, err := os.ReadDir(charts)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want, _ := os.ReadFile(filepath.Join(charts, e.Name()))
		got, err := os.ReadFile(filepath.Join(root, "docs", "bench", e.Name()))
		if err != nil || string(got) != string(want) {
			t.Errorf("docs/bench/%s is missing or differs from bench/results.json's: run make bench-charts", e.Name())
		}
	}
}

// A fixed-rate metric's label names its rate from the unit; without one in the unit it says so.
func TestMetricLabel(t *testing.T) {
	for _, c := range []struct{ metric, unit, want string }{
		{"udp_64b_cpu_fixed", "busy CPU-us per packet at 50000 pkt/s (whole machine)", "64-byte UDP at 50,000 pkt/s, CPU-us per packet"},
		{"udp_64b_cpu_fixed_receiver", "busy CPU-us per packet", "64-byte UDP at a fixed rate, receiver CPU-us per packet"},
		{"udp_rr", "transactions/s", "UDP RR (trans/s)"},
		{"unlabelled", "x at 5 pkt/s", "unlabelled"},
	} {
		if got := metricLabel(c.metric, c.unit); got != c.want {
			t.Errorf("metricLabel(%q, %q) = %q, want %q", c.metric, c.unit, got, c.want)
		}
	}
}

// A group with the veth floor gets a "vs veth-floor" column for every path but the floor and the
// underlay (the baseline too), and the heading says what the floor is; the route-mode chart
// draws route mode's ratio against it.
func TestVethFloorColumns(t *testing.T) {
	r := func(path string, med, ratio, under, floor float64) results.Result {
		return results.Result{Group: "route-mode", Metric: "udp_rr", Unit: "transactions/s", Path: path, Baseline: "edgeplane",
			Samples: []float64{med}, Median: med, Ratio: ratio, RatioMin: ratio, RatioMax: ratio,
			UnderlayRatio: under, UnderlayRatioMin: under, UnderlayRatioMax: under,
			VethFloorRatio: floor, VethFloorRatioMin: floor - 0.01, VethFloorRatioMax: floor + 0.01, Machine: "m"}
	}
	f := results.File{Machines: []results.Machine{{ID: "m", Cores: 2}}, Results: []results.Result{
		r("edgeplane", 36000, 0, 0.9, 0.95),
		r("edgeplane-route", 38000, 1.05, 0.95, 1.0),
		r("veth-floor", 38000, 1.05, 0.95, 0),
		r("underlay", 40000, 1.1, 0, 0),
		r("underlay-bare", 42000, 1.15, 1.05, 1.1),
	}}
	md := Markdown(f, "bench", nil)
	for _, s := range []string{
		"(veth-floor: pods on plain veth pairs, kernel routing only; underlay-bare: node to node between the floor's nodes, no agent and no program on their NICs), medians of 1 rounds",
		"| metric | edgeplane | vs veth-floor | edgeplane-route | vs edgeplane | vs underlay | vs veth-floor | veth-floor | vs edgeplane | vs underlay | underlay | vs edgeplane |",
		"| UDP RR (trans/s) | 36,000 | 0.95x (0.94-0.96) | 38,000 | 1.05x | 0.95x | 1.00x (0.99-1.01) | 38,000 | 1.05x | 0.95x | 40,000 | 1.10x |",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("document lacks %q:\n%s", s, md)
		}
	}
	rows := routeRows(byMachine(f)[0])
	if len(rows) != 1 || rows[0].floor != [3]float64{1.0, 0.99, 1.01} {
		t.Errorf("route rows %+v, want edgeplane-route's ratio against the floor", rows)
	}
	svg, err := RouteChart(byMachine(f)[0])
	if err != nil || !strings.Contains(string(svg), "vs veth floor") {
		t.Errorf("route chart without the floor's series (%v)", err)
	}
}
