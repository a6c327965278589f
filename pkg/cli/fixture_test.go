package cli

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/agentinfo"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/domainid"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/nat"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/maps/nodes"
	"github.com/edgeplane/edgeplane/pkg/maps/nonmasq"
	"github.com/edgeplane/edgeplane/pkg/maps/routes"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// fixture is a node whose agent programmed the datapath and then went away: maps filled, links
// attached to devices in a private netns, no process holding anything but the pins.
type fixture struct {
	root, runDir string
	netns        ns.NetNS
}

// Ifindexes in the fixture's fresh netns: lo is 1, then each veth pair in creation order.
var fixtureVeths = [][2]string{{"eth0", "eth0-peer"}, {"edgeplane.1", "vx-peer"}, {"veth-a", "pod-a"}, {"veth-b", "pod-b"}}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	f := &fixture{root: root, runDir: t.TempDir()}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		if err := datapath.Cleanup(root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		netns.Close()
		testutils.UnmountNS(netns)
	})
	f.netns = netns

	d, err := datapath.Load(root)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer d.Close() // the "agent" exits before any command runs
	ifindex := map[string]uint32{}
	err = netns.Do(func(ns.NetNS) error {
		for _, pair := range fixtureVeths {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair[0]}, PeerName: pair[1]}); err != nil {
				return err
			}
			for _, name := range pair {
				l, err := netlink.LinkByName(name)
				if err != nil {
					return err
				}
				ifindex[name] = uint32(l.Attrs().Index)
			}
		}
		if err := d.AttachUnderlay(int(ifindex["eth0"])); err != nil {
			return err
		}
		if err := d.AttachOverlayDevice(int(ifindex["edgeplane.1"])); err != nil {
			return err
		}
		return datapath.AttachPod(root, "veth-a", int(ifindex["veth-a"]))
	})
	if err != nil {
		t.Fatalf("setting up devices: %v", err)
	}
	f.fill(t, d, ifindex)
	return f
}

var (
	nodeIP   = netip.MustParseAddr("192.168.1.11")
	vtepMAC  = [6]byte{0x0a, 0xe0, 0, 0, 0, 0x11}
	ulMAC    = [6]byte{0x52, 0x54, 0, 0, 0, 0x11}
	fixedCfg nodecfg.NodeCfg
	nodeJSON = cninode.Config{NodeName: "edge-1", NodeIP: nodeIP, MTU: 1450, BPFFSRoot: maps.DefaultRoot}
	// agentReport is agent.json as a 5.10 node's agent writes it (flags abridged).
	agentReport = agentinfo.Report{Node: "edge-1", Version: "v0.9.0", Started: time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC),
		Flags: map[string]string{"encap-mode": "native", "cluster-cidr": "10.244.0.0/16", "mtu": "0", "domain-config": ""},
		Kernel: agentinfo.Kernel{Release: "5.10.0-46-amd64", Features: []agentinfo.Feature{
			{Name: "tcx", Since: "6.6", Uses: "tcx links", Without: "netlink TC: clsact qdisc + direct-action bpf filters"},
			{Name: "check_mtu", Available: true, Since: "5.12", Uses: "bpf_check_mtu for direct routes", Without: "node config's MTU"},
		}}}
)

// Network domains: this node is in site-a, which has a private line to cloud and public
// connectivity to site-b and the default domain; lostDomain is named by a route but not by
// domains_map (unreachable).
var (
	siteA      = domainid.Of("site-a")
	cloud      = domainid.Of("cloud")
	siteB      = domainid.Of("site-b")
	lostDomain = uint32(0xdeadbeef)
	// fixedDomains is domains_map as the agent of a site-a node writes it.
	fixedDomains = domainView{
		"default": 0, "site-a": domainsmap.FlagReachable | domainsmap.FlagLocal, "cloud": domainsmap.FlagReachable, "site-b": 0,
	}
)

// domainView is domains_map by name: the flags one node's agent writes.
type domainView map[string]uint32

