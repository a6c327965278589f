package conformance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// Environment of the run (the Makefile sets it; docs/conformance.md).
const (
	// EnvImages lists the e2e image tarballs (scripts/build-e2e-images.sh's output), space or
	// newline separated.
	EnvImages = "E2E_IMAGES"
	// EnvSelection names the selection: "conformance" (default) or "sig-network".
	EnvSelection = "EDGEPLANE_CONFORMANCE"
	// EnvReportDir, when set, receives the lean JUnit report <selection>.junit.xml.
	EnvReportDir = "EDGEPLANE_CONFORMANCE_REPORT_DIR"
	// EnvDoc, when set, is the Markdown file whose conformance:<selection> block gets the summary.
	EnvDoc = "EDGEPLANE_CONFORMANCE_DOC"
	// EnvFocus, when set, replaces the selection's focus (its skips stay): to re-run chosen specs
	// while investigating. Such a run writes no summary into EnvDoc.
	EnvFocus = "EDGEPLANE_CONFORMANCE_FOCUS"
	// k8sVersion is the version e2e.test, kubectl and the cluster are built at (scripts/build-k8s.sh).
	k8sVersion = "v1.37.2"
)

var labs lab.Labs

func TestMain(m *testing.M) { os.Exit(lab.Main(m, "conformance", &labs)) }

func TestConformance(t *testing.T) {
	sel, err := SelectionNamed(os.Getenv(EnvSelection))
	if err != nil {
		t.Fatal(err)
	}
	focused := os.Getenv(EnvFocus) != ""
	if focused {
		sel.Focus, sel.Name = os.Getenv(EnvFocus), sel.Name+"-focused"
		if err := sel.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := lab.ConfigForTest(t)
	e2eBin, kubectl := filepath.Join(cfg.K8sBin, "e2e.test"), filepath.Join(cfg.K8sBin, "kubectl")
	tarballs := strings.Fields(os.Getenv(EnvImages))
	var missing []string
	for _, f := range append([]string{e2eBin, kubectl}, tarballs...) {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(tarballs) == 0 {
		missing = append(missing, EnvImages+" is not set")
	}
	if len(missing) > 0 {
		t.Fatalf("the conformance run needs e2e.test and kubectl in K8S_BIN (scripts/build-k8s.sh) and the e2e images in %s (scripts/build-e2e-images.sh): run `make test` or `make conformance`: %s",
			EnvImages, strings.Join(missing, "; "))
	}
	opts := lab.ClusterOptions{}
	if os.Getenv(lab.EnvCoreDNSImage) == "" {
		for _, f := range tarballs {
			if filepath.Base(f) == "coredns.tar" {
				opts.CoreDNSImage = f
			}
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), sel.Timeout+20*time.Minute)
	defer cancel()
	start := time.Now()
	cfg.ServiceAccountAdmission = true
	l := lab.NewForTest(t, cfg, &labs)
	c, err := l.StartCluster(ctx, opts)
	if err != nil {
		t.Fatalf("bringing the cluster up: %v", err)
	}
	for _, tm := range c.Timings {
		t.Logf("phase: bring-up: %s: %v", tm.Phase, tm.Duration.Round(time.Millisecond))
	}
	t.Logf("phase: cluster of %d nodes up in %v (lab %s)", len(c.Nodes), time.Since(start).Round(time.Second), l.Dir)
	phase := time.Now()
	if _, err := c.ImportImages(ctx, tarballs...); err != nil {
		t.Fatalf("importing the e2e images: %v", err)
	}
	t.Logf("phase: %d e2e images imported into %d nodes in %v", len(tarballs), len(c.Nodes), time.Since(phase).Round(time.Second))

	e2e := E2E{Binary: e2eBin, Kubectl: kubectl, Kubeconfig: c.Kubeconfig, Netns: c.APINetns.Path(), NumNodes: len(c.Nodes)}
	dir := filepath.Join(l.Dir, "e2e-"+sel.Name)
	dry, err := e2e.Run(ctx, sel, filepath.Join(dir, "dry-run"), true)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	selected := dry.Selected()
	if len(selected) == 0 {
		t.Fatalf("the dry run of selection %s selects no spec", sel.Name)
	}
	t.Logf("phase: e2e.test selects %d specs (focus %q, skip %q)", len(selected), sel.Focus, sel.SkipExpr())

	phase = time.Now()
	run, err := e2e.Run(ctx, sel, dir, false)
	if err != nil {
		l.KeepLogs()
		t.Fatalf("running e2e.test: %v", err)
	}
	o := run.Outcome(selected)
	t.Logf("phase: e2e.test ran in %v: %d passed, %d failed, %d skipped at run time, %d not run, of %d selected (report %s)",
		time.Since(phase).Round(time.Second), len(o.Passed), len(o.Failed), len(o.Skipped), len(o.Missing), len(selected), filepath.Join(dir, "junit_01.xml"))

	if d := os.Getenv(EnvReportDir); d != "" {
		if err := WriteLeanJUnit(filepath.Join(d, sel.Name+".junit.xml"), sel, o); err != nil {
			t.Errorf("writing the JUnit report: %v", err)
		}
	}
	if doc := os.Getenv(EnvDoc); doc != "" && !focused {
		if err := WriteSummaryInto(doc, sel.Name, Summary(sel, o, len(selected), start, k8sVersion)); err != nil {
			t.Errorf("writing the summary: %v", err)
		}
	}

	for _, s := range o.Failed {
		t.Errorf("FAILED %s (%v): %s", s.Name, s.Duration.Round(time.Second), s.Message)
	}
	for _, s := range o.SuiteFailures {
		t.Errorf("FAILED suite node %s: %s", s.Name, s.Message)
	}
	for _, n := range o.Missing {
		t.Errorf("NOT RUN %s: selected by the dry run, absent from the run's report", n)
	}
	for _, s := range o.Skipped {
		if sel.MayRuntimeSkip {
			t.Logf("skipped at run time: %s: %s", s.Name, firstLine(s.Message))
		} else {
			t.Errorf("SKIPPED %s: %s (every spec of selection %s must run)", s.Name, firstLine(s.Message), sel.Name)
		}
	}
	if ran := len(o.Passed) + len(o.Failed); ran < len(selected) && !sel.MayRuntimeSkip {
		t.Errorf("%d of the %d selected specs ran", ran, len(selected))
	}
	if t.Failed() {
		l.KeepLogs()
		t.Log(fmt.Sprintf("e2e log: %s", filepath.Join(dir, "e2e.log")))
	}
}
