package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/maps"
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

func TestAddCheckDel(t *testing.T) {
	for _, ver := range specVersions {
		t.Run(ver, func(t *testing.T) {
			e := newEnv(t)
			pod := newNS(t)
			cid := "container-" + ver
			conf := e.conf(ver, nil)
			res, err := e.add(pod, cid, conf)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if len(res.IPs) != 1 || len(res.Interfaces) != 2 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 {
				t.Fatalf("result %+v", res)
			}
			podIP, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
			if !e.podCIDR.Contains(podIP) {
				t.Fatalf("pod IP %s not in %s", podIP, e.podCIDR)
			}
			hostVeth := HostVethName(cid, "eth0")
			if res.Interfaces[0].Name != hostVeth || res.Interfaces[1].Sandbox != pod.Path() {
				t.Fatalf("interfaces %+v %+v", res.Interfaces[0], res.Interfaces[1])
			}
			eps, err := endpoints.Open(e.root)
			if err != nil {
				t.Fatal(err)
			}
			defer eps.Close()
			ep, err := eps.Lookup(podIP)
			if err != nil {
				t.Fatalf("endpoint entry: %v", err)
			}
			if maps.MAC(ep.HostMAC) != res.Interfaces[0].Mac || maps.MAC(ep.PodMAC) != res.Interfaces[1].Mac {
				t.Fatalf("endpoint %v vs result %+v", ep, res.Interfaces)
			}
			wantName := nameindex.Pod{IP: podIP, Namespace: "ns-" + cid, Name: "pod-" + cid, UID: "uid-" + cid,
				ContainerID: cid, Interface: "eth0", HostInterface: hostVeth}
			if got := e.podNames(); len(got) != 1 || got[podIP] != wantName {
				t.Fatalf("name index %v, want %v", got, wantName)
			}
			_ = pod.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName("eth0")
				if err != nil {
					t.Fatal(err)
				}
				if l.Attrs().MTU != 1450 {
					t.Errorf("pod MTU %d, want 1450", l.Attrs().MTU)
				}
				return nil
			})

			withPrev := withPrevResult(t, conf, ver, res)
			if err := e.check(pod, cid, withPrev); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			// CHECK notices a missing endpoint entry.
			if err := eps.Delete(podIP); err != nil {
				t.Fatal(err)
			}
			if err := e.check(pod, cid, withPrev); err == nil {
				t.Fatal("CHECK passed without the endpoint entry")
			}

			if err := e.del(pod, cid, withPrev); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if err := e.del(pod, cid, withPrev); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
			e.assertClean()
		})
	}
}