func (f *fixture) fill(t *testing.T, d *datapath.Datapath, ifindex map[string]uint32) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	fixedCfg = nodecfg.NodeCfg{
		NodeIP: maps.IPv4(nodeIP.As4()), UnderlayIfindex: ifindex["eth0"], VxlanIfindex: ifindex["edgeplane.1"],
		VNI: 1, MTU: 1450, Flags: nodecfg.FlagReady | nodecfg.FlagMasquerade, VtepMAC: vtepMAC, UnderlayMAC: ulMAC,
		EncapMode: nodecfg.EncapNative, Domain: siteA,
	}
	must(fixedCfg.SetPodCIDR(netip.MustParsePrefix("10.244.1.0/24")))
	must(fixedCfg.SetClusterCIDR(netip.MustParsePrefix("10.244.0.0/16")))
	f.putCfg(t, fixedCfg)

	eps, err := endpoints.Open(f.root)
	must(err)
	defer eps.Close()
	for ip, ep := range map[string]endpoints.Endpoint{
		"10.244.1.5": {Ifindex: ifindex["veth-a"], PodMAC: [6]byte{0x12, 0, 0, 0, 1, 5}, HostMAC: [6]byte{0xee, 0, 0, 0, 1, 5}},
		"10.244.1.6": {Ifindex: ifindex["veth-b"], PodMAC: [6]byte{0x12, 0, 0, 0, 1, 6}, HostMAC: [6]byte{0xee, 0, 0, 0, 1, 6}},
		"10.244.1.9": {Ifindex: 4242, PodMAC: [6]byte{0x12, 0, 0, 0, 1, 9}, HostMAC: [6]byte{0xee, 0, 0, 0, 1, 9}, Flags: 0x1},
	} {
		must(eps.Upsert(netip.MustParseAddr(ip), ep))
	}

	rts, err := routes.Open(f.root)
	must(err)
	defer rts.Close()
	for prefix, r := range map[string]routes.Route{
		"10.244.1.0/24": {NodeIP: maps.IPv4(nodeIP.As4()), Domain: siteA, Flags: routes.FlagLocal},
		"10.244.2.0/24": {NodeIP: maps.IPv4{192, 168, 1, 12}, Domain: siteA},
		"10.244.3.0/24": {NodeIP: maps.IPv4{192, 168, 1, 13}, Domain: siteA, Encap: routes.EncapDirect},
		"10.244.4.0/24": {NodeIP: maps.IPv4{172, 20, 0, 14}, Domain: cloud},
		"10.244.5.0/24": {NodeIP: maps.IPv4{172, 20, 0, 15}, Domain: cloud},
		"10.244.6.0/24": {NodeIP: maps.IPv4{10, 10, 0, 16}, Domain: siteB},
		"10.244.7.0/24": {NodeIP: maps.IPv4{10, 30, 0, 17}, Domain: lostDomain},
	} {
		must(rts.Upsert(netip.MustParsePrefix(prefix), r))
	}

	nds, err := nodes.Open(f.root)
	must(err)
	defer nds.Close()
	for ip, n := range map[string]nodes.Node{
		"192.168.1.11": {VtepMAC: vtepMAC, Domain: siteA},
		"192.168.1.12": {VtepMAC: [6]byte{0x0a, 0xe0, 0, 0, 0, 0x12}, NexthopMAC: [6]byte{0x52, 0x54, 0, 0, 0, 0x12}, Domain: siteA, Flags: nodes.FlagNexthopValid},
		"192.168.1.13": {VtepMAC: [6]byte{0x0a, 0xe0, 0, 0, 0, 0x13}, Domain: siteA},
		"172.20.0.15":  {VtepMAC: [6]byte{0x0a, 0xe0, 0, 0, 0, 0x15}, Domain: cloud},
		"10.10.0.16":   {VtepMAC: [6]byte{0x0a, 0xe0, 0, 0, 0, 0x16}, Domain: siteB},
	} {
		must(nds.Upsert(netip.MustParseAddr(ip), n))
	}
	f.putDomains(t, fixedDomains)

	nm, err := nonmasq.Open(f.root)
	must(err)
	defer nm.Close()
	must(nm.Sync([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("172.16.0.0/12")}))

	ip4 := func(s string) maps.IPv4 { return maps.IPv4(netip.MustParseAddr(s).As4()) }
	fwd, err := nat.OpenFwd(f.root)
	must(err)
	defer fwd.Close()
	rev, err := nat.OpenRev(f.root)
	must(err)
	defer rev.Close()
	for _, flow := range []struct {
		proto                      nat.Proto
		pod                        string
		podPort                    uint16
		remote                     string
		remotePort, nodePort       uint16
		fwdOnly, revOnly, revOther bool
	}{
		{proto: nat.ProtoTCP, pod: "10.244.1.5", podPort: 40000, remote: "1.1.1.1", remotePort: 443, nodePort: 40000},
		{proto: nat.ProtoUDP, pod: "10.244.1.6", podPort: 5353, remote: "8.8.8.8", remotePort: 53, nodePort: 33000},
		{proto: nat.ProtoICMP, pod: "10.244.1.5", podPort: 7, remote: "8.8.8.8", nodePort: 7},
		{proto: nat.ProtoTCP, pod: "10.244.1.6", podPort: 41000, remote: "1.1.1.1", remotePort: 80, nodePort: 41000, fwdOnly: true},
		{proto: nat.ProtoTCP, pod: "10.244.1.5", podPort: 50001, remote: "9.9.9.9", remotePort: 443, nodePort: 50000, revOnly: true},
	} {
		fk := nat.FwdKey{PodIP: ip4(flow.pod), RemoteIP: ip4(flow.remote), PodPort: nat.PortFrom(flow.podPort),
			RemotePort: nat.PortFrom(flow.remotePort), Proto: flow.proto}
		fv := nat.FwdValue{NodePort: nat.PortFrom(flow.nodePort)}
		if !flow.revOnly {
			must(fwd.Upsert(fk, fv))
		}
		if !flow.fwdOnly {
			must(rev.Upsert(fk.RevKey(fv), nat.RevValue{PodIP: fk.PodIP, PodPort: fk.PodPort}))
		}
	}

	// Counters are per CPU: spread them so that the CLI has to sum.
	cpus, err := ebpf.PossibleCPU()
	must(err)
	for _, c := range []struct {
		dir             metricsmap.Dir
		reason          dropreason.Reason
		packets, bytes_ uint64
	}{
		{metricsmap.DirPodEgress, dropreason.Forwarded, 10, 1500},
		{metricsmap.DirPodEgress, dropreason.NoRoute, 2, 196},
		{metricsmap.DirPodEgress, dropreason.PktTooBig, 1, 1514},
		{metricsmap.DirPodEgress, dropreason.ICMPSent, 1, 590},
		{metricsmap.DirOverlayIn, dropreason.UnknownTunnelSource, 3, 300},
		{metricsmap.DirNodeOut, dropreason.Forwarded, 5, 500},
	} {
		perCPU := make([]metricsmap.Metric, cpus)
		perCPU[0] = metricsmap.Metric{Packets: c.packets - c.packets/2, Bytes: c.bytes_ - c.bytes_/2}
		perCPU[cpus-1].Packets += c.packets / 2
		perCPU[cpus-1].Bytes += c.bytes_ / 2
		must(d.Map(metricsmap.MapName).Put(uint32(c.dir)*metricsmap.Reasons+uint32(c.reason), perCPU))
	}

	f.fillServices(t)

	cfg := nodeJSON
	cfg.PodCIDR, cfg.ClusterCIDR = fixedCfg.PodPrefix(), fixedCfg.ClusterPrefix()
	must(cninode.Write(f.runDir, &cfg))
	must(agentinfo.Write(f.runDir, &agentReport))
	f.writeNames(t)
}

