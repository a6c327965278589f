package install

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// node is a fake node: the image's files and the node's CNI directories.
type node struct {
	image, bin, conf string
	cfg              Config
}

func newNode(t *testing.T, withReferencePlugins bool) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{image: filepath.Join(root, "image"), bin: filepath.Join(root, "opt/cni/bin"), conf: filepath.Join(root, "etc/cni/net.d")}
	for _, d := range []string{n.image, n.bin, n.conf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(n.image, "edgeplane-cni"), "plugin v1", 0o755)
	if withReferencePlugins {
		for _, p := range referencePlugins() {
			writeFile(t, filepath.Join(n.bin, p), "node's "+p, 0o755)
		}
	}
	n.cfg = Config{
		Plugin: filepath.Join(n.image, "edgeplane-cni"), BinDir: n.bin, ConfDir: n.conf,
		ConflistName: DefaultConflistName, RunDir: DefaultRunDir,
	}
	return n
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// noTemporaries fails when a temporary file is left in dir.
func noTemporaries(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left in %s", e.Name(), dir)
		}
	}
}

func TestRunInstallsPluginThenConflist(t *testing.T) {
	n := newNode(t, true)
	res, err := Run(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(n.bin, "edgeplane")
	conflist := filepath.Join(n.conf, DefaultConflistName)
	if want := []string{plugin, conflist}; !slices.Equal(res.Changed, want) {
		t.Errorf("changed %v, want %v (plugin before conflist)", res.Changed, want)
	}
	if got := readFile(t, plugin); got != "plugin v1" {
		t.Errorf("plugin content %q", got)
	}
	if st, _ := os.Stat(plugin); st.Mode().Perm() != 0o755 {
		t.Errorf("plugin mode %v, want 0755", st.Mode().Perm())
	}
	if st, _ := os.Stat(conflist); st.Mode().Perm() != 0o644 {
		t.Errorf("conflist mode %v, want 0644", st.Mode().Perm())
	}
	for _, p := range referencePlugins() {
		if got := readFile(t, filepath.Join(n.bin, p)); got != "node's "+p {
			t.Errorf("%s was touched: %q", p, got)
		}
	}
	noTemporaries(t, n.bin)
	noTemporaries(t, n.conf)
}

func TestRunIsIdempotent(t *testing.T) {
	n := newNode(t, true)
	if _, err := Run(n.cfg); err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(n.bin, "edgeplane")
	conflist := filepath.Join(n.conf, DefaultConflistName)
	before := []uint64{inode(t, plugin), inode(t, conflist)}
	res, err := Run(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 0 {
		t.Errorf("second run changed %v", res.Changed)
	}
	if after := []uint64{inode(t, plugin), inode(t, conflist)}; !slices.Equal(before, after) {
		t.Errorf("second run replaced files: inodes %v -> %v", before, after)
	}
}

// An upgrade replaces the plugin by rename: a process that has the old binary open (executing it)
// keeps reading the old content, and the new file is a new inode.
func TestRunReplacesByRename(t *testing.T) {
	n := newNode(t, true)
	if _, err := Run(n.cfg); err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(n.bin, "edgeplane")
	old, err := os.Open(plugin)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldInode := inode(t, plugin)

	writeFile(t, n.cfg.Plugin, "plugin v2", 0o755)
	res, err := Run(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Changed, []string{plugin}) {
		t.Errorf("changed %v, want only the plugin", res.Changed)
	}
	if inode(t, plugin) == oldInode {
		t.Error("the plugin was rewritten in place, not renamed over")
	}
	buf := make([]byte, 64)
	k, _ := old.ReadAt(buf, 0)
	if got := string(buf[:k]); got != "plugin v1" {
		t.Errorf("the open old binary now reads %q", got)
	}
	if got := readFile(t, plugin); got != "plugin v2" {
		t.Errorf("new plugin content %q", got)
	}
	noTemporaries(t, n.bin)
}

func TestRunRepairsMode(t *testing.T) {
	n := newNode(t, true)
	if _, err := Run(n.cfg); err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(n.bin, "edgeplane")
	if err := os.Chmod(plugin, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(n.cfg); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(plugin); st.Mode().Perm() != 0o755 {
		t.Errorf("plugin mode %v after repair, want 0755", st.Mode().Perm())
	}
}

func TestRunMissingReferencePlugins(t *testing.T) {
	n := newNode(t, false)
	_, err := Run(n.cfg)
	if err == nil || !strings.Contains(err.Error(), "host-local, portmap, bandwidth") {
		t.Fatalf("want an error naming the missing plugins, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.conf, DefaultConflistName)); !os.IsNotExist(err) {
		t.Errorf("a conflist was written although its plugins are missing (stat: %v)", err)
	}

	// Shipped in the image: copied where missing, the node's own left alone.
	shipped := filepath.Join(t.TempDir(), "plugins")
	if err := os.MkdirAll(shipped, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range referencePlugins() {
		writeFile(t, filepath.Join(shipped, p), "image's "+p, 0o755)
	}
	writeFile(t, filepath.Join(n.bin, "portmap"), "node's portmap", 0o755)
	n.cfg.MissingPluginsFrom = shipped
	if _, err := Run(n.cfg); err != nil {
		t.Fatal(err)
	}
	// loopback too: the runtime runs it for every sandbox (containerd's CRI), conflist or not.
	want := map[string]string{"host-local": "image's host-local", "portmap": "node's portmap", "bandwidth": "image's bandwidth",
		"loopback": "image's loopback"}
	for p, content := range want {
		if got := readFile(t, filepath.Join(n.bin, p)); got != content {
			t.Errorf("%s: %q, want %q", p, got, content)
		}
	}
}

func TestConflistParsesWithLibcni(t *testing.T) {
	for _, mtu := range []int{0, 1400} {
		b, err := Conflist(Config{RunDir: "/run/edgeplane", MTU: mtu})
		if err != nil {
			t.Fatal(err)
		}
		list, err := libcni.ConfListFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		if list.CNIVersion != "1.0.0" || list.Name != "edgeplane" {
			t.Errorf("cniVersion %q name %q", list.CNIVersion, list.Name)
		}
		var types []string
		for _, p := range list.Plugins {
			types = append(types, p.Network.Type)
		}
		if want := []string{"edgeplane", "portmap", "bandwidth"}; !slices.Equal(types, want) {
			t.Errorf("chain %v, want %v", types, want)
		}
		first := string(list.Plugins[0].Bytes)
		for _, s := range []string{`"runDir":"/run/edgeplane"`, `"ipam":{"type":"host-local"}`} {
			if !strings.Contains(first, s) {
				t.Errorf("edgeplane plugin config %s lacks %s", first, s)
			}
		}
		if hasMTU := strings.Contains(first, `"mtu":1400`); hasMTU != (mtu != 0) {
			t.Errorf("mtu %d: plugin config %s", mtu, first)
		}
		if !strings.Contains(string(list.Plugins[1].Bytes), `"portMappings":true`) ||
			!strings.Contains(string(list.Plugins[2].Bytes), `"bandwidth":true`) {
			t.Errorf("portmap/bandwidth capabilities missing: %s", b)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Config{Plugin: "/p", BinDir: "/b", ConfDir: "/c", ConflistName: DefaultConflistName, RunDir: "/r"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Config){
		"no bin dir":       func(c *Config) { c.BinDir = "" },
		"path as name":     func(c *Config) { c.ConflistName = "../x.conflist" },
		"not a conflist":   func(c *Config) { c.ConflistName = "10-edgeplane.conf" },
		"mtu out of range": func(c *Config) { c.MTU = 100 },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