func TestAddIsIdempotent(t *testing.T) {
	e := newEnv(t)
	pod := newNS(t)
	conf := e.conf("1.1.0", nil)
	first, err := e.add(pod, "c1", conf)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.add(pod, "c1", conf)
	if err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if n := e.endpointCount(); n != 1 {
		t.Errorf("%d endpoint entries after two ADDs, want 1", n)
	}
	if pods := e.podNames(); len(pods) != 1 || pods[netip.MustParseAddr(second.IPs[0].Address.IP.String())].ContainerID != "c1" {
		t.Errorf("name index after two ADDs: %v, want the second address only", pods)
	}
	t.Logf("first %s, second %s", first.IPs[0].Address.IP, second.IPs[0].Address.IP)
	if err := e.check(pod, "c1", withPrevResult(t, conf, "1.1.0", second)); err != nil {
		t.Fatalf("CHECK after re-ADD: %v", err)
	}
	if err := e.del(pod, "c1", conf); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestDelWithNetnsGone(t *testing.T) {
	e := newEnv(t)
	pod := newNS(t)
	conf := e.conf("1.0.0", nil)
	res, err := e.add(pod, "c1", conf)
	if err != nil {
		t.Fatal(err)
	}
	removeNS(t, pod)
	if _, err := os.Stat(pod.Path()); err == nil {
		t.Fatalf("netns %s still there", pod.Path())
	}
	// The veth goes with the netns; DEL still cleans the rest. (The runtime passes the old path.)
	if err := e.del(nil, "c1", withPrevResult(t, conf, "1.0.0", res)); err != nil {
		t.Fatalf("DEL without netns: %v", err)
	}
	e.assertClean()
}

func TestAddRollsBack(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(e *env) (restore func())
		conf   map[string]any
	}{
		{
			name: "pod program not pinned",
			break_: func(e *env) func() {
				pin := filepath.Join(e.root, datapath.PodProgram)
				if err := os.Remove(pin); err != nil {
					e.t.Fatal(err)
				}
				return func() {
					if err := e.dp.Program("pod_egress").Pin(pin); err != nil {
						e.t.Fatal(err)
					}
				}
			},
		},
		{
			name: "endpoints map full",
			break_: func(e *env) func() {
				m := e.dp.Map(endpoints.MapName)
				val := make([]byte, m.ValueSize())
				for i := uint32(0); i < m.MaxEntries(); i++ {
					key := [4]byte{172, 16, byte(i >> 8), byte(i)}
					if err := m.Put(key, val); err != nil {
						e.t.Fatalf("filling endpoints_map at %d: %v", i, err)
					}
				}
				return func() {
					for i := uint32(0); i < m.MaxEntries(); i++ {
						_ = m.Delete([4]byte{172, 16, byte(i >> 8), byte(i)})
					}
				}
			},
		},
		{
			name: "ipam plugin missing",
			conf: map[string]any{"ipam": map[string]any{"type": "no-such-ipam"}},
		},
		{
			name: "ipam range outside anything",
			conf: map[string]any{"ipam": map[string]any{"type": "host-local", "subnet": "not-a-subnet"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pod := newNS(t)
			if tc.break_ != nil {
				restore := tc.break_(e)
				defer restore()
			}
			conf := e.conf("1.1.0", nil)
			if tc.conf != nil {
				ipamConf := tc.conf["ipam"].(map[string]any)
				ipamConf["dataDir"] = e.dataDir
				conf = e.conf("1.1.0", tc.conf)
			}
			if _, err := e.add(pod, "c1", conf); err == nil {
				t.Fatal("ADD succeeded")
			} else {
				t.Logf("ADD failed as expected: %v", err)
			}
			if tc.break_ != nil && tc.name == "endpoints map full" {
				if n := e.endpointCount(); n != int(e.dp.Map(endpoints.MapName).MaxEntries()) {
					t.Errorf("endpoint count changed to %d", n)
				}
			}
			_ = pod.Do(func(ns.NetNS) error {
				if _, err := netlink.LinkByName("eth0"); err == nil {
					t.Error("pod eth0 left after a failed ADD")
				}
				return nil
			})
			entries, _ := os.ReadDir(filepath.Join(e.dataDir, "edgeplane-test"))
			for _, ent := range entries {
				if _, err := netip.ParseAddr(ent.Name()); err == nil {
					t.Errorf("address %s still reserved", ent.Name())
				}
			}
			if names, _ := datapath.PodLinks(e.root); len(names) != 0 {
				t.Errorf("pod links left: %v", names)
			}
			if pods := e.podNames(); len(pods) != 0 {
				t.Errorf("name index entries left after a failed ADD: %v", pods)
			}
		})
	}
}

// TestNameIndexIsAdvisory: a run dir where the index cannot be written (names is a file) fails
// neither ADD nor DEL; a stale entry of another attachment under the pod's address is replaced on
// ADD, and a late DEL of that attachment removes its other entries but not the new pod's.
func TestNameIndexIsAdvisory(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	blocker := filepath.Join(e.runDir, nameindex.Dir)
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := newNS(t)
	if _, err := e.add(pod, "c1", conf); err != nil {
		t.Fatalf("ADD with an unwritable index: %v", err)
	}
	if err := e.del(pod, "c1", conf); err != nil {
		t.Fatalf("DEL with an unwritable index: %v", err)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}

	// Stale entries of a gone attachment under every address host-local may hand out next.
	for ip, i := e.podCIDR.Addr(), 0; i < 16; ip, i = ip.Next(), i+1 {
		if err := nameindex.WritePod(e.runDir, nameindex.Pod{IP: ip, Name: "gone", ContainerID: "old", Interface: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.add(pod, "c2", conf)
	if err != nil {
		t.Fatal(err)
	}
	podIP, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if got := e.podNames(); got[podIP].Name != "pod-c2" || got[podIP.Next()].Name != "gone" {
		t.Fatalf("name index %v, want %s named pod-c2 and the rest stale", got, podIP)
	}
	if err := e.del(nil, "old", e.conf("1.1.0", nil)); err != nil { // a late DEL of the stale attachment
		t.Fatal(err)
	}
	if got := e.podNames(); got[podIP].Name != "pod-c2" {
		t.Errorf("name index %v, want %s named pod-c2", got, podIP)
	}
	if err := e.del(pod, "c2", conf); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	status := func() error {
		return e.inNode(func() error { return testutils.CmdStatus(func() error { return cmdStatus(args(nil, "", conf)) }) })
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS with node.json and pins: %v", err)
	}
	if err := cninode.Remove(e.runDir); err != nil {
		t.Fatal(err)
	}
	var terr *types.Error
	if err := status(); !errors.As(err, &terr) || terr.Code != 50 {
		t.Fatalf("STATUS without node.json: %v", err)
	}
	if err := os.WriteFile(cninode.Path(e.runDir), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := status(); !errors.As(err, &terr) || terr.Code != 50 {
		t.Fatalf("STATUS with a broken node.json: %v", err)
	}
	e.writeNode()
	if err := datapath.Cleanup(e.root); err != nil {
		t.Fatal(err)
	}
	if err := status(); !errors.As(err, &terr) || terr.Code != 50 || !strings.Contains(terr.Msg, "pinned") {
		t.Fatalf("STATUS without pins: %v", err)
	}
}

func TestGC(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	pods := map[string]ns.NetNS{}
	for _, cid := range []string{"keep", "stale-1", "stale-2"} {
		pods[cid] = newNS(t)
		if _, err := e.add(pods[cid], cid, conf); err != nil {
			t.Fatal(err)
		}
	}
	gcConf := e.conf("1.1.0", map[string]any{
		"cni.dev/valid-attachments": []map[string]string{{"containerID": "keep", "ifname": "eth0"}},
	})
	if err := e.inNode(func() error { return cmdGC(args(nil, "", gcConf)) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if n := e.endpointCount(); n != 1 {
		t.Errorf("%d endpoint entries after GC, want 1", n)
	}
	names, _ := datapath.PodLinks(e.root)
	if len(names) != 1 || names[0] != HostVethName("keep", "eth0") {
		t.Errorf("pod links after GC: %v", names)
	}
	entries, _ := os.ReadDir(filepath.Join(e.dataDir, "edgeplane-test"))
	reserved := 0
	for _, ent := range entries {
		if _, err := netip.ParseAddr(ent.Name()); err == nil {
			reserved++
		}
	}
	if reserved != 1 {
		t.Errorf("%d addresses reserved after GC, want 1", reserved)
	}
	if pods := e.podNames(); len(pods) != 1 {
		t.Errorf("name index after GC: %v, want the kept pod only", pods)
	}
	if err := e.del(pods["keep"], "keep", conf); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestBadConfig(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name  string
		stdin string
		code  uint
	}{
		{"not json", `{"cniVersion":`, types.ErrDecodingFailure},
		{"no version", `{"name":"n","type":"edgeplane"}`, types.ErrInvalidNetworkConfig},
		{"bad version", `{"cniVersion":"x.y","name":"n","type":"edgeplane"}`, types.ErrInvalidNetworkConfig},
		{"no name", `{"cniVersion":"1.1.0","type":"edgeplane"}`, types.ErrInvalidNetworkConfig},
		{"wrong type", `{"cniVersion":"1.1.0","name":"n","type":"bridge"}`, types.ErrInvalidNetworkConfig},
		{"ipam not an object", `{"cniVersion":"1.1.0","name":"n","type":"edgeplane","ipam":"host-local"}`, types.ErrInvalidNetworkConfig},
		{"ipam type empty", `{"cniVersion":"1.1.0","name":"n","type":"edgeplane","ipam":{"type":""}}`, types.ErrInvalidNetworkConfig},
		{"mtu out of range", `{"cniVersion":"1.1.0","name":"n","type":"edgeplane","mtu":100}`, types.ErrInvalidNetworkConfig},
		{"no node.json", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","type":"edgeplane","runDir":%q}`, t.TempDir()), types.ErrTryAgainLater},
		{"chained after another plugin", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","type":"edgeplane","runDir":%q,"prevResult":{"cniVersion":"1.1.0"}}`, e.runDir), types.ErrInvalidNetworkConfig},
	}
	pod := newNS(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.add(pod, "c1", []byte(tc.stdin))
			var terr *types.Error
			if !errors.As(err, &terr) || terr.Code != tc.code {
				t.Fatalf("got %v, want code %d", err, tc.code)
			}
			t.Logf("code %d: %s (%s)", terr.Code, terr.Msg, terr.Details)
		})
	}
	e.assertClean()
}

func TestManyCyclesLeaveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	e := newEnv(t)
	pod := newNS(t)
	conf := e.conf("1.1.0", nil)
	for i := range 200 {
		cid := fmt.Sprintf("cycle-%d", i)
		res, err := e.add(pod, cid, conf)
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		if err := e.del(pod, cid, withPrevResult(t, conf, "1.1.0", res)); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	e.assertClean()
	// The maps the agent pinned are still the ones the datapath uses.
	if _, err := ebpf.LoadPinnedMap(maps.PinPath(e.root, endpoints.MapName), nil); err != nil {
		t.Fatal(err)
	}
}
