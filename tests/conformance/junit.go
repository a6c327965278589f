package conformance

import (
	"encoding/xml"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// Spec is one spec's outcome in a Ginkgo JUnit report.
type Spec struct {
	Name     string // "[sig-network] Services should serve a basic endpoint from pods [Conformance]"
	Status   string // passed, skipped, failed, panicked, interrupted, aborted, timedout, pending
	Message  string // the failure or skip message
	Duration time.Duration
}

// Failed says whether the spec ran and did not pass.
func (s Spec) Failed() bool {
	switch s.Status {
	case "passed", "skipped", "pending":
		return false
	}
	return true
}

// Report is a Ginkgo JUnit report read back: the It specs and the suite nodes
// ([SynchronizedBeforeSuite], [ReportAfterSuite] ...), whose failures fail the run too.
type Report struct {
	Specs      []Spec
	SuiteNodes []Spec
	Duration   time.Duration
}

type junitSuites struct {
	Time   float64      `xml:"time,attr"`
	Suites []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Cases []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name    string        `xml:"name,attr"`
	Status  string        `xml:"status,attr"`
	Time    float64       `xml:"time,attr"`
	Skipped *junitMessage `xml:"skipped"`
	Failure *junitMessage `xml:"failure"`
	Error   *junitMessage `xml:"error"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// specPrefix starts every It spec's test case name in Ginkgo's JUnit report.
const specPrefix = "[It] "

// ReadJUnit parses the JUnit report e2e.test writes (--report-dir: junit_01.xml).
func ReadJUnit(path string) (Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Report{}, fmt.Errorf("reading the JUnit report: %w", err)
	}
	var suites junitSuites
	if err := xml.Unmarshal(data, &suites); err != nil {
		return Report{}, fmt.Errorf("parsing the JUnit report %s: %w", path, err)
	}
	r := Report{Duration: seconds(suites.Time)}
	for _, s := range suites.Suites {
		for _, c := range s.Cases {
			spec := Spec{Name: strings.TrimPrefix(c.Name, specPrefix), Status: c.Status, Duration: seconds(c.Time)}
			for _, m := range []*junitMessage{c.Failure, c.Error, c.Skipped} {
				if m != nil && spec.Message == "" {
					spec.Message = strings.TrimSpace(m.Message)
				}
			}
			if strings.HasPrefix(c.Name, specPrefix) {
				r.Specs = append(r.Specs, spec)
			} else {
				r.SuiteNodes = append(r.SuiteNodes, spec)
			}
		}
	}
	if len(r.Specs) == 0 {
		return r, fmt.Errorf("the JUnit report %s holds no spec", path)
	}
	return r, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Selected are the names of the specs a dry run (--ginkgo.dry-run) reports as run: the specs the
// focus and skip expressions select, sorted.
func (r Report) Selected() []string {
	var names []string
	for _, s := range r.Specs {
		if s.Status == "passed" {
			names = append(names, s.Name)
		}
	}
	sort.Strings(names)
	return names
}

// Outcome is a run's result for the selected specs.
type Outcome struct {
	Passed, Failed, Skipped []Spec
	// Missing are selected specs the run's report does not hold as run or skipped.
	Missing []string
	// SuiteFailures are failed suite nodes (a failed [SynchronizedBeforeSuite] fails every spec).
	SuiteFailures []Spec
	Duration      time.Duration
}

// Outcome sorts the selected specs by their status in the run r.
func (r Report) Outcome(selected []string) Outcome {
	byName := make(map[string]Spec, len(r.Specs))
	for _, s := range r.Specs {
		byName[s.Name] = s
	}
	o := Outcome{Duration: r.Duration}
	for _, name := range selected {
		s, ok := byName[name]
		switch {
		case !ok:
			o.Missing = append(o.Missing, name)
		case s.Status == "passed":
			o.Passed = append(o.Passed, s)
		case s.Failed():
			o.Failed = append(o.Failed, s)
		default:
			o.Skipped = append(o.Skipped, s)
		}
	}
	for _, s := range r.SuiteNodes {
		if s.Failed() {
			o.SuiteFailures = append(o.SuiteFailures, s)
		}
	}
	return o
}
