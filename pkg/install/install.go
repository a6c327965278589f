// Package install puts edgeplane's CNI plugin and its network configuration on a node: it is
// edgeplane-install, the DaemonSet's init container. The plugin binary goes to the CNI bin
// directory under the name the conflist's "type" uses ("edgeplane"), then the conflist goes to the
// CNI conf directory. Each file is written to a temporary name in its destination directory and
// renamed over the old one, so kubelet and the container runtime see either the old file or the new
// one, never a half-written one, and a plugin binary that is executing is never rewritten in place
// (ETXTBSY). Files whose content is already right are left alone, so a restart changes nothing.
// The binary is installed before the conflist: the runtime uses a conflist as soon as it appears.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/edgeplane/edgeplane/pkg/atomicfile"
	"github.com/edgeplane/edgeplane/pkg/cniconf"
	"github.com/edgeplane/edgeplane/pkg/cninode"
)

// Defaults, as kubelet and the container runtimes look for CNI files.
const (
	DefaultBinDir       = "/opt/cni/bin"
	DefaultConfDir      = "/etc/cni/net.d"
	DefaultConflistName = cniconf.ConflistName
	NetworkName         = "edgeplane"
	// CNIVersion of the conflist: 1.0.0, not 1.1.0, because containerd 1.6 (Debian 12, many edge
	// nodes) rejects 1.1.0 results ("unsupported CNI result version"); the plugin speaks both.
	CNIVersion = "1.0.0"
)

// ChainedPlugins are the reference plugins the conflist chains after edgeplane, and host-local,
// the default IPAM the edgeplane plugin delegates to. They must be in the bin directory.
var ChainedPlugins = []string{"host-local", "portmap", "bandwidth"}

// RuntimePlugins are the reference plugins the container runtime runs itself, beside any
// conflist: containerd's CRI brings up every sandbox's lo with loopback from the same bin
// directory, and fails the pod without it ("failed to find plugin \"loopback\"").
var RuntimePlugins = []string{"loopback"}

// referencePlugins are what the node needs in the bin directory besides edgeplane itself.
func referencePlugins() []string { return append(slices.Clone(ChainedPlugins), RuntimePlugins...) }

// Config says what to install where.
type Config struct {
	// Plugin is the edgeplane-cni binary to install (in the image).
	Plugin string
	// BinDir and ConfDir are the node's CNI directories, as mounted into the container.
	BinDir  string
	ConfDir string
	// ConflistName is the file name in ConfDir; it sorts first so the runtime picks it.
	ConflistName string
	// RunDir is the agent's --run-dir, written into the conflist for the plugin.
	RunDir string
	// MTU, when not 0, overrides the pod MTU the agent computes (node.json).
	MTU int
	// MissingPluginsFrom, when set, is a directory of reference plugins (in the image) copied to
	// BinDir when BinDir has none of that name. Plugins already there are never replaced: they
	// belong to the node's runtime packaging.
	MissingPluginsFrom string
}

// Validate checks the configuration without touching the file system.
func (c *Config) Validate() error {
	var errs []error
	if c.Plugin == "" || c.BinDir == "" || c.ConfDir == "" || c.RunDir == "" {
		errs = append(errs, errors.New("--cni-plugin, --cni-bin-dir, --cni-conf-dir and --run-dir must not be empty"))
	}
	if c.ConflistName == "" || strings.ContainsRune(c.ConflistName, '/') || !strings.HasSuffix(c.ConflistName, ".conflist") {
		errs = append(errs, fmt.Errorf("--conflist-name %q must be a file name ending in .conflist", c.ConflistName))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("--mtu %d is out of range 576-65535 (0: the node's)", c.MTU))
	}
	return errors.Join(errs...)
}

// Result says what Run changed.
type Result struct {
	Changed []string // paths written
	Kept    []string // paths already up to date, or reference plugins left as found
}

// Run installs the plugin, any missing reference plugins, then the conflist.
func Run(c Config) (Result, error) {
	var res Result
	if err := c.Validate(); err != nil {
		return res, err
	}
	conflist, err := Conflist(c)
	if err != nil {
		return res, err
	}
	plugin, err := os.ReadFile(c.Plugin)
	if err != nil {
		return res, fmt.Errorf("reading the plugin to install: %w", err)
	}
	if err := res.write(filepath.Join(c.BinDir, cniconf.PluginType), plugin, 0o755); err != nil {
		return res, err
	}
	if c.MissingPluginsFrom != "" {
		if err := res.addMissing(c.MissingPluginsFrom, c.BinDir); err != nil {
			return res, err
		}
	}
	var missing []string
	for _, p := range referencePlugins() {
		if _, err := os.Stat(filepath.Join(c.BinDir, p)); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return res, fmt.Errorf("the runtime and the conflist need %s, not found in %s: install the reference CNI plugins (containernetworking-plugins) on the node",
			strings.Join(missing, ", "), c.BinDir)
	}
	if err := res.write(filepath.Join(c.ConfDir, c.ConflistName), conflist, 0o644); err != nil {
		return res, err
	}
	return res, nil
}

// Conflist is the network configuration list kubelet's runtime runs: edgeplane (IPAM host-local
// from the node's pod CIDR), then portmap (hostPort) and bandwidth (traffic shaping annotations).
// It is checked with libcni, as the runtime will parse it.
func Conflist(c Config) ([]byte, error) {
	edgeplane := map[string]any{"type": cniconf.PluginType, "runDir": c.RunDir, "ipam": map[string]any{"type": "host-local"}}
	if c.MTU != 0 {
		edgeplane["mtu"] = c.MTU
	}
	list := map[string]any{
		"cniVersion": CNIVersion,
		"name":       NetworkName,
		"plugins": []any{
			edgeplane,
			map[string]any{"type": "portmap", "snat": true, "capabilities": map[string]bool{"portMappings": true}},
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the conflist: %w", err)
	}
	b = append(b, '\n')
	if _, err := libcni.ConfListFromBytes(b); err != nil {
		return nil, fmt.Errorf("the conflist does not parse: %w", err)
	}
	return b, nil
}

// write replaces path with content atomically unless it already holds exactly that.
func (r *Result) write(path string, content []byte, mode fs.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() == mode {
			r.Kept = append(r.Kept, path)
			return nil
		}
	}
	if err := WriteAtomic(path, content, mode); err != nil {
		return err
	}
	r.Changed = append(r.Changed, path)
	return nil
}

func (r *Result) addMissing(from, binDir string) error {
	for _, p := range referencePlugins() {
		dst := filepath.Join(binDir, p)
		if _, err := os.Stat(dst); err == nil {
			r.Kept = append(r.Kept, dst)
			continue
		}
		content, err := os.ReadFile(filepath.Join(from, p))
		if errors.Is(err, fs.ErrNotExist) {
			continue // not shipped: Run reports it missing
		}
		if err != nil {
			return fmt.Errorf("reading reference plugin %s: %w", p, err)
		}
		if err := r.write(dst, content, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// WriteAtomic replaces path with content, mode mode, whole or not at all (pkg/atomicfile): on
// error path is unchanged and nothing is left behind.
func WriteAtomic(path string, content []byte, mode fs.FileMode) error {
	return atomicfile.Write(path, content, mode)
}

// DefaultRunDir is the agent's default --run-dir.
const DefaultRunDir = cninode.DefaultRunDir
