package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// nodeExec runs CNI plugins the way a kubelet on the node would: inside the node's network
// namespace (nsenter --net), with the runtime's stdin and environment. Each call is logged, with
// the plugin's stderr, to the node's cni.log.
type nodeExec struct {
	ns      Netns
	logPath string
	mu      sync.Mutex
}

var _ invoke.Exec = (*nodeExec)(nil)

func (e *nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+e.ns.Path(), "--", pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdinData)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	e.log(pluginPath, environ, stdinData, stdout.Bytes(), stderr.Bytes(), err, time.Since(start))
	if err != nil {
		emsg := types.Error{}
		switch {
		case stdout.Len() == 0 && stderr.Len() == 0:
			emsg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
		case stdout.Len() == 0:
			emsg.Msg = fmt.Sprintf("netplugin failed: %q", stderr.String())
		default:
			if perr := json.Unmarshal(stdout.Bytes(), &emsg); perr != nil {
				emsg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", stdout.String(), perr)
			}
		}
		return nil, &emsg
	}
	return stdout.Bytes(), nil
}

func (e *nodeExec) log(plugin string, env []string, stdin, stdout, stderr []byte, err error, took time.Duration) {
	cmd := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			cmd = v
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	f, ferr := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if ferr != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s %s %s (%v) err=%v\nstdin: %s\nstdout: %s\n", time.Now().Format("15:04:05.000"), cmd, plugin, took.Round(time.Millisecond), err, stdin, bytes.TrimSpace(stdout))
	if len(stderr) > 0 {
		fmt.Fprintf(f, "stderr: %s\n", bytes.TrimSpace(stderr))
	}
}

func (e *nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *nodeExec) Decode(jsonBytes []byte) (version.PluginInfo, error) {
	var d version.PluginDecoder
	return d.Decode(jsonBytes)
}

// CNI returns a libcni runtime for this node: plugins from the lab's plugin dir, cache in the
// node's dir, executed inside the node namespace.
func (n *Node) CNI() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{n.lab.pluginDir}, n.CNICache,
		&nodeExec{ns: n.Netns, logPath: n.CNILogPath()})
}

// CNILogPath is where every plugin invocation on this node is logged.
func (n *Node) CNILogPath() string { return n.Dir + "/cni.log" }

// NetworkName is the conflist's network name.
const NetworkName = "edgeplane"

// ConflistDir is the node's /etc/cni/net.d: a conflist installed there (a Flannel node's, see
// StartFlannel) replaces the edgeplane chain for the node's pods.
func (n *Node) ConflistDir() string { return n.Dir + "/net.d" }

// Conflist is the chain a kubelet on this node would run: the first conflist in ConflistDir by
// name, as a runtime would pick it, or else edgeplane (IPAM delegated to host-local), portmap,
// bandwidth.
func (n *Node) Conflist() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(n.ConflistDir(), []string{".conflist"})
	if err != nil {
		return nil, err
	}
	if len(files) > 0 {
		sort.Strings(files)
		return libcni.ConfListFromFile(files[0])
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       NetworkName,
		"plugins": []any{
			map[string]any{
				"type":   "edgeplane",
				"runDir": n.RunDir,
				"ipam":   map[string]any{"type": "host-local", "dataDir": n.IPAMDir},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}
