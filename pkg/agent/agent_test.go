package agent

import (
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/agentinfo"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/maps/nodes"
	"github.com/edgeplane/edgeplane/pkg/maps/nonmasq"
	"github.com/edgeplane/edgeplane/pkg/maps/routes"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

const inNetnsEnv = "EDGEPLANE_AGENT_TEST_IN_NETNS"

// TestAgentStartsAndRestarts runs the whole agent against a fake API server in a private network
// namespace: the test binary re-executes itself under unshare(1) so that every thread of the agent
// sees the namespace.
func TestAgentStartsAndRestarts(t *testing.T) {
	inPrivateNetns(t, agentInNetns)
}

// inPrivateNetns runs body in a copy of the test binary re-executed under unshare --net, so that
// every thread of the agent sees the private network namespace.
func inPrivateNetns(t *testing.T, body func(*testing.T)) {
	bpffstest.RequireRoot(t)
	if os.Getenv(inNetnsEnv) != "" {
		body(t)
		return
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare(1) not found")
	}
	cmd := exec.Command("unshare", "--net", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a private netns:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
}

// testNodes are this node "self" at 192.168.60.2 with selfPodCIDR (none when empty) and a peer
// "b" at 192.168.60.3 with its VTEP and 10.244.0.0/24.
func testNodes(selfPodCIDR string) (self, peer *corev1.Node) {
	self = &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "self", UID: "uid-self"},
		Spec:       corev1.NodeSpec{PodCIDR: selfPodCIDR},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.60.2"}}},
	}
	peerMAC, _ := net.ParseMAC("0a:00:00:00:00:0b")
	peer = &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "b", Annotations: k8s.VTEPAnnotations(k8s.VTEP{MAC: peerMAC, IP: netip.MustParseAddr("192.168.60.3")})},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.0.0/24"},
	}
	return self, peer
}

