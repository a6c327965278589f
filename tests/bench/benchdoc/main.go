// Command benchdoc renders bench/results.json into docs/benchmarks.md's per-machine tables (the
// part between its benchdoc markers) and into SVG charts beside it (docs/bench/*.svg): per
// machine, edgeplane's cross-node ratios against Flannel and the underlay with their min-max,
// route mode's against edgeplane's VXLAN and the underlay, and the Services benchmark's figures
// against kube-proxy by number of Services.
// `make bench-charts` runs it from the repository's root:
//
//	benchdoc -results bench/results.json -doc docs/benchmarks.md -charts docs/bench
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgeplane/edgeplane/tests/bench/results"
)

func main() {
	in := flag.String("results", "bench/results.json", "results file")
	doc := flag.String("doc", "docs/benchmarks.md", "document whose generated section is rewritten")
	dir := flag.String("charts", "docs/bench", "directory of the SVG charts")
	flag.Parse()
	if err := generate(*in, *doc, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "benchdoc:", err)
		os.Exit(1)
	}
}

// generate writes the charts of every machine in the results file at in to dir, and the tables
// and the charts' links into doc.
func generate(in, doc, dir string) error {
	if _, err := os.Stat(in); err != nil {
		return fmt.Errorf("reading results: %w", err)
	}
	f := results.Read(in)
	if len(f.Results) == 0 {
		return fmt.Errorf("%s holds no results", in)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the charts' directory: %w", err)
	}
	charts := map[string][]string{}
	for _, m := range byMachine(f) {
		for _, c := range []struct {
			prefix string
			draw   func(*machineResults) ([]byte, error)
		}{{"cross-node", RatioChart}, {"route-mode", RouteChart}, {"services", ServicesChart}} {
			svg, err := c.draw(m)
			if err != nil {
				return fmt.Errorf("machine %s, %s chart: %w", m.machine.ID, c.prefix, err)
			}
			if svg == nil {
				continue
			}
			name := fmt.Sprintf("%s-%s.svg", c.prefix, results.Slug(m.machine.ID))
			if err := os.WriteFile(filepath.Join(dir, name), svg, 0o644); err != nil {
				return fmt.Errorf("writing %s: %w", name, err)
			}
			charts[m.machine.ID] = append(charts[m.machine.ID], name)
		}
	}
	old, err := os.ReadFile(doc)
	if err != nil {
		return fmt.Errorf("reading the document: %w", err)
	}
	rel, err := filepath.Rel(filepath.Dir(doc), dir)
	if err != nil {
		return fmt.Errorf("locating the charts from the document: %w", err)
	}
	out, err := Splice(string(old), Markdown(f, filepath.ToSlash(rel), charts))
	if err != nil {
		return fmt.Errorf("%s: %w", doc, err)
	}
	if err := os.WriteFile(doc, []byte(out), 0o644); err != nil {
		return fmt.Errorf("writing the document: %w", err)
	}
	return nil
}