// fixedPods is the name index's pod entries as the CNI plugin wrote them: 10.244.1.9's veth is
// gone (its name is still the best guess), 10.244.1.77 has no endpoint (a leftover: never shown).
var fixedPods = []nameindex.Pod{
	{IP: netip.MustParseAddr("10.244.1.5"), Namespace: "default", Name: "web-0", UID: "uid-web-0",
		ContainerID: "c0ffee05", Interface: "eth0", HostInterface: "veth-a"},
	{IP: netip.MustParseAddr("10.244.1.6"), Namespace: "kube-system", Name: "coredns-7db6d8ff4d-x2x9v", UID: "uid-coredns",
		ContainerID: "c0ffee06", Interface: "eth0", HostInterface: "veth-b"},
	{IP: netip.MustParseAddr("10.244.1.9"), Namespace: "default", Name: "batch-1", UID: "uid-batch-1",
		ContainerID: "c0ffee09", Interface: "net1", HostInterface: "ep0000000009"},
	{IP: netip.MustParseAddr("10.244.1.77"), Namespace: "default", Name: "gone", ContainerID: "c0ffee77", Interface: "eth0", HostInterface: "ep0000000077"},
}

// fixedNodes is the name index's nodes as edge-1's agent wrote them: two pools (hangzhou-1,
// hangzhou-2) grouped into domain site-a; 10.244.7.0/24's node is not in it.
var fixedNodes = []nameindex.Node{
	{Name: "edge-1", NodeIP: nodeIP, PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Pool: "hangzhou-1", Domain: "site-a", ThisNode: true},
	{Name: "edge-2", NodeIP: netip.MustParseAddr("192.168.1.12"), PodCIDR: netip.MustParsePrefix("10.244.2.0/24"), Pool: "hangzhou-1", Domain: "site-a"},
	{Name: "edge-3", NodeIP: netip.MustParseAddr("192.168.1.13"), PodCIDR: netip.MustParsePrefix("10.244.3.0/24"), Pool: "hangzhou-2", Domain: "site-a"},
	{Name: "cloud-4", NodeIP: netip.MustParseAddr("172.20.0.14"), PodCIDR: netip.MustParsePrefix("10.244.4.0/24"), Pool: "cloud", Domain: "cloud"},
	{Name: "cloud-5", NodeIP: netip.MustParseAddr("172.20.0.15"), PodCIDR: netip.MustParsePrefix("10.244.5.0/24"), Pool: "cloud", Domain: "cloud"},
	{Name: "site-b-6", NodeIP: netip.MustParseAddr("10.10.0.16"), PodCIDR: netip.MustParsePrefix("10.244.6.0/24"), Pool: "site-b", Domain: "site-b"},
}