func agentInNetns(t *testing.T) {
	setupUnderlay(t)
	root := bpffstest.Mount(t)
	runDir := t.TempDir()
	self, peer := testNodes("") // self's pod CIDR allocated by the agent
	svc, slice := testService()
	client := fake.NewClientset(self, peer, svc, slice)
	cfg := Config{
		NodeName: "self", BPFFSRoot: root, RunDir: runDir,
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
		NodeCIDRMaskSize: 24, VXLANDevice: "edgeplane.1", EncapMode: EncapNative, Masquerade: true,
		Resync: time.Second, NonMasqueradeCIDRs: PrefixList{netip.MustParsePrefix("172.16.0.0/12")},
		ProcSys: netdev.DefaultProcSys, MetricsAddr: "127.0.0.1:9962", DomainConfig: "kube-system/edgeplane-domains",
	}

	stop := startAgent(t, cfg, client)
	nc := waitNodeConfig(t, runDir)
	if nc.PodCIDR != netip.MustParsePrefix("10.244.1.0/24") || nc.MTU != 1450 || nc.NodeIP != netip.MustParseAddr("192.168.60.2") {
		t.Fatalf("node.json: %+v", nc)
	}
	checkMetrics(t, "http://"+cfg.MetricsAddr)
	checkAgentReport(t, cfg)
	checkMaps(t, root, map[string]string{"10.244.0.0/24": "192.168.60.3", "10.244.1.0/24": "192.168.60.2"})
	checkNonMasq(t, root, "10.244.0.0/16", "172.16.0.0/12")
	wantServices := map[string]string{
		"tcp 10.96.0.10:80 internal": "- 10.244.0.7:8080", "tcp 0.0.0.0:30080 external": "nodeport 10.244.0.7:8080",
	}
	serviceSets := checkServices(t, root, wantServices)
	checkServiceRoute(t, cfg.VXLANDevice)
	checkNodeNames(t, runDir, []nameindex.Node{
		{Name: "b", NodeIP: netip.MustParseAddr("192.168.60.3"), PodCIDR: netip.MustParsePrefix("10.244.0.0/24"), Domain: "default"},
		{Name: "self", NodeIP: netip.MustParseAddr("192.168.60.2"), PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Domain: "default", ThisNode: true},
	})
	n, _ := client.CoreV1().Nodes().Get(context.Background(), "self", metav1.GetOptions{})
	vtep, err := k8s.NodeVTEP(k8stest.Node(n))
	if err != nil || vtep.IP != netip.MustParseAddr("192.168.60.2") {
		t.Fatalf("published VTEP %+v, %v (annotations %v)", vtep, err, n.Annotations)
	}
	cfgMap, err := nodecfg.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := cfgMap.Get()
	cfgMap.Close()
	if c.Flags&nodecfg.FlagReady == 0 || c.PodPrefix() != nc.PodCIDR || net.HardwareAddr(c.VtepMAC[:]).String() != vtep.MAC.String() {
		t.Fatalf("node_cfg_map: %v", c)
	}
	stop()

	// Down: the peer is deleted. Up again: the agent adopts the pins and drops the stale route.
	if err := client.CoreV1().Nodes().Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	os.Remove(cninode.Path(runDir))
	cfg.NonMasqueradeCIDRs = nil       // the flag dropped: its entry must go
	cfg.MetricsAddr = "127.0.0.1:9963" // the first agent's listener may still be closing
	stop = startAgent(t, cfg, client)
	defer stop()
	if got := waitNodeConfig(t, runDir); got.PodCIDR != nc.PodCIDR {
		t.Fatalf("restart changed the pod CIDR: %v -> %v", nc.PodCIDR, got.PodCIDR)
	}
	checkMaps(t, root, map[string]string{"10.244.1.0/24": "192.168.60.2"})
	checkNonMasq(t, root, "10.244.0.0/16")
	// The service frontends were adopted as they were: same backend sets, no rewrite.
	if got := checkServices(t, root, wantServices); !maps.Equal(got, serviceSets) {
		t.Errorf("backend sets after the restart %v, before %v", got, serviceSets)
	}
	checkNodeNames(t, runDir, []nameindex.Node{
		{Name: "self", NodeIP: netip.MustParseAddr("192.168.60.2"), PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Domain: "default", ThisNode: true},
	})
}

// checkNodeNames checks the name index's nodes.json, which the agent writes before node.json.
func checkNodeNames(t *testing.T, runDir string, want []nameindex.Node) {
	t.Helper()
	got, err := nameindex.ReadNodes(runDir)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("nodes.json = %+v, %v\nwant %+v", got, err, want)
	}
}

// checkMetrics waits for /readyz and checks that /metrics reports the attached programs, the
// maps, the synced watches and the reconciles.
// boolMetric is a tcx probe's result as a 0/1 sample.
func boolMetric(f datapath.Features, err error) string {
	if err == nil && f.TCX {
		return "1"
	}
	return "0"
}

