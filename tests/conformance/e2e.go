package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// E2E says how to run e2e.test against a cluster.
type E2E struct {
	Binary     string // e2e.test
	Kubectl    string // a kubectl of the cluster's version (else e2e.test finds one on PATH)
	Kubeconfig string // the admin kubeconfig, valid inside Netns
	Netns      string // the network namespace (its /run/netns path) e2e.test runs in
	NumNodes   int
}

// Run runs the selection (a dry run when dryRun) with its report and log in dir and returns the
// JUnit report read back. e2e.test's exit status is not an error when the report exists: the
// report says what failed.
func (e E2E) Run(ctx context.Context, sel Selection, dir string, dryRun bool) (Report, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Report{}, fmt.Errorf("creating the report directory: %w", err)
	}
	args := []string{
		"--net=" + e.Netns, "--",
		e.Binary,
		"--kubeconfig=" + e.Kubeconfig,
		"--provider=local",
		"--num-nodes=" + strconv.Itoa(e.NumNodes),
		"--kubectl-path=" + e.Kubectl,
		"--report-dir=" + dir,
		"--ginkgo.focus=" + sel.Focus,
		"--ginkgo.timeout=" + sel.Timeout.String(),
		"--ginkgo.no-color",
		"--ginkgo.v",
	}
	if skip := sel.SkipExpr(); skip != "" {
		args = append(args, "--ginkgo.skip="+skip)
	}
	if dryRun {
		args = append(args, "--ginkgo.dry-run")
	}
	logPath := filepath.Join(dir, "e2e.log")
	log, err := os.Create(logPath)
	if err != nil {
		return Report{}, fmt.Errorf("creating the e2e log: %w", err)
	}
	defer log.Close()
	// nsenter execs e2e.test in place: the context's kill reaches e2e.test itself.
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	report, err := ReadJUnit(filepath.Join(dir, "junit_01.xml"))
	if err != nil {
		if runErr != nil {
			return Report{}, fmt.Errorf("e2e.test: %w (log %s); %w", runErr, logPath, err)
		}
		return Report{}, fmt.Errorf("%w (log %s)", err, logPath)
	}
	return report, nil
}
