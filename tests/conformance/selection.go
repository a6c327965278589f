// Package conformance runs Kubernetes' own network e2e suite (e2e.test, built from
// k8s.io/kubernetes at the cluster's version) against edgeplane on the lab's kubelet cluster.
//
// How: TestConformance brings up the cluster (tests/lab StartCluster: three kubelet nodes, two in
// the cloud domain and one in site-a joined by a private line, kube-scheduler, CoreDNS, no
// kube-proxy, edgeplane installed with `kubectl apply -k`), imports the e2e images (package images)
// into every node's containerd, and runs e2e.test inside the API server's network namespace, never
// the host's. It first asks e2e.test itself which specs the selection holds (a --ginkgo.dry-run),
// then runs them and reads Ginkgo's JUnit report: the test fails for every failed spec, for a
// failed suite node, and for a selected spec that did not run. The selection is
// EDGEPLANE_CONFORMANCE: "conformance" (the default, `make test`) or "sig-network" (`make
// conformance`, the broader set docs/conformance.md describes); with
// EDGEPLANE_CONFORMANCE_REPORT_DIR set, the run's summary and a lean JUnit report are written
// there (docs/conformance/).
package conformance

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Selection is a set of e2e specs, as Ginkgo focus and skip expressions.
type Selection struct {
	Name  string
	Focus string
	Skips []Skip
	// MayRuntimeSkip: specs that skip themselves at run time (e.g. for a provider other than
	// local) are reported, not failures. The Conformance selection allows none.
	MayRuntimeSkip bool
	// Timeout bounds the e2e run (--ginkgo.timeout).
	Timeout time.Duration
}

// Skip is one skipped pattern and why.
type Skip struct {
	Pattern, Reason string
}

// SkipExpr is the --ginkgo.skip expression.
func (s Selection) SkipExpr() string {
	var p []string
	for _, k := range s.Skips {
		p = append(p, k.Pattern)
	}
	return strings.Join(p, "|")
}

// The selections EDGEPLANE_CONFORMANCE names.
var (
	ConformanceSelection = Selection{
		Name:    "conformance",
		Focus:   `\[sig-network\].*\[Conformance\]`,
		Timeout: 40 * time.Minute,
	}
	// SigNetworkSelection is the set Cilium's CI runs on kind: [sig-network] minus what needs a
	// feature gate, exclusive use of the cluster, destruction, luck, two IP families, a cloud load
	// balancer or a NetworkPolicy implementation (edgeplane implements none).
	SigNetworkSelection = Selection{
		Name:  "sig-network",
		Focus: `\[sig-network\]`,
		Skips: []Skip{
			{`Feature:`, "needs an optional feature or alpha/beta gate the cluster does not enable"},
			{`\[Serial\]`, "needs the whole cluster for itself (the run is one serial stream, but these change node-wide state)"},
			{`\[Disruptive\]`, "restarts or breaks cluster components"},
			{`\[Flaky\]`, "upstream marks it unreliable"},
			{`DualStack`, "the lab is IPv4 only"},
			{`IPv6`, "the lab is IPv4 only"},
			{`LoadBalancer`, "needs a cloud load balancer controller"},
			{`NetworkPolicy`, "edgeplane does not implement NetworkPolicy"},
		},
		MayRuntimeSkip: true,
		Timeout:        150 * time.Minute,
	}
)

// SelectionNamed returns the selection called name ("" is the Conformance one).
func SelectionNamed(name string) (Selection, error) {
	switch name {
	case "", ConformanceSelection.Name:
		return ConformanceSelection, nil
	case SigNetworkSelection.Name:
		return SigNetworkSelection, nil
	}
	return Selection{}, fmt.Errorf("unknown selection %q: want %q or %q", name, ConformanceSelection.Name, SigNetworkSelection.Name)
}

// Validate checks the expressions compile as Ginkgo compiles them (Go regexp).
func (s Selection) Validate() error {
	for _, e := range []string{s.Focus, s.SkipExpr()} {
		if _, err := regexp.Compile(e); err != nil {
			return fmt.Errorf("selection %s: %w", s.Name, err)
		}
	}
	return nil
}
