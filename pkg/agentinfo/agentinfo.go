// Package agentinfo is the agent's report about itself in its run directory (--run-dir): the
// effective value of every agent flag and what the node's kernel offers the datapath (the feature
// probes' results, pkg/datapath KernelFeatures). The agent writes it once the datapath is loaded;
// `edgeplanectl config` reads it, agent running or not. It is a leaf: no BPF, no Kubernetes.
package agentinfo

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/edgeplane/edgeplane/pkg/atomicfile"
)

// FileName is the report's name in the run directory.
const FileName = "agent.json"

// Report is what the agent that last started on this node ran with.
type Report struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	// Started is when the agent wrote the report (after loading the datapath).
	Started time.Time `json:"started"`
	// Flags is every agent flag (name without dashes) with its effective value, defaults included.
	Flags  map[string]string `json:"flags"`
	Kernel Kernel            `json:"kernel"`
}

// Kernel is the running kernel as the datapath sees it.
type Kernel struct {
	Release  string    `json:"release"` // uname -r
	Features []Feature `json:"features"`
}

// Feature is one feature probe's result.
type Feature struct {
	Name      string `json:"name"`      // the probe's name: tcx, check_mtu, encap_l2_eth
	Available bool   `json:"available"` // what the probe found on this kernel
	Since     string `json:"since"`     // the Linux release that brought it
	// Uses is what the datapath does with it; Without what it does instead where it is missing.
	Uses    string `json:"uses"`
	Without string `json:"without"`
}

// Path is the report's path in runDir.
func Path(runDir string) string { return filepath.Join(runDir, FileName) }

// Write replaces the report in runDir atomically (a reader never sees half a file).
func Write(runDir string, r *Report) error {
	if err := atomicfile.WriteJSON(Path(runDir), r, 0o644); err != nil {
		return fmt.Errorf("writing the agent report: %w", err)
	}
	return nil
}

// Read reads the report in runDir; the error wraps fs.ErrNotExist when there is none (no agent
// started on this node since it was installed, or it was uninstalled).
func Read(runDir string) (*Report, error) {
	r := &Report{}
	if err := atomicfile.ReadJSON(Path(runDir), r); err != nil {
		return nil, fmt.Errorf("reading the agent report: %w", err)
	}
	return r, nil
}

// Remove deletes the report; a missing one is not an error.
func Remove(runDir string) error {
	if err := atomicfile.Remove(Path(runDir)); err != nil {
		return fmt.Errorf("removing the agent report: %w", err)
	}
	return nil
}
