package agent

import (
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	bpfmaps "github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
	"github.com/edgeplane/edgeplane/pkg/service"
	"github.com/edgeplane/edgeplane/pkg/snapshot"
)

// memTable is a controller table in memory.
type memTable[K comparable, V any] struct{ m map[K]V }

func (t *memTable[K, V]) Upsert(k K, v V) error    { t.m[k] = v; return nil }
func (t *memTable[K, V]) Delete(k K) error         { delete(t.m, k); return nil }
func (t *memTable[K, V]) List() (map[K]V, error)   { return maps.Clone(t.m), nil }
func newMem[K comparable, V any]() *memTable[K, V] { return &memTable[K, V]{m: map[K]V{}} }

type memTables struct {
	routes    *memTable[netip.Prefix, controller.Route]
	nodes     *memTable[netip.Addr, controller.Node]
	endpoints *memTable[netip.Addr, controller.Endpoint]
	domains   *memTable[uint32, controller.Domain]
	frontends *memTable[service.FrontendKey, controller.ServiceEntry]
	backends  *memTable[controller.BackendSlot, service.Backend]
}

func newMemTables() *memTables {
	return &memTables{newMem[netip.Prefix, controller.Route](), newMem[netip.Addr, controller.Node](),
		newMem[netip.Addr, controller.Endpoint](), newMem[uint32, controller.Domain](),
		newMem[service.FrontendKey, controller.ServiceEntry](), newMem[controller.BackendSlot, service.Backend]()}
}

func (t *memTables) Routes() controller.RouteTable       { return t.routes }
func (t *memTables) Nodes() controller.NodeTable         { return t.nodes }
func (t *memTables) Endpoints() controller.EndpointTable { return endpointsOnly{t.endpoints} }
func (t *memTables) Domains() controller.DomainTable     { return t.domains }
func (t *memTables) Frontends() controller.FrontendTable { return t.frontends }
func (t *memTables) Backends() controller.BackendTable   { return t.backends }
func (t *memTables) Affinity() controller.AffinityTable  { return nil }
func (t *memTables) Conntrack() *lb.CTMap                { return nil }
func (t *memTables) AffinityMap() *lb.AffinityMap        { return nil }

type endpointsOnly struct {
	*memTable[netip.Addr, controller.Endpoint]
}

var (
	web     = service.FrontendKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: service.Proto(6)}
	oldPod  = netip.MustParseAddr("10.244.1.5")
	newPod  = netip.MustParseAddr("10.244.1.9")
	peerPod = netip.MustParseAddr("10.244.0.7")
)

