// The node the plugin's tests run on (env: its netns, a private bpffs with the datapath loaded,
// node.json, host-local IPAM), the plugin's verbs as the runtime calls them, and the checks that a
// pod left nothing behind.

package cni

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

var specVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// env is one node: its netns (the plugin runs there, as in the lab), a private bpffs with a loaded
// datapath, a run dir with node.json and a host-local store.
type env struct {
	t       *testing.T
	nodeNS  ns.NetNS
	root    string
	runDir  string
	dataDir string
	dp      *datapath.Datapath
	podCIDR netip.Prefix
	// gsoIPv4MaxSize is node.json's (BIG TCP); writeNode writes it.
	gsoIPv4MaxSize int
}

func pluginsDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("CNI_PLUGINS_BIN"); dir != "" {
		return dir
	}
	out, err := exec.Command("../../scripts/install-cni-plugins.sh").Output()
	if err != nil {
		t.Fatalf("installing reference CNI plugins: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

func newEnv(t *testing.T) *env {
	t.Helper()
	bpffstest.RequireRoot(t)
	t.Setenv("PATH", pluginsDir(t)+string(os.PathListSeparator)+os.Getenv("PATH")) // testutils sets CNI_PATH=PATH
	e := &env{
		t:       t,
		nodeNS:  newNS(t),
		root:    filepath.Join(bpffstest.Mount(t), "edgeplane"),
		runDir:  t.TempDir(),
		dataDir: t.TempDir(),
		podCIDR: netip.MustParsePrefix("10.244.1.0/24"),
	}
	dp, err := datapath.Load(e.root)
	if err != nil {
		t.Fatalf("loading datapath: %+v", err)
	}
	e.dp = dp
	t.Cleanup(func() { dp.Close() })
	e.writeNode()
	return e
}

func (e *env) writeNode() {
	e.t.Helper()
	err := cninode.Write(e.runDir, &cninode.Config{
		NodeName:    "node-1",
		NodeIP:      netip.MustParseAddr("192.168.0.1"),
		PodCIDR:     e.podCIDR,
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		MTU:         1450,
		BPFFSRoot:   e.root,

		GSOIPv4MaxSize: e.gsoIPv4MaxSize,
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// newNS creates a netns that is removed when the test ends, however it ends (a t.Fatal half-way
// included).
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() { removeNS(t, n) })
	return n
}

// removeNS closes and unmounts n; one the test already removed is left alone. A failure is
// reported: a silently leaked cnitest-* namespace outlives the run.
func removeNS(t *testing.T, n ns.NetNS) {
	t.Helper()
	_ = n.Close() // already closed when the test removed it itself
	if _, err := os.Stat(n.Path()); errors.Is(err, os.ErrNotExist) {
		return
	}
	if err := testutils.UnmountNS(n); err != nil {
		t.Errorf("removing netns: %v", err)
	}
}

func (e *env) conf(version string, extra map[string]any) []byte {
	c := map[string]any{
		"cniVersion": version,
		"name":       "edgeplane-test",
		"type":       "edgeplane",
		"runDir":     e.runDir,
		"ipam":       map[string]any{"type": "host-local", "dataDir": e.dataDir},
	}
	for k, v := range extra {
		c[k] = v
	}
	b, err := json.Marshal(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func args(pod ns.NetNS, cid string, conf []byte) *skel.CmdArgs {
	path := ""
	if pod != nil {
		path = pod.Path()
	}
	return &skel.CmdArgs{ContainerID: cid, Netns: path, IfName: "eth0", StdinData: conf, Path: os.Getenv("PATH"),
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns-" + cid + ";K8S_POD_NAME=pod-" + cid + ";K8S_POD_UID=uid-" + cid}
}

// inNode runs f in the node's netns.
func (e *env) inNode(f func() error) error {
	return e.nodeNS.Do(func(ns.NetNS) error { return f() })
}

func (e *env) add(pod ns.NetNS, cid string, conf []byte) (*types100.Result, error) {
	var res types.Result
	err := e.inNode(func() error {
		var err error
		res, _, err = testutils.CmdAdd(pod.Path(), cid, "eth0", conf, func() error { return cmdAdd(args(pod, cid, conf)) })
		return err
	})
	if err != nil {
		return nil, err
	}
	return types100.NewResultFromResult(res)
}

func (e *env) del(pod ns.NetNS, cid string, conf []byte) error {
	path := ""
	if pod != nil {
		path = pod.Path()
	}
	return e.inNode(func() error {
		return testutils.CmdDel(path, cid, "eth0", func() error { return cmdDel(args(pod, cid, conf)) })
	})
}

func (e *env) check(pod ns.NetNS, cid string, conf []byte) error {
	return e.inNode(func() error {
		return testutils.CmdCheck(pod.Path(), cid, "eth0", func() error { return cmdCheck(args(pod, cid, conf)) })
	})
}

// withPrevResult adds the ADD result to conf, as a runtime does for CHECK and DEL.
func withPrevResult(t *testing.T, conf []byte, version string, res *types100.Result) []byte {
	t.Helper()
	vres, err := res.GetAsVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(vres)
	if err != nil {
		t.Fatal(err)
	}
	var c, prev map[string]any
	if err := json.Unmarshal(conf, &c); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &prev); err != nil {
		t.Fatal(err)
	}
	c["prevResult"] = prev
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertClean fails unless no attachment is left: no reservations, no host veths, no pod links,
// no endpoint entries.
func (e *env) assertClean() {
	e.t.Helper()
	entries, _ := os.ReadDir(filepath.Join(e.dataDir, "edgeplane-test"))
	for _, ent := range entries {
		if _, err := netip.ParseAddr(ent.Name()); err == nil {
			e.t.Errorf("address %s still reserved", ent.Name())
		}
	}
	_ = e.inNode(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if isHostVethName(l.Attrs().Name) {
				e.t.Errorf("host veth %s left", l.Attrs().Name)
			}
		}
		return nil
	})
	if names, _ := datapath.PodLinks(e.root); len(names) != 0 {
		e.t.Errorf("pod links left: %v", names)
	}
	if n := e.endpointCount(); n != 0 {
		e.t.Errorf("%d endpoint entries left", n)
	}
	if pods := e.podNames(); len(pods) != 0 {
		e.t.Errorf("name index entries left: %v", pods)
	}
}

// podNames reads the name index's pod entries (none when there is no index).
func (e *env) podNames() map[netip.Addr]nameindex.Pod {
	e.t.Helper()
	pods, err := nameindex.ReadPods(e.runDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	return pods
}

func (e *env) endpointCount() int {
	eps, err := endpoints.Open(e.root)
	if err != nil {
		e.t.Fatal(err)
	}
	defer eps.Close()
	n := 0
	if err := eps.Iterate(func(netip.Addr, endpoints.Endpoint) bool { n++; return true }); err != nil {
		e.t.Fatal(err)
	}
	return n
}
