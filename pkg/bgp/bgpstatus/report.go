package bgpstatus

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/edgeplane/edgeplane/pkg/atomicfile"
)

// FileName is the agent's BGP report in its run directory (--run-dir): the agent rewrites it
// whenever what it says changes, `edgeplanectl bgp` reads it, agent running or not.
const FileName = "bgp.json"

// Report is this node's BGP speaker as the agent last saw it.
type Report struct {
	Node   string `json:"node"`
	Domain string `json:"domain,omitempty"`
	// Speaking says the node runs a speaker: its domain is in route mode and the node is one of
	// the domain's speakers. The other fields below are empty when it does not.
	Speaking bool       `json:"speaking"`
	RouterID netip.Addr `json:"routerID,omitzero"`
	LocalASN uint32     `json:"localASN,omitempty"`
	// Advertised are the prefixes the speaker announces to every peer, with their next hops.
	Advertised []Advertisement `json:"advertised,omitempty"`
	Peers      []PeerStatus    `json:"peers,omitempty"`
	// Error is why the last attempt to converge the speaker failed (a missing Secret, a peer
	// the speaker refused); empty when it succeeded.
	Error string `json:"error,omitempty"`
	// Updated is when the agent computed this report.
	Updated time.Time `json:"updated"`
}

// Advertisement is one prefix the speaker announces.
type Advertisement struct {
	Prefix  netip.Prefix `json:"prefix"`
	NextHop netip.Addr   `json:"nextHop"`
}

// Path is the report's path in runDir.
func Path(runDir string) string { return filepath.Join(runDir, FileName) }

// Write replaces the report in runDir atomically (a reader never sees half a file).
func Write(runDir string, r *Report) error {
	if err := atomicfile.WriteJSON(Path(runDir), r, 0o644); err != nil {
		return fmt.Errorf("writing the BGP report: %w", err)
	}
	return nil
}

// Read reads the report in runDir; the error wraps fs.ErrNotExist when there is none (no agent
// ever ran a speaker on this node, or it was uninstalled).
func Read(runDir string) (*Report, error) {
	r := &Report{}
	if err := atomicfile.ReadJSON(Path(runDir), r); err != nil {
		return nil, fmt.Errorf("reading the BGP report: %w", err)
	}
	return r, nil
}

// Remove deletes the report; a missing one is not an error.
func Remove(runDir string) error {
	if err := atomicfile.Remove(Path(runDir)); err != nil {
		return fmt.Errorf("removing the BGP report: %w", err)
	}
	return nil
}
