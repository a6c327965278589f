package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/agent/podcidr"
	"github.com/edgeplane/edgeplane/pkg/agentinfo"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
	"github.com/edgeplane/edgeplane/pkg/cniconf"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/install"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
	"github.com/edgeplane/edgeplane/pkg/snapshot"
)

// TestUninstall runs the agent in a private network namespace with a private bpffs, attaches a
// pod the way the CNI plugin does, then uninstalls: no pin, no device, no attachment, no node.json,
// no name index, no VTEP annotation and none of edgeplane's CNI files are left; the pod CIDR claim
// stays; a second uninstall succeeds, and so does one whose API server fails.
func TestUninstall(t *testing.T) {
	inPrivateNetns(t, uninstallInNetns)
}

func uninstallInNetns(t *testing.T) {
	ctx := t.Context()
	setupUnderlay(t)
	mount := bpffstest.Mount(t)
	root := filepath.Join(mount, "edgeplane") // as /sys/fs/bpf/edgeplane: the root itself goes
	runDir, confDir, binDir := t.TempDir(), t.TempDir(), t.TempDir()
	plugin := filepath.Join(t.TempDir(), "edgeplane-cni")
	for path, content := range map[string]string{
		plugin: "plugin",
		filepath.Join(confDir, "20-other.conflist"):  `{"name":"other"}`,
		filepath.Join(binDir, "host-local"):          "reference plugin",
		filepath.Join(binDir, "portmap"):             "reference plugin",
		filepath.Join(binDir, "bandwidth"):           "reference plugin",
		filepath.Join(binDir, "loopback"):            "reference plugin",
		filepath.Join(runDir, "something-else.json"): "{}",
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// What edgeplane-install puts is what uninstall must remove.
	if _, err := install.Run(install.Config{Plugin: plugin, BinDir: binDir, ConfDir: confDir,
		ConflistName: install.DefaultConflistName, RunDir: runDir}); err != nil {
		t.Fatalf("installing the CNI files: %v", err)
	}
	self := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "self", UID: "uid-self", Annotations: map[string]string{"keep": "me"}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.60.2"}}},
	}
	client := fake.NewClientset(self)
	cfg := Config{
		NodeName: "self", BPFFSRoot: root, RunDir: runDir, SnapshotDir: t.TempDir(),
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
		NodeCIDRMaskSize: 24, VXLANDevice: "edgeplane.1", EncapMode: EncapNative, Masquerade: true,
		Resync: time.Second, ProcSys: netdev.DefaultProcSys,
		CNIConfDir: confDir, CNIBinDir: binDir,
	}
	stop := startAgent(t, cfg, client)
	nc := waitNodeConfig(t, runDir)
	podVeth := addPodVeth(t, root)
	if err := nameindex.WritePod(runDir, nameindex.Pod{IP: netip.MustParseAddr("10.244.1.2"), Name: "p"}); err != nil { // as CNI ADD does
		t.Fatal(err)
	}
	waitSnapshot(t, cfg.SnapshotDir, func(*snapshot.State) bool { return true }, 20*time.Second)
	stop()
	if err := bgpstatus.Write(runDir, &bgpstatus.Report{Node: "n1"}); err != nil { // as a route-mode agent does
		t.Fatal(err)
	}
	if _, err := agentinfo.Read(runDir); err != nil {
		t.Fatalf("precondition: the agent's report: %v", err)
	}
	if _, err := nameindex.ReadNodes(runDir); err != nil {
		t.Fatalf("precondition: the agent's node names: %v", err)
	}
	if n := getNode(t, client); len(presentAnnotations(k8stest.Node(n))) != len(vtepAnnotations) {
		t.Fatalf("precondition: annotations %v", n.Annotations)
	}
	// As a route-mode speaker leaves it after a plain --uninstall (no withdrawal by Run).
	if _, err := client.CoreV1().Nodes().Patch(ctx, "self", types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+k8s.RoutesAdvertisedAnnotation+`":"site-a"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := uninstall(ctx, cfg, k8stest.FromClientset(client), uninstallAPITimeout); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	checkUninstalled(t, mount, cfg, podVeth)
	n := getNode(t, client)
	if p := presentAnnotations(k8stest.Node(n)); len(p) > 0 {
		t.Errorf("annotations %v left on the Node", p)
	}
	if v, ok := n.Annotations[k8s.RoutesAdvertisedAnnotation]; ok {
		t.Errorf("annotation %s=%q left on the Node", k8s.RoutesAdvertisedAnnotation, v)
	}
	if n.Annotations["keep"] != "me" || n.Annotations[k8s.PodCIDRAnnotation] != nc.PodCIDR.String() {
		t.Errorf("uninstall touched annotations it does not own or the pod CIDR claim: %v", n.Annotations)
	}
	claims, err := client.CoordinationV1().Leases(podcidr.DefaultNamespace).List(ctx, metav1.ListOptions{})
	if err != nil || len(claims.Items) != 1 {
		t.Errorf("pod CIDR claims after uninstall: %v, %v; want the one claim kept", claims, err)
	}
	for path, want := range map[string]bool{
		filepath.Join(confDir, cniconf.ConflistName): false,
		filepath.Join(confDir, "20-other.conflist"):  true,
		filepath.Join(binDir, cniconf.PluginType):    false,
		filepath.Join(binDir, "host-local"):          true,
		filepath.Join(binDir, "loopback"):            true,
		filepath.Join(runDir, "something-else.json"): true,
	} {
		if _, err := os.Stat(path); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", path, err == nil, want)
		}
	}

	// Again: nothing left to remove is not an error, and neither is an API server that fails.
	if err := uninstall(ctx, cfg, k8stest.FromClientset(client), uninstallAPITimeout); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
	broken := fake.NewClientset(self)
	broken.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if err := uninstall(ctx, cfg, k8stest.FromClientset(broken), uninstallAPITimeout); err != nil {
		t.Fatalf("uninstall with an unreachable API server: %v", err)
	}
	checkUninstalled(t, mount, cfg, podVeth)
}

// addPodVeth makes a veth pair and attaches the pinned pod program to one end, as CNI ADD does.
func addPodVeth(t *testing.T, root string) string {
	t.Helper()
	const host = "vethpod0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: "vethpod0p"}); err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName(host)
	if err != nil {
		t.Fatal(err)
	}
	if err := datapath.AttachPod(root, host, l.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	if names, _ := datapath.PodLinks(root); !slices.Equal(names, []string{host}) {
		t.Fatalf("precondition: pod links %v", names)
	}
	return host
}

func checkUninstalled(t *testing.T, mount string, cfg Config, podVeth string) {
	t.Helper()
	entries, err := os.ReadDir(mount)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		// The kernel's bpf_preload puts maps.debug and progs.debug in every bpffs instance.
		if e.Name() != "maps.debug" && e.Name() != "progs.debug" {
			t.Errorf("bpffs after uninstall holds %s; want nothing of edgeplane's", e.Name())
		}
	}
	if _, err := netlink.LinkByName(cfg.VXLANDevice); err == nil {
		t.Errorf("%s still exists", cfg.VXLANDevice)
	}
	if _, err := os.Stat(cninode.Path(cfg.RunDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node.json: %v; want it gone", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, nameindex.Dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("name index: %v; want it gone", err)
	}
	if _, err := os.Stat(bgpstatus.Path(cfg.RunDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bgp.json: %v; want it gone", err)
	}
	if _, err := os.Stat(agentinfo.Path(cfg.RunDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("agent.json: %v; want it gone", err)
	}
	if _, err := os.Stat(snapshot.Path(cfg.SnapshotDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot: %v; want it gone", err)
	}
	for _, ifname := range []string{"eth0", podVeth} {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		for _, attach := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: attach})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Programs) > 0 {
				t.Errorf("%s still has %d %v programs", ifname, len(res.Programs), attach)
			}
		}
	}
}

func getNode(t *testing.T, client *fake.Clientset) *corev1.Node {
	t.Helper()
	n, err := client.CoreV1().Nodes().Get(context.Background(), "self", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRemoveVTEPAnnotations: only annotations edgeplane published go; Flannel's and the operator's
// public-ip-overwrite stay; a missing Node is not an error.
func TestRemoveVTEPAnnotations(t *testing.T) {
	ours := k8s.VTEPAnnotations(k8s.VTEP{MAC: netdev.VTEPMAC("n1"), IP: netip.MustParseAddr("192.168.1.1")})
	flannels := k8s.VTEPAnnotations(k8s.VTEP{MAC: []byte{0x0a, 0, 0, 0, 0, 1}, IP: netip.MustParseAddr("192.168.1.1")})
	with := func(a map[string]string, extra ...string) map[string]string {
		out := map[string]string{}
		for k, v := range a {
			out[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			out[extra[i]] = extra[i+1]
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		deviceMAC   net.HardwareAddr
		want        map[string]string
	}{
		{"edgeplane's", with(ours, k8s.PublicIPOverwriteAnnotation, "10.0.0.1", k8s.PodCIDRAnnotation, "10.244.1.0/24"),
			nil, map[string]string{k8s.PublicIPOverwriteAnnotation: "10.0.0.1", k8s.PodCIDRAnnotation: "10.244.1.0/24"}},
		{"flannel's", flannels, nil, flannels},
		// A node moved from Flannel keeps flannel.1's MAC on edgeplane's device.
		{"flannel's MAC kept by edgeplane's device", flannels, net.HardwareAddr{0x0a, 0, 0, 0, 0, 1}, map[string]string{}},
		{"partial, no backend-data", map[string]string{k8s.BackendTypeAnnotation: "vxlan", "x": "y"}, nil, map[string]string{"x": "y"}},
		{"none", map[string]string{"x": "y"}, nil, map[string]string{"x": "y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: tc.annotations}})
			if err := removeVTEPAnnotations(t.Context(), k8stest.FromClientset(client), "n1", tc.deviceMAC); err != nil {
				t.Fatal(err)
			}
			n, _ := client.CoreV1().Nodes().Get(t.Context(), "n1", metav1.GetOptions{})
			if len(n.Annotations) != len(tc.want) {
				t.Fatalf("annotations %v; want %v", n.Annotations, tc.want)
			}
			for k, v := range tc.want {
				if n.Annotations[k] != v {
					t.Fatalf("annotations %v; want %v", n.Annotations, tc.want)
				}
			}
		})
	}
	if err := removeVTEPAnnotations(t.Context(), k8stest.FromClientset(fake.NewClientset()), "gone", nil); err != nil {
		t.Errorf("missing Node: %v", err)
	}
}