// A snapshot taken from the tables writes the same entries back into empty ones, with the
// backend of a local pod the name index knows under a new address moved to it.
func TestSnapshotRestoresTablesAndRepairsMovedPods(t *testing.T) {
	before := newMemTables()
	mac, _ := net.ParseMAC("0a:00:00:00:00:0b")
	before.routes.Upsert(netip.MustParsePrefix("10.244.0.0/24"), controller.Route{NodeIP: netip.MustParseAddr("192.168.60.3"), Domain: 3})
	before.routes.Upsert(netip.MustParsePrefix("10.244.1.0/24"), controller.Route{NodeIP: netip.MustParseAddr("192.168.60.2"), Domain: 3, Local: true})
	before.nodes.Upsert(netip.MustParseAddr("192.168.60.3"), controller.Node{VTEPMAC: mac, Domain: 3})
	before.domains.Upsert(3, controller.Domain{Name: "site-a", Reachable: true, Local: true})
	before.frontends.Upsert(web, controller.ServiceEntry{ID: 4, Count: 2})
	before.backends.Upsert(controller.BackendSlot{ID: 4, Slot: 0}, service.Backend{IP: peerPod, Port: 8080})
	before.backends.Upsert(controller.BackendSlot{ID: 4, Slot: 1}, service.Backend{IP: oldPod, Port: 8080})

	a := &Agent{cfg: Config{NodeName: "self", SnapshotDir: t.TempDir()}, podCIDR: netip.MustParsePrefix("10.244.1.0/24"),
		underlay: netdev.Underlay{IP: netip.MustParseAddr("192.168.60.2")}, device: netdev.Device{MAC: mac}}
	tracked := a.trackForSnapshot(before)
	pod := &api.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-0"},
		Status: api.PodStatus{PodIPs: []api.PodIP{{IP: oldPod.String()}}}}
	other := &api.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "idle"},
		Status: api.PodStatus{PodIPs: []api.PodIP{{IP: "10.244.1.6"}}}}
	s, err := a.collectSnapshot(fakeIndexer{pod, other})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.PodBackends) != 1 || s.PodBackends[0] != (snapshot.PodBackend{IP: oldPod, Namespace: "default", Name: "web-0"}) {
		t.Fatalf("pod backends %+v, want web-0 only", s.PodBackends)
	}
	if err := snapshot.Write(a.cfg.SnapshotDir, s, snapshot.DefaultMaxBytes); err != nil {
		t.Fatal(err)
	}
	s, err = snapshot.Read(a.cfg.SnapshotDir, snapshot.DefaultMaxBytes)
	if err != nil {
		t.Fatal(err)
	}

	after := newMemTables()
	pods := map[netip.Addr]nameindex.Pod{newPod: {IP: newPod, Namespace: "default", Name: "web-0"}}
	if err := restoreMaps(after, s, pods); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(after.routes.m, before.routes.m) || !maps.Equal(after.domains.m, before.domains.m) ||
		!maps.Equal(after.frontends.m, before.frontends.m) || len(after.nodes.m) != 1 ||
		after.nodes.m[netip.MustParseAddr("192.168.60.3")].VTEPMAC.String() != mac.String() {
		t.Fatalf("restored %+v\nwant %+v", after, before)
	}
	want := map[controller.BackendSlot]service.Backend{{ID: 4, Slot: 0}: {IP: peerPod, Port: 8080}, {ID: 4, Slot: 1}: {IP: newPod, Port: 8080}}
	if !maps.Equal(after.backends.m, want) {
		t.Fatalf("backends %v, want %v", after.backends.m, want)
	}

	// Writes through the tracked tables mark the snapshot out of date.
	a.snapshots.dirty.Store(false)
	tracked.Backends().(controller.BackendSetWriter).UpsertSet(5, []service.Backend{{IP: peerPod, Port: 53}})
	if !a.snapshots.dirty.Load() || before.backends.m[controller.BackendSlot{ID: 5}] != (service.Backend{IP: peerPod, Port: 53}) {
		t.Fatal("UpsertSet through the tracked table did not write or did not mark the snapshot")
	}
	a.snapshots.dirty.Store(false)
	tracked.Routes().Delete(netip.MustParsePrefix("10.244.0.0/24"))
	if !a.snapshots.dirty.Load() {
		t.Fatal("a route deleted did not mark the snapshot")
	}
}

// fakeIndexer is the Pod informer's indexer as collectSnapshot reads it: List only.
type fakeIndexer []any

func (f fakeIndexer) List() []any { return f }

// rebootClient is the API server of the reboot tests: this node "self" (pod CIDR 10.244.1.0/24), a
// peer "b", and testService with a third backend, pod web-0 of this node at oldPod. It returns the
// EndpointSlice too, for the tests to change.
func rebootClient() (*fake.Clientset, *discoveryv1.EndpointSlice) {
	self, peer := testNodes("10.244.1.0/24")
	svc, slice := testService()
	slice.Endpoints = append(slice.Endpoints, discoveryEndpoint(oldPod.String(), "self"))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-0"}, Spec: corev1.PodSpec{NodeName: "self"},
		Status: corev1.PodStatus{PodIP: oldPod.String(), PodIPs: []corev1.PodIP{{IP: oldPod.String()}}}}
	return fake.NewClientset(self, peer, svc, slice, pod), slice
}