// writeNames writes the fixture's name index, replacing whatever a case left.
func (f *fixture) writeNames(t *testing.T) {
	t.Helper()
	if err := nameindex.Remove(f.runDir); err != nil {
		t.Fatal(err)
	}
	for _, p := range fixedPods {
		if err := nameindex.WritePod(f.runDir, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := nameindex.WriteNodes(f.runDir, fixedNodes); err != nil {
		t.Fatal(err)
	}
	if err := nameindex.WriteServices(f.runDir, fixedServices); err != nil {
		t.Fatal(err)
	}
}

// changeNames lets change alter the name index for one case.
func (f *fixture) changeNames(change func(t *testing.T, runDir string)) func(*testing.T, *fixture) {
	return func(t *testing.T, f *fixture) {
		change(t, f.runDir)
		t.Cleanup(func() { f.writeNames(t) })
	}
}

func (f *fixture) putCfg(t *testing.T, c nodecfg.NodeCfg) {
	t.Helper()
	m, err := nodecfg.Open(f.root)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Put(c); err != nil {
		t.Fatal(err)
	}
}

// putDomains replaces domains_map's entries with view.
func (f *fixture) putDomains(t *testing.T, view domainView) {
	t.Helper()
	m, err := domainsmap.Open(f.root)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	old, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	for id := range old {
		if err := m.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	for name, flags := range view {
		d, err := domainsmap.New(name, flags)
		if err != nil {
			t.Fatal(err)
		}
		id := domainid.Of(name)
		if name == "default" {
			id = domainid.Default
		}
		if err := m.Upsert(id, d); err != nil {
			t.Fatal(err)
		}
	}
}

// unpin removes map name's pin until the test ends, as if an agent that does not have it had
// pinned the rest.
func (f *fixture) unpin(t *testing.T, name string) {
	t.Helper()
	path := maps.PinPath(f.root, name)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unpin(); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer m.Close()
		if err := m.Pin(path); err != nil {
			t.Errorf("pinning %s again: %v", path, err)
		}
	})
}

// pinNodeCfgOfSize replaces node_cfg_map, until the test ends, with one whose value is size bytes
// holding fixedCfg (cut short, or followed by 0xff bytes), as an agent of another version pins it.
func (f *fixture) pinNodeCfgOfSize(t *testing.T, size uint32) {
	t.Helper()
	f.unpin(t, nodecfg.MapName)
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, fixedCfg); err != nil {
		t.Fatal(err)
	}
	value := append(buf.Bytes(), bytes.Repeat([]byte{0xff}, int(size))...)[:size]
	m, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: nodecfg.MapName, Type: ebpf.Array, KeySize: 4,
		ValueSize: size, MaxEntries: 1, Pinning: ebpf.PinByName}, ebpf.MapOptions{PinPath: filepath.Join(f.root, maps.Dir)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before the original is pinned again (cleanups run last first)
		if err := m.Unpin(); err != nil {
			t.Error(err)
		}
		m.Close()
	})
	if err := m.Put(uint32(0), value); err != nil {
		t.Fatal(err)
	}
}

