package conformance

import (
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Machine describes where a run happened, for the summary.
func Machine() string {
	var uts []string
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		uts = append(uts, "Linux "+strings.TrimSpace(string(b)))
	}
	uts = append(uts, fmt.Sprintf("%d CPUs", runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				uts[len(uts)-1] += " (" + strings.TrimSpace(v) + ")"
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			uts = append(uts, fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20)))
		}
	}
	return strings.Join(uts, ", ")
}

// Summary is the Markdown summary of a run: counts, duration, machine, and every failed,
// skipped and missing spec with its message.
func Summary(sel Selection, o Outcome, selected int, when time.Time, k8sVersion string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Selection `%s` (focus `%s`", sel.Name, sel.Focus)
	if s := sel.SkipExpr(); s != "" {
		fmt.Fprintf(&b, ", skip `%s`", s)
	}
	fmt.Fprintf(&b, "), e2e.test %s, run %s on %s.\n\n", k8sVersion, when.UTC().Format("2006-01-02 15:04 MST"), Machine())
	fmt.Fprintf(&b, "| selected | passed | failed | skipped at run time | not run | duration |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %s |\n", selected, len(o.Passed), len(o.Failed), len(o.Skipped), len(o.Missing), o.Duration.Round(time.Second))
	list := func(title string, specs []Spec) {
		if len(specs) == 0 {
			return
		}
		fmt.Fprintf(&b, "\n%s:\n", title)
		for _, s := range specs {
			fmt.Fprintf(&b, "- %s — %s\n", s.Name, firstLine(s.Message))
		}
	}
	list("Failed", o.Failed)
	list("Failed suite nodes", o.SuiteFailures)
	list("Skipped at run time", o.Skipped)
	if len(o.Missing) > 0 {
		fmt.Fprintf(&b, "\nNot run:\n")
		for _, n := range o.Missing {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// WriteSummaryInto replaces, in the Markdown file doc, the block between the markers
// <!-- conformance:NAME:begin --> and <!-- conformance:NAME:end --> with summary.
func WriteSummaryInto(doc, name, summary string) error {
	data, err := os.ReadFile(doc)
	if err != nil {
		return fmt.Errorf("reading %s: %w", doc, err)
	}
	begin, end := "<!-- conformance:"+name+":begin -->", "<!-- conformance:"+name+":end -->"
	text := string(data)
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s block", doc, begin, end)
	}
	text = text[:i+len(begin)] + "\n" + summary + text[j:]
	return os.WriteFile(doc, []byte(text), 0o644)
}

// WriteLeanJUnit writes the selected specs' outcomes as a JUnit report without the specs' logs
// (the full report stays in the lab directory).
func WriteLeanJUnit(path string, sel Selection, o Outcome) error {
	type message struct {
		Message string `xml:"message,attr"`
	}
	type testcase struct {
		Name    string   `xml:"name,attr"`
		Status  string   `xml:"status,attr"`
		Time    string   `xml:"time,attr"`
		Failure *message `xml:"failure,omitempty"`
		Skipped *message `xml:"skipped,omitempty"`
	}
	type testsuite struct {
		XMLName  xml.Name   `xml:"testsuite"`
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Skipped  int        `xml:"skipped,attr"`
		Time     string     `xml:"time,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	secs := func(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }
	suite := testsuite{Name: "edgeplane " + sel.Name, Time: secs(o.Duration)}
	add := func(specs []Spec) {
		for _, s := range specs {
			c := testcase{Name: s.Name, Status: s.Status, Time: secs(s.Duration)}
			switch {
			case s.Failed():
				c.Failure = &message{firstLine(s.Message)}
				suite.Failures++
			case s.Status != "passed":
				c.Skipped = &message{firstLine(s.Message)}
				suite.Skipped++
			}
			suite.Cases = append(suite.Cases, c)
		}
	}
	add(o.Passed)
	add(o.Failed)
	add(o.Skipped)
	for _, n := range o.Missing {
		suite.Cases = append(suite.Cases, testcase{Name: n, Status: "not run", Time: "0", Failure: &message{"selected by the dry run, absent from the run's report"}})
		suite.Failures++
	}
	suite.Tests = len(suite.Cases)
	out, err := xml.MarshalIndent(suite, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(xml.Header), append(out, '\n')...), 0o644)
}