// rebootConfig is the reboot tests' agent: native encapsulation, a snapshot in snapDir.
func rebootConfig(root, runDir, snapDir, metricsAddr string) Config {
	return Config{
		NodeName: "self", BPFFSRoot: root, RunDir: runDir, SnapshotDir: snapDir,
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
		NodeCIDRMaskSize: 24, VXLANDevice: "edgeplane.1", EncapMode: EncapNative, Masquerade: true,
		Resync: time.Second, ProcSys: netdev.DefaultProcSys, MetricsAddr: metricsAddr,
	}
}

// reboot leaves what a reboot leaves of cfg's node: an empty bpffs, no VXLAN device and no run
// directory (a tmpfs); the snapshot stays.
func reboot(t *testing.T, cfg Config) {
	t.Helper()
	if err := unix.Unmount(cfg.BPFFSRoot, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", cfg.BPFFSRoot, "bpf", 0, "mode=0700"); err != nil {
		t.Fatal(err)
	}
	if l, err := netlink.LinkByName(cfg.VXLANDevice); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(cfg.RunDir); err != nil {
		t.Fatal(err)
	}
}

// recreateWeb0 does what the CNI plugin does when kubelet re-creates web-0 after the reboot: its
// new address, newPod, in endpoints_map (pinned under root) and in the name index.
func recreateWeb0(t *testing.T, root, runDir string) {
	t.Helper()
	eps, err := endpoints.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer eps.Close()
	if err := eps.Upsert(newPod, endpoints.Endpoint{Ifindex: 1}); err != nil {
		t.Fatal(err)
	}
	if err := nameindex.WritePod(runDir, nameindex.Pod{IP: newPod, Namespace: "default", Name: "web-0", ContainerID: "c2", Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
}

// The rebooted node, cut off: pins, devices and the run directory gone, the API server refusing
// everything. The agent programs the datapath from the snapshot, the CNI's node config is back,
// a pod re-created with a new IP takes its place in the Service's backends; once the API server
// answers, its state wins.
func TestAgentRebootedWhileCutOff(t *testing.T) {
	inPrivateNetns(t, agentRebootedWhileCutOff)
}

func agentRebootedWhileCutOff(t *testing.T) {
	setupUnderlay(t)
	root := bpffstest.Mount(t)
	runDir, snapDir := t.TempDir(), t.TempDir()
	client, slice := rebootClient()
	var cut atomic.Bool
	unreachable := errors.New("dial tcp 172.31.255.1:6443: connect: no route to host")
	client.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return cut.Load(), nil, unreachable
	})
	client.PrependWatchReactor("*", func(k8stesting.Action) (bool, watch.Interface, error) {
		return cut.Load(), nil, unreachable
	})
	cfg := rebootConfig(root, runDir, snapDir, "127.0.0.1:9962")
	both := map[string]string{
		"tcp 10.96.0.10:80 internal": "- 10.244.0.7:8080,10.244.1.5:8080",
		"tcp 0.0.0.0:30080 external": "nodeport 10.244.0.7:8080,10.244.1.5:8080",
	}
	stop := startAgent(t, cfg, client)
	waitNodeConfig(t, runDir)
	checkServices(t, root, both)
	waitSnapshot(t, snapDir, func(s *snapshot.State) bool { return len(s.Backends) == 4 && len(s.PodBackends) == 1 }, 20*time.Second)
	stop()

	// The reboot, cut off: the API server refuses everything, bpffs, the VXLAN device and the
	// run directory (a tmpfs) are empty.
	cut.Store(true)
	reboot(t, cfg)
	cfg.MetricsAddr = "127.0.0.1:9963" // the first agent's listener may still be closing
	start := time.Now()
	stop = startAgent(t, cfg, client)
	defer stop()
	if nc := waitNodeConfig(t, runDir); nc.PodCIDR != netip.MustParsePrefix("10.244.1.0/24") || nc.NodeIP != netip.MustParseAddr("192.168.60.2") {
		t.Fatalf("node.json from the snapshot: %+v", nc)
	}
	t.Logf("datapath programmed from the snapshot %s after the start", time.Since(start).Round(time.Millisecond))
	checkMaps(t, root, map[string]string{"10.244.0.0/24": "192.168.60.3", "10.244.1.0/24": "192.168.60.2"})
	checkServices(t, root, both)

	// kubelet re-creates web-0 through the CNI plugin: a new address in endpoints_map and the
	// name index. Its backends follow.
	recreateWeb0(t, root, runDir)
	repaired := map[string]string{
		"tcp 10.96.0.10:80 internal": "- 10.244.0.7:8080,10.244.1.9:8080",
		"tcp 0.0.0.0:30080 external": "nodeport 10.244.0.7:8080,10.244.1.9:8080",
	}
	checkServices(t, root, repaired)
	checkReadyz(t, "http://"+cfg.MetricsAddr, http.StatusServiceUnavailable, "Service backends of 1 re-created pod(s) repaired", 5*time.Second)

	// The link returns: the API server's state wins (here: web-0 gone from the Service, as the
	// EndpointSlice controller says).
	slice.Endpoints = slice.Endpoints[:1]
	if err := client.Tracker().Update(discoveryGVR, slice, slice.Namespace); err != nil {
		t.Fatal(err)
	}
	cut.Store(false)
	// The fake client has no reachability probe: the informers come back at their list
	// backoff's pace (up to 30 s), so the wait is longer than the agent's.
	waitSnapshot(t, snapDir, func(s *snapshot.State) bool { return len(s.Backends) == 2 }, time.Minute)
	checkServices(t, root, map[string]string{
		"tcp 10.96.0.10:80 internal": "- 10.244.0.7:8080",
		"tcp 0.0.0.0:30080 external": "nodeport 10.244.0.7:8080",
	})
	checkReadyz(t, "http://"+cfg.MetricsAddr, http.StatusOK, "the API server's state has replaced it", time.Minute)
}

