package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadJUnitOutcome(t *testing.T) {
	r, err := ReadJUnit("testdata/junit_run.xml")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Specs) != 4 || len(r.SuiteNodes) != 2 || r.Duration != 312500*time.Millisecond {
		t.Fatalf("got %d specs, %d suite nodes, %v; want 4, 2, 5m12.5s", len(r.Specs), len(r.SuiteNodes), r.Duration)
	}
	selected := []string{
		"[sig-network] DNS should provide DNS for the cluster [Provider:gce]",
		"[sig-network] Services should be rejected when no endpoints exist",
		"[sig-network] Services should serve a basic endpoint from pods  [Conformance]",
		"[sig-network] Services should not exist in this report",
	}
	o := r.Outcome(selected)
	if len(o.Passed) != 1 || o.Passed[0].Duration != 12250*time.Millisecond {
		t.Errorf("passed: %+v", o.Passed)
	}
	if len(o.Failed) != 1 || !strings.HasPrefix(o.Failed[0].Message, "[FAILED] expected connection refused") {
		t.Errorf("failed: %+v", o.Failed)
	}
	if len(o.Skipped) != 1 || !strings.Contains(o.Skipped[0].Message, "Only supported for providers") {
		t.Errorf("skipped: %+v", o.Skipped)
	}
	if len(o.Missing) != 1 || o.Missing[0] != selected[3] {
		t.Errorf("missing: %v", o.Missing)
	}
	if len(o.SuiteFailures) != 0 {
		t.Errorf("suite failures: %+v", o.SuiteFailures)
	}
}

func TestDryRunSelected(t *testing.T) {
	r, err := ReadJUnit("testdata/junit_run.xml")
	if err != nil {
		t.Fatal(err)
	}
	// A dry run reports the selected specs as passed: only those count.
	got := r.Selected()
	if len(got) != 1 || got[0] != "[sig-network] Services should serve a basic endpoint from pods  [Conformance]" {
		t.Errorf("selected: %v", got)
	}
}

func TestSummaryBlock(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "conformance.md")
	os.WriteFile(doc, []byte("# x\n<!-- conformance:sig-network:begin -->\nold\n<!-- conformance:sig-network:end -->\ntail\n"), 0o644)
	r, _ := ReadJUnit("testdata/junit_run.xml")
	o := r.Outcome(r.Selected())
	if err := WriteSummaryInto(doc, "sig-network", Summary(SigNetworkSelection, o, 1, time.Unix(0, 0), "v1.37.2")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	if s := string(b); strings.Contains(s, "old") || !strings.Contains(s, "| 1 | 1 | 0 | 0 | 0 | 5m13s |") || !strings.HasSuffix(s, "<!-- conformance:sig-network:end -->\ntail\n") {
		t.Errorf("doc:\n%s", s)
	}
	if err := WriteSummaryInto(doc, "conformance", "x"); err == nil {
		t.Error("a missing block is not an error")
	}
	junit := filepath.Join(t.TempDir(), "r.junit.xml")
	if err := WriteLeanJUnit(junit, SigNetworkSelection, r.Outcome([]string{"[sig-network] Services should be rejected when no endpoints exist"})); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(junit); !strings.Contains(string(b), `failures="1"`) || !strings.Contains(string(b), "expected connection refused") {
		t.Errorf("junit:\n%s", b)
	}
}

func TestSelections(t *testing.T) {
	for _, name := range []string{"", "conformance", "sig-network"} {
		s, err := SelectionNamed(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(); err != nil {
			t.Error(err)
		}
	}
	if _, err := SelectionNamed("all"); err == nil {
		t.Error("an unknown selection is accepted")
	}
}
