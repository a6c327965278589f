// Package pkg_test holds the import rule of the module's package layers (docs/architecture.md,
// "Package layers"): a package never imports one of a higher layer, not even for a constant.
package pkg_test

import (
	"errors"
	"go/build"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/edgeplane/edgeplane/"

// layer is a set of packages, by path in the module: exact, or a tree ("pkg/maps/...").
type layer struct {
	name     string
	packages []string
	// peers says whether the layer's packages may import one another (the map packages share
	// types); elsewhere they may not, so that, say, the installer never links the CNI plugin.
	peers bool
}

// layers, from the top: a package may import packages of lower layers only (and its peers when
// the layer allows it). Keep docs/architecture.md's list and diagram in step with this one.
var layers = []layer{
	{name: "entry points", peers: true, packages: []string{
		"cmd/...", "deploy", "deploy/...", "tests/...", "internal/ociimage/cmd/...",
	}},
	{name: "programs", packages: []string{
		"pkg/agent", // the agent's wiring only
		"pkg/cli",   // edgeplanectl
		"pkg/cni",   // the CNI plugin
		"pkg/install",
		"pkg/bgp/gobgp", // edgeplane-bgp's speaker: GoBGP, which only that process links
	}},
	{name: "agent services", packages: []string{"pkg/metrics", "pkg/svchealth"}},
	{name: "map collectors", packages: []string{
		"pkg/controller/conntrackgc", // lb_ct_map, lb_affinity_map: asks the reconciler, names backends through maptables
	}},
	{name: "reconcilers' adapters", packages: []string{
		"pkg/controller/maptables",      // the controller's table interfaces over pkg/maps
		"pkg/controller/externalroutes", // its FrontendHook: host routes to externalIPs, LB IPs
	}},
	{name: "reconcilers", packages: []string{"pkg/controller", "pkg/agent/podcidr", "pkg/k8s/k8stest"}},
	{name: "Kubernetes API access", packages: []string{"pkg/k8s"}},
	{name: "models and kernel access", packages: []string{
		"pkg/service", "pkg/domain", // models
		"pkg/datapath", "pkg/agent/netdev", // kernel access: BPF objects, links, routes, devices
		"pkg/bgp", // the route-mode BGP speaker's configuration, and its process (edgeplane-bgp) as the agent drives it
	}},
	{name: "maps", peers: true, packages: []string{"pkg/maps", "pkg/maps/..."}},
	{name: "leaves", packages: []string{
		"pkg/agentinfo", "pkg/cniconf", "pkg/cninode", "pkg/datapath/dropreason", "pkg/domainid", "pkg/nameindex",
		"pkg/snapshot",         // the agent's last good state on disk, for a node rebooted while cut off
		"pkg/bgp/bgpstatus",    // the speaker's peer status without GoBGP, for edgeplanectl and metrics
		"pkg/metrics/promtext", // metrics kept and written in Prometheus' text format, for pkg/metrics
		"pkg/datapath/bpffstest", "pkg/internal/netnstest", "pkg/internal/heaptest", "internal/ociimage",
		"pkg/internal/ipmap", // maps keyed by IPv4 addresses and prefixes in 4 and 5 bytes
		"pkg/k8s/api",        // the Kubernetes API types the agent reads, its own: no k8s.io/api/core/v1 linked
	}},
	{name: "files", packages: []string{
		"pkg/atomicfile", // whole-or-nothing file writes: the run directory's reports, the snapshot
	}},
}

// layerOf returns the index in layers of the package at path: an exact entry first, then the
// longest tree that holds it; -1 when no layer names it.
func layerOf(path string) int {
	best, bestLen := -1, -1
	for i, l := range layers {
		for _, p := range l.packages {
			switch {
			case p == path:
				return i
			case strings.HasSuffix(p, "/...") && strings.HasPrefix(path+"/", strings.TrimSuffix(p, "...")) && len(p) > bestLen:
				best, bestLen = i, len(p)
			}
		}
	}
	return best
}

// modulePackages returns every package of the module (by path inside it) with the module
// packages its non-test files import: what a binary built from it links. Tests may import a higher
// layer (the maps' tests load the real objects from pkg/datapath).
func modulePackages(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string][]string{}
	err = filepath.WalkDir(root, func(dir string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if name := d.Name(); dir != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin") {
			return filepath.SkipDir
		}
		p, err := build.Default.ImportDir(dir, 0)
		var noGo *build.NoGoError
		switch {
		case errors.As(err, &noGo):
			return nil
		case err != nil:
			return err
		case len(p.GoFiles)+len(p.CgoFiles) == 0:
			return nil // tests only (this package)
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return err
		}
		var imports []string
		for _, imp := range p.Imports {
			if after, ok := strings.CutPrefix(imp, module); ok {
				imports = append(imports, after)
			}
		}
		pkgs[filepath.ToSlash(rel)] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil || len(pkgs) == 0 {
		t.Fatalf("no module at %s: %v", root, err)
	}
	return pkgs
}

func TestPackageLayers(t *testing.T) {
	pkgs := modulePackages(t)
	for _, path := range slices.Sorted(func(yield func(string) bool) {
		for p := range pkgs {
			if !yield(p) {
				return
			}
		}
	}) {
		from := layerOf(path)
		if from < 0 {
			t.Errorf("%s is in no layer: add it to layers (pkg/layers_test.go) and docs/architecture.md", path)
			continue
		}
		for _, imp := range pkgs[path] {
			to := layerOf(imp)
			switch {
			case to < 0:
				// reported as a package of its own
			case to < from:
				t.Errorf("%s (%s) imports %s (%s), a higher layer: move what it needs down",
					path, layers[from].name, imp, layers[to].name)
			case to == from && !layers[from].peers:
				t.Errorf("%s imports %s, both %s, which do not import one another: move what it needs down",
					path, imp, layers[from].name)
			}
		}
	}
}

// TestLayersNameRealPackages keeps the list honest: every entry names a package, or a tree holding
// one, that exists.
func TestLayersNameRealPackages(t *testing.T) {
	pkgs := modulePackages(t)
	for _, l := range layers {
		for _, p := range l.packages {
			tree, isTree := strings.CutSuffix(p, "/...")
			found := false
			for path := range pkgs {
				if path == p || isTree && strings.HasPrefix(path+"/", tree+"/") && path != tree {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("layer %q names %s, which is no package of the module", l.name, p)
			}
		}
	}
}

// The agent does not link GoBGP: the route-mode speaker runs in edgeplane-bgp (pkg/bgp's
// Process), so nodes that do not speak BGP do not pay for its code and start-up state. Nor does
// it link k8s.io/api's core or discovery groups, whose packages register every type they have
// and so link all of their generated code (~3 MiB of a settled agent's resident pages): it reads
// the API through its own types (pkg/k8s/api) and the compact ones of pkg/k8s.
func TestAgentDoesNotLink(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../cmd/edgeplane-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/osrg/gobgp") || strings.HasPrefix(p, "google.golang.org/grpc") ||
			p == "k8s.io/api/core/v1" || p == "k8s.io/api/discovery/v1" || strings.HasPrefix(p, "k8s.io/client-go/listers") {
			t.Errorf("edgeplane-agent links %s", p)
		}
	}
}