// checkReadyz waits up to within for /readyz to answer status with line in its body. The agent's
// informers come back after a cut at their own list backoff's pace (the fake client has no
// reachability probe), so the Pods' informer may sync after the Services' changes are in.
func checkReadyz(t *testing.T, base string, status int, line string, within time.Duration) {
	t.Helper()
	var code int
	var body []byte
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if code, body, err = getReadyz(base); err == nil && code == status && strings.Contains(string(body), line) {
			return
		}
	}
	t.Fatalf("/readyz within %s: %d %q %v; want %d with %q", within, code, body, err, status, line)
}

// getReadyz GETs base's /readyz.
func getReadyz(base string) (int, []byte, error) {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func waitSnapshot(t *testing.T, dir string, ok func(*snapshot.State) bool, within time.Duration) {
	t.Helper()
	var s *snapshot.State
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if s, err = snapshot.Read(dir, snapshot.DefaultMaxBytes); err == nil && ok(s) {
			return
		}
	}
	t.Fatalf("snapshot not as expected within %s: %v %+v", within, err, s)
}

var discoveryGVR = discoveryv1.SchemeGroupVersion.WithResource("endpointslices")

func discoveryEndpoint(ip, node string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &node}
}

// snapshotToRestore takes the snapshot only with no pins, a whole snapshot of this node, and
// informers that do not sync; every other case is the usual start.
func TestSnapshotToRestore(t *testing.T) {
	good := &snapshot.State{Node: snapshot.Node{Name: "self", NodeIP: netip.MustParseAddr("192.168.60.2"),
		PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")}}
	other := *good
	other.Node.Name = "other"
	for _, tc := range []struct {
		name        string
		write       func(dir string) error
		pinned      bool
		apiServer   bool
		wantRestore bool
	}{
		{name: "no snapshot", write: func(string) error { return nil }},
		{name: "corrupt", write: func(dir string) error { return os.WriteFile(snapshot.Path(dir), []byte(`{"version":1,"node":`), 0o644) }},
		{name: "another version", write: func(dir string) error { return os.WriteFile(snapshot.Path(dir), []byte(`{"version":99}`), 0o644) }},
		{name: "another node", write: func(dir string) error { return snapshot.Write(dir, &other, snapshot.DefaultMaxBytes) }},
		{name: "pins present", pinned: true, write: func(dir string) error { return snapshot.Write(dir, good, snapshot.DefaultMaxBytes) }},
		{name: "API server answers", apiServer: true, write: func(dir string) error { return snapshot.Write(dir, good, snapshot.DefaultMaxBytes) }},
		{name: "rebooted, cut off", wantRestore: true, write: func(dir string) error { return snapshot.Write(dir, good, snapshot.DefaultMaxBytes) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, dir := t.TempDir(), t.TempDir()
			if tc.pinned {
				pin := bpfmaps.PinPath(root, nodecfg.MapName)
				if err := os.MkdirAll(filepath.Dir(pin), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(pin, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := tc.write(dir); err != nil {
				t.Fatal(err)
			}
			client := fake.NewClientset()
			if !tc.apiServer {
				client.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, errors.New("unreachable") })
			}
			inf := k8s.NewInformers(k8stest.FromClientset(client), "self")
			defer inf.Shutdown()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel() // before Shutdown, which waits for the informers
			inf.Nodes()
			inf.Services()
			inf.EndpointSlices()
			inf.Start(ctx)
			a := &Agent{cfg: Config{NodeName: "self", BPFFSRoot: root, SnapshotDir: dir, ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")}}
			got := a.snapshotToRestore(t.Context(), inf, a.pinsPresent())
			if (got != nil) != tc.wantRestore {
				t.Fatalf("restore: %v, want %v", got != nil, tc.wantRestore)
			}
			if got != nil && got.Node != good.Node {
				t.Fatalf("restored node %+v, want %+v", got.Node, good.Node)
			}
		})
	}
}

// The rebooted node behind a cache (OpenYurt's YurtHub while the cloud is unreachable): the
// "API server" answers, but with the objects as they were before the reboot, so the informers
// sync and the EndpointSlice names the pod's old address. A pod of this node re-created with a new
// address (the name index) takes its place in the Service's backends all the same; when the
// EndpointSlice changes (here: the pod leaves the Service), the API server's state wins.
func TestAgentRebootedBehindAStaleCache(t *testing.T) {
	inPrivateNetns(t, agentRebootedBehindAStaleCache)
}

func agentRebootedBehindAStaleCache(t *testing.T) {
	setupUnderlay(t)
	root := bpffstest.Mount(t)
	runDir, snapDir := t.TempDir(), t.TempDir()
	client, slice := rebootClient()
	cfg := rebootConfig(root, runDir, snapDir, "127.0.0.1:9964")
	stop := startAgent(t, cfg, client)
	waitNodeConfig(t, runDir)
	checkServices(t, root, map[string]string{
		"tcp 10.96.0.10:80 internal": "- 10.244.0.7:8080,10.244.1.5:8080",
		"tcp 0.0.0.0:30080 external": "nodeport 10.244.0.7:8080,10.244.1.5:8080",
	})
	waitSnapshot(t, snapDir, func(s *snapshot.State) bool { return len(s.PodBackends) == 1 }, 20*time.Second)
	stop()

	// The reboot: bpffs, the VXLAN device and the run directory are empty; the objects stay as
	// they were.
	reboot(t, cfg)
	cfg.MetricsAddr = "127.0.0.1:9965"
	stop = startAgent(t, cfg, client)
	defer stop()
	waitNodeConfig(t, runDir)
	recreateWeb0(t, root, runDir)
	checkServices(t, root, map[string]string{
		"tcp 10.96.0.10:80 internal": "- 10.244.0.7:8080,10.244.1.9:8080",
		"tcp 0.0.0.0:30080 external": "nodeport 10.244.0.7:8080,10.244.1.9:8080",
	})

	// The API server's state wins: web-0 leaves the Service.
	slice.Endpoints = slice.Endpoints[:1]
	if err := client.Tracker().Update(discoveryGVR, slice, slice.Namespace); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, snapDir, func(s *snapshot.State) bool { return len(s.Backends) == 2 }, 20*time.Second)
	checkServices(t, root, map[string]string{
		"tcp 10.96.0.10:80 internal": "- 10.244.0.7:8080",
		"tcp 0.0.0.0:30080 external": "nodeport 10.244.0.7:8080",
	})
}