// run executes edgeplanectl in the fixture's netns (where its interfaces are) against its pins.
func (f *fixture) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var code int
	var stdout, stderr string
	args = append([]string{"--bpffs-root", f.root, "--run-dir", f.runDir}, args...)
	if err := f.netns.Do(func(ns.NetNS) error {
		code, stdout, stderr = run(args...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return code, stdout, stderr
}

// Kernel-assigned ids and program tags change from run to run (and tags with every BPF change).
var scrubbers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`"tag": "[0-9a-f]{16}"`), `"tag": "<tag>"`},
	// (the padding too: it depends on how many digits the kernel's ids have reached)
	{regexp.MustCompile(`(?m)\b[0-9]+\s+[0-9a-f]{16}\s+([0-9]+|-)$`), "<prog-id>  <tag>  $1"},
	{regexp.MustCompile(`(?m)(<tag>  )[0-9]+$`), "$1<link-id>"},
	{regexp.MustCompile(`"goVersion": "[^"]*"`), `"goVersion": "<go>"`},
	{regexp.MustCompile(`(?m)^go(\s+)go.*$`), "go$1<go>"},
}

// kernelIDs are the JSON fields of maps and progs that hold kernel object ids ("id" in other
// verbs, such as a domain's, is stable).
var kernelIDs = regexp.MustCompile(`"(id|linkID)": [1-9][0-9]*`)

// scrub masks what changes from run to run in the output of the golden case called name.
func (f *fixture) scrub(s, name string) string {
	s = strings.ReplaceAll(s, f.root, "<root>")
	s = strings.ReplaceAll(s, f.runDir, "<run-dir>")
	if strings.HasPrefix(name, "maps.") || strings.HasPrefix(name, "progs.") {
		s = kernelIDs.ReplaceAllString(s, `"$1": 1`)
	}
	for _, sc := range scrubbers {
		s = sc.re.ReplaceAllString(s, sc.with)
	}
	if name == "maps.table" { // the maps table ends with the map id
		s = regexp.MustCompile(`(?m)\s[0-9]+$`).ReplaceAllString(s, " <id>")
	}
	return s
}