// checkAgentReport checks <run-dir>/agent.json: the flags the agent runs with and the kernel's
// features, the same as the probes answer in this process.
func checkAgentReport(t *testing.T, cfg Config) {
	t.Helper()
	r, err := agentinfo.Read(cfg.RunDir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := datapath.KernelFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if r.Node != cfg.NodeName || r.Flags["encap-mode"] != cfg.EncapMode || r.Flags["cluster-cidr"] != cfg.ClusterCIDR.String() ||
		r.Kernel.Release != datapath.KernelRelease() || !reflect.DeepEqual(r.Kernel.Features, f.Describe()) {
		t.Errorf("agent.json: %+v", r)
	}
}

func checkMetrics(t *testing.T, base string) {
	t.Helper()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body := get("/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %s", code, body)
		}
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, want := range []string{
		`edgeplane_programs_attached{attach_point="underlay_ingress"} 1`,
		`edgeplane_programs_attached{attach_point="underlay_egress"} 1`,
		`edgeplane_programs_attached{attach_point="overlay_ingress"} 1`,
		`edgeplane_programs_attached{attach_point="overlay_egress"} 1`,
		`edgeplane_programs_attached{attach_point="underlay_xdp"} 0`, // a veth: node_ingress drops
		`edgeplane_programs_attached{attach_point="pod"} 0`,
		`edgeplane_map_entries{map="routes_map"} 2`,
		`edgeplane_map_entries{map="nodes_map"} 1`,
		`edgeplane_map_capacity{map="metrics_map"} 448`,
		`edgeplane_api_watch_synced{resource="nodes"} 1`,
		`edgeplane_api_watch_synced{resource="pods"} 1`,
		`edgeplane_api_watch_synced{resource="services"} 1`,
		`edgeplane_api_watch_synced{resource="endpointslices"} 1`,
		`edgeplane_map_entries{map="lb_svc_map"} 2`,
		`edgeplane_workqueue_depth{name="services"}`,
		`edgeplane_reconcile_total{controller="services",result="success"}`,
		`edgeplane_kernel_feature{feature="tcx"} ` + boolMetric(datapath.KernelFeatures()),
		`edgeplane_kernel_info{release="` + datapath.KernelRelease() + `"} 1`,
		`edgeplane_conntrack_gc_deleted_total{map="lb_ct_map",reason="stale_backend"} 0`,
		`edgeplane_datapath_packets_total{direction="pod_egress",reason="FORWARDED"}`,
		`edgeplane_datapath_drops_total{direction="overlay_in",reason="UNKNOWN_TUNNEL_SOURCE"}`,
		`edgeplane_reconcile_total{controller="nodes",result="success"}`,
		`edgeplane_reconcile_duration_seconds_bucket{controller="nodes",le="0.001"}`,
		`edgeplane_workqueue_depth{name="nodes"}`,
		`edgeplane_workqueue_depth{name="endpoints-gc"}`,
		`edgeplane_build_info{`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// checkNonMasq checks that nonmasq_map holds exactly want.
func checkNonMasq(t *testing.T, root string, want ...string) {
	t.Helper()
	m, err := nonmasq.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var got []string
	if err := m.Iterate(func(p netip.Prefix) bool { got = append(got, p.String()); return true }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("nonmasq_map = %v; want %v", got, want)
	}
}

func setupUnderlay(t *testing.T) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	lo, _ := netlink.LinkByName("lo")
	must(netlink.LinkSetUp(lo))
	must(netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "switch0"}))
	for _, name := range []string{"eth0", "switch0"} {
		l, err := netlink.LinkByName(name)
		must(err)
		must(netlink.LinkSetUp(l))
	}
	eth, _ := netlink.LinkByName("eth0")
	addr, _ := netlink.ParseAddr("192.168.60.2/24")
	must(netlink.AddrAdd(eth, addr))
}

func startAgent(t *testing.T, cfg Config, client *fake.Clientset) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Agent{cfg: cfg, client: k8stest.FromClientset(client)}).run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
}

func waitNodeConfig(t *testing.T, runDir string) *cninode.Config {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := cninode.Read(runDir); err == nil {
			return c
		}
	}
	t.Fatal("node.json not written within 20s")
	return nil
}

// checkMaps compares routes_map (pod CIDR -> node IP) and checks every remote route has a node entry.
func checkMaps(t *testing.T, root string, want map[string]string) {
	t.Helper()
	rm, err := routes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	nm, err := nodes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer nm.Close()
	got := map[string]string{}
	rm.Iterate(func(p netip.Prefix, r routes.Route) bool {
		got[p.String()] = r.NodeIP.String()
		if r.Flags&routes.FlagLocal == 0 {
			if _, err := nm.Lookup(r.NodeIP.Addr()); err != nil {
				t.Errorf("route %s: no node entry for %s", p, r.NodeIP)
			}
		}
		return true
	})
	if len(got) != len(want) {
		t.Fatalf("routes_map = %v; want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("routes_map = %v; want %v", got, want)
		}
	}
}
