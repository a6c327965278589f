// Package cninode is the contract between the agent and the CNI plugin: the agent writes this
// node's network configuration as JSON under its run directory (like Flannel's subnet.env) once the
// datapath is programmed, and the CNI plugin reads it on every invocation. STATUS fails while it is
// absent. Writes are atomic (temp file + rename), so a reader never sees half a file.
package cninode

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/edgeplane/edgeplane/pkg/atomicfile"
)

// DefaultRunDir is where the agent writes and the plugin reads by default.
const DefaultRunDir = "/run/edgeplane"

// FileName is the config file's name inside the run directory.
const FileName = "node.json"

// GatewayIP is the link-local address every pod uses as its default gateway; the host side of the
// pod veth answers for it through a static neighbour entry inside the pod.
var GatewayIP = netip.MustParseAddr("169.254.1.1")

// Config is what the plugin needs to know about its node.
type Config struct {
	NodeName    string       `json:"nodeName"`
	NodeIP      netip.Addr   `json:"nodeIP"`
	PodCIDR     netip.Prefix `json:"podCIDR"`
	ClusterCIDR netip.Prefix `json:"clusterCIDR"`
	MTU         int          `json:"mtu"`       // pod MTU (underlay MTU - 50 in vxlan mode)
	BPFFSRoot   string       `json:"bpffsRoot"` // where the agent pinned maps and programs
	// GSOIPv4MaxSize is the IPv4 GSO and GRO size of new pods' veth pairs, both ends (BIG TCP,
	// the agent's --ipv4-big-tcp in a route-mode domain); 0 leaves the kernel's 64 KiB.
	GSOIPv4MaxSize int `json:"gsoIPv4MaxSize,omitempty"`
}

// The range of GSOIPv4MaxSize: the kernel's legacy size up to what it accepts at all
// (GSO_MAX_SIZE, 512 KiB - 1 on 64-bit kernels with BIG TCP).
const (
	minGSOIPv4MaxSize = 65536
	maxGSOIPv4MaxSize = 524280
)

// Validate says what is missing or inconsistent.
func (c *Config) Validate() error {
	switch {
	case c.NodeName == "":
		return errors.New("nodeName is empty")
	case !c.PodCIDR.IsValid() || !c.PodCIDR.Addr().Is4():
		return fmt.Errorf("podCIDR %q is not an IPv4 prefix", c.PodCIDR)
	case !c.ClusterCIDR.IsValid() || !c.ClusterCIDR.Contains(c.PodCIDR.Addr()) || c.ClusterCIDR.Bits() > c.PodCIDR.Bits():
		return fmt.Errorf("podCIDR %s is not inside clusterCIDR %s", c.PodCIDR, c.ClusterCIDR)
	case c.MTU < 576 || c.MTU > 65535:
		return fmt.Errorf("mtu %d is out of range 576-65535", c.MTU)
	case c.BPFFSRoot == "":
		return errors.New("bpffsRoot is empty")
	case c.GSOIPv4MaxSize != 0 && (c.GSOIPv4MaxSize < minGSOIPv4MaxSize || c.GSOIPv4MaxSize > maxGSOIPv4MaxSize):
		return fmt.Errorf("gsoIPv4MaxSize %d is out of range %d-%d (or 0)", c.GSOIPv4MaxSize, minGSOIPv4MaxSize, maxGSOIPv4MaxSize)
	}
	return nil
}

// Path is the config file's path inside runDir.
func Path(runDir string) string { return filepath.Join(runDir, FileName) }

// Read loads and validates the config from runDir. A missing file is reported with os.ErrNotExist
// wrapped, so callers can tell "agent not ready" from "agent wrote garbage".
func Read(runDir string) (*Config, error) {
	b, err := os.ReadFile(Path(runDir))
	if err != nil {
		return nil, fmt.Errorf("reading node config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parsing node config %s: %w", Path(runDir), err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("node config %s: %w", Path(runDir), err)
	}
	return &c, nil
}

// Write stores the config atomically in runDir.
func Write(runDir string, c *Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("refusing to write node config: %w", err)
	}
	// 0600: only root (the CNI plugin, the agent) reads it.
	if err := atomicfile.WriteJSON(Path(runDir), c, 0o600); err != nil {
		return fmt.Errorf("writing node config: %w", err)
	}
	return nil
}

// Remove deletes the config (agent uninstall); a missing file is not an error.
func Remove(runDir string) error {
	if err := atomicfile.Remove(Path(runDir)); err != nil {
		return fmt.Errorf("removing node config: %w", err)
	}
	return nil
}
