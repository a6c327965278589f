package cli

import (
	"bytes"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

var testOpts = Options{Version: "v0.0.0-test", Commit: "0123abc", BootTime: fixedBootTime}

// run executes edgeplanectl in-process.
func run(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = Main(args, &out, &errOut, testOpts)
	return code, out.String(), errOut.String()
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

type goldenCase struct {
	name  string
	args  []string
	setup func(t *testing.T, f *fixture) // changes the maps for this case only
	// stderr: the case fails with exit 1 and this line (scrubbed) instead of printing name's golden.
	stderr string
	// warning: the case prints name's golden and this (scrubbed) on stderr, exit 0.
	warning string
}

func TestGolden(t *testing.T) {
	f := newFixture(t)
	var cases []goldenCase
	for _, verb := range [][]string{
		{"maps"}, {"progs"}, {"endpoints"}, {"routes"}, {"nodes"}, {"domains"}, {"config"}, {"nat"}, {"stats"}, {"version"},
		{"services"}, {"conntrack"},
		{"route", "get", "10.244.2.9"}, {"route", "get", "10.244.5.9"}, {"route", "get", "10.244.6.9"},
	} {
		for _, o := range []string{"table", "json"} {
			cases = append(cases, goldenCase{name: strings.Join(verb, "-") + "." + o, args: append(verb, "-o", o)})
		}
	}
	cases = append(cases,
		goldenCase{name: "endpoints-ip.table", args: []string{"endpoints", "--ip", "10.244.1.6"}},
		goldenCase{name: "routes-ip.table", args: []string{"routes", "--ip", "10.244.3.7"}},
		goldenCase{name: "nodes-ip.table", args: []string{"nodes", "--ip", "192.168.1.12/32"}},
		goldenCase{name: "routes-domain.table", args: []string{"routes", "--domain", "cloud"}},
		goldenCase{name: "routes-domain.json", args: []string{"routes", "--domain", "cloud", "-o", "json"}},
		goldenCase{name: "routes-domain-ip.table", args: []string{"routes", "--domain", "cloud", "--ip", "10.244.5.0/25"}},
		goldenCase{name: "routes-domain-hex.table", args: []string{"routes", "--domain", "0xdeadbeef"}},
		goldenCase{name: "routes-domain-none.table", args: []string{"routes", "--domain", "default"}},
		goldenCase{name: "nodes-domain.table", args: []string{"nodes", "--domain", "site-b"}},
		goldenCase{name: "nodes-domain.json", args: []string{"nodes", "--domain", "site-b", "-o", "json"}},
		goldenCase{name: "nat-ip.table", args: []string{"nat", "--ip", "10.244.1.6"}},
		goldenCase{name: "stats-drops.table", args: []string{"stats", "--drops-only"}},
		goldenCase{name: "stats-drops.json", args: []string{"stats", "--drops-only", "-o", "json"}},
		goldenCase{name: "services-closed.table", args: []string{"services", "--closed"}},
		goldenCase{name: "services-closed.json", args: []string{"services", "--closed", "-o", "json"}},
		goldenCase{name: "services-service.table", args: []string{"services", "--service", "default/web"}},
		goldenCase{name: "services-ip.table", args: []string{"services", "--ip", "10.244.2.7"}},
		goldenCase{name: "services-port-scope.table", args: []string{"services", "--port", "443", "--scope", "internal"}},
		goldenCase{name: "services-scope.json", args: []string{"svc", "--scope", "external", "-o", "json"}},
		goldenCase{name: "conntrack-ip.table", args: []string{"conntrack", "--ip", "10.244.3.0/24"}},
		goldenCase{name: "conntrack-port.table", args: []string{"ct", "--port", "53"}},
		goldenCase{name: "conntrack-port.json", args: []string{"ct", "--port", "53", "-o", "json"}},
	)
	// route get: every branch of pod_egress.
	for _, c := range []struct{ name, dst, from string }{
		{"local", "10.244.1.6", ""},
		{"local-veth-gone", "10.244.1.9", "10.244.1.6"},
		{"unknown-endpoint", "10.244.1.77", ""},
		{"vxlan-native", "10.244.2.9", "10.244.1.5"},
		{"direct-kernel-nexthop", "10.244.3.9", ""},
		{"unknown-node", "10.244.4.9", ""},
		{"private-line", "10.244.5.9", "10.244.1.5"},
		{"domain-unreachable", "10.244.6.9", "10.244.1.5"},
		{"domain-not-in-map", "10.244.7.9", ""},
		{"no-route", "10.244.200.1", ""},
		{"host-masquerade", "1.1.1.1", "10.244.1.5"},
		{"host-nonmasq", "172.16.5.5", ""},
		{"spoofed-source", "10.244.2.9", "10.244.1.99"},
	} {
		args := []string{"route", "get", c.dst}
		if c.from != "" {
			args = append(args, "--from", c.from)
		}
		cases = append(cases, goldenCase{name: "route-get-" + c.name + ".table", args: args})
	}
	withCfg := func(change func(*nodecfg.NodeCfg)) func(*testing.T, *fixture) {
		return func(t *testing.T, f *fixture) {
			c := fixedCfg
			change(&c)
			f.putCfg(t, c)
			t.Cleanup(func() { f.putCfg(t, fixedCfg) })
		}
	}
	// domains as a cloud node sees them, for the cloud gateway cases
	cloudView := domainView{"default": 0, "cloud": domainsmap.FlagReachable | domainsmap.FlagLocal, "site-a": domainsmap.FlagReachable, "site-b": 0}
	isolatedView := domainView{"default": 0, "cloud": domainsmap.FlagReachable | domainsmap.FlagLocal, "site-a": 0, "site-b": 0}
	withDomains := func(view domainView, change func(*nodecfg.NodeCfg)) func(*testing.T, *fixture) {
		return func(t *testing.T, f *fixture) {
			withCfg(change)(t, f)
			f.putDomains(t, view)
			t.Cleanup(func() { f.putDomains(t, fixedDomains) })
		}
	}
	gateway := func(c *nodecfg.NodeCfg) { c.Domain, c.Flags = cloud, c.Flags|nodecfg.FlagGateway }
	viaGateway := func(c *nodecfg.NodeCfg) { c.Domain, c.GatewayIP = cloud, maps.IPv4{172, 20, 0, 15} }
	// An agent older than network domains: no domains_map pin.
	withoutDomainsMap := func(t *testing.T, f *fixture) { f.unpin(t, domainsmap.MapName) }
	cases = append(cases,
		goldenCase{name: "domains-gateway.table", args: []string{"domains"}, setup: withDomains(cloudView, gateway)},
		goldenCase{name: "domains-gateway-isolated.table", args: []string{"domains"}, setup: withDomains(isolatedView, gateway)},
		goldenCase{name: "domains-gateway-isolated.json", args: []string{"domains", "-o", "json"}, setup: withDomains(isolatedView, gateway)},
		goldenCase{name: "domains-via-gateway.table", args: []string{"domains"}, setup: withDomains(cloudView, viaGateway)},
		goldenCase{name: "domains-via-gateway.json", args: []string{"domains", "-o", "json"}, setup: withDomains(cloudView, viaGateway)},
		goldenCase{name: "domains-not-ready.table", args: []string{"domains"},
			setup: withCfg(func(c *nodecfg.NodeCfg) { *c = nodecfg.NodeCfg{} })},
		goldenCase{name: "config-gateway.table", args: []string{"config"}, setup: withDomains(cloudView, viaGateway)},
		goldenCase{name: "route-get-via-gateway.table", args: []string{"route", "get", "10.244.2.9"}, setup: withDomains(cloudView, viaGateway)},
		goldenCase{name: "domains-no-domains-map", args: []string{"domains"}, setup: withoutDomainsMap,
			stderr: "edgeplanectl: map domains_map is not pinned under <root>/maps: the agent on this node may be older than this edgeplanectl, or --bpffs-root is wrong\n"},
		goldenCase{name: "routes-no-domains-map.table", args: []string{"routes"}, setup: withoutDomainsMap},
		goldenCase{name: "routes-no-domains-map.json", args: []string{"routes", "-o", "json"}, setup: withoutDomainsMap},
		goldenCase{name: "routes-domain-no-domains-map.table", args: []string{"routes", "--domain", "site-b"}, setup: withoutDomainsMap},
		goldenCase{name: "nodes-no-domains-map.table", args: []string{"nodes"}, setup: withoutDomainsMap},
		goldenCase{name: "config-no-domains-map.table", args: []string{"config"}, setup: withoutDomainsMap},
		goldenCase{name: "route-get-no-domains-map-private-line.table", args: []string{"route", "get", "10.244.5.9"}, setup: withoutDomainsMap},
		goldenCase{name: "route-get-no-domains-map-same-domain.table", args: []string{"route", "get", "10.244.2.9"}, setup: withoutDomainsMap},
	)
	// The name index: filters, and what a missing, torn or stale index does.
	noIndex := f.changeNames(func(t *testing.T, runDir string) {
		if err := nameindex.Remove(runDir); err != nil {
			t.Fatal(err)
		}
	})
	const noPodNames = "edgeplanectl: pod names unknown: no name index at <run-dir>/names/pods (the CNI plugin writes it; pods it wired before it did are unnamed; is --run-dir right?)\n"
	const noServiceNames = "edgeplanectl: service names unknown: no name index at <run-dir>/names/services.json (the agent writes it; an agent older than this edgeplanectl does not; is --run-dir right?)\n"
	const noNodeNames = "edgeplanectl: node names unknown: no name index at <run-dir>/names/nodes.json (the agent writes it; an agent older than this edgeplanectl does not; is --run-dir right?)\n"
	tornIndex := f.changeNames(func(t *testing.T, runDir string) {
		for _, file := range []string{"10.244.1.6.json", "10.244.1.9.json"} {
			if err := os.WriteFile(filepath.Join(nameindex.PodsDir(runDir), file), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(nameindex.NodesPath(runDir), []byte("not json"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	// 10.244.1.6's address went to a pod whose ADD left no entry (an older plugin): the entry
	// names another veth, so it is not shown.
	staleIndex := f.changeNames(func(t *testing.T, runDir string) {
		p := fixedPods[1]
		p.HostInterface, p.Name = "ep0000000006", "old-owner"
		if err := nameindex.WritePod(runDir, p); err != nil {
			t.Fatal(err)
		}
	})
	cases = append(cases,
		goldenCase{name: "endpoints-node.table", args: []string{"endpoints", "--node", "edge-1"}},
		goldenCase{name: "endpoints-other-node.json", args: []string{"endpoints", "--node", "edge-2", "-o", "json"}},
		goldenCase{name: "endpoints-pool.table", args: []string{"endpoints", "--pool", "hangzhou-1", "--ip", "10.244.1.4/31"}},
		goldenCase{name: "routes-node.table", args: []string{"routes", "--node", "edge-2"}},
		goldenCase{name: "routes-pool.table", args: []string{"routes", "--pool", "hangzhou-1"}},
		goldenCase{name: "routes-pool.json", args: []string{"routes", "--pool", "hangzhou-1", "-o", "json"}},
		goldenCase{name: "routes-pool-domain.table", args: []string{"routes", "--pool", "cloud", "--domain", "site-a"}},
		goldenCase{name: "nodes-node.json", args: []string{"nodes", "--node", "site-b-6", "-o", "json"}},
		goldenCase{name: "nodes-pool.table", args: []string{"nodes", "--pool", "cloud"}},
		goldenCase{name: "nodes-node-pool.table", args: []string{"nodes", "--node", "edge-3", "--pool", "hangzhou-1"}},
		goldenCase{name: "endpoints-no-index.table", args: []string{"endpoints"}, setup: noIndex, warning: noPodNames},
		goldenCase{name: "endpoints-no-index.json", args: []string{"endpoints", "-o", "json"}, setup: noIndex, warning: noPodNames},
		goldenCase{name: "endpoints-node-no-index.table", args: []string{"endpoints", "--node", "edge-1"}, setup: noIndex, warning: noNodeNames + noPodNames},
		goldenCase{name: "routes-no-index.table", args: []string{"routes"}, setup: noIndex, warning: noNodeNames},
		goldenCase{name: "routes-no-index.json", args: []string{"routes", "-o", "json"}, setup: noIndex, warning: noNodeNames},
		goldenCase{name: "nodes-no-index.table", args: []string{"nodes"}, setup: noIndex, warning: noNodeNames},
		goldenCase{name: "route-get-no-index.table", args: []string{"route", "get", "10.244.2.9", "--from", "10.244.1.5"}, setup: noIndex, warning: noPodNames + noNodeNames},
		goldenCase{name: "endpoints-torn-index.table", args: []string{"endpoints"}, setup: tornIndex,
			warning: "edgeplanectl: pod names: 2 unreadable entries under <run-dir>/names/pods skipped (first: parsing <run-dir>/names/pods/10.244.1.6.json: unexpected end of JSON input)\n"},
		goldenCase{name: "nodes-torn-index.table", args: []string{"nodes"}, setup: tornIndex,
			warning: "edgeplanectl: node names unknown: name index: parsing <run-dir>/names/nodes.json: invalid character 'o' in literal null (expecting 'u')\n"},
		goldenCase{name: "endpoints-stale-index.table", args: []string{"endpoints"}, setup: staleIndex},
		goldenCase{name: "services-no-index.table", args: []string{"services"}, setup: noIndex, warning: noServiceNames + noPodNames + noNodeNames},
		goldenCase{name: "services-service-no-index.json", args: []string{"services", "--service", "default/web", "-o", "json"}, setup: noIndex, warning: noServiceNames},
		goldenCase{name: "conntrack-no-index.table", args: []string{"conntrack"}, setup: noIndex, warning: noServiceNames},
		// An agent older than services: no lb maps pinned.
		goldenCase{name: "services-no-lb-map", args: []string{"services"}, setup: func(t *testing.T, f *fixture) { f.unpin(t, lb.SvcMapName) },
			stderr: "edgeplanectl: map lb_svc_map is not pinned under <root>/maps: the agent on this node may be older than this edgeplanectl, or --bpffs-root is wrong\n"},
		goldenCase{name: "conntrack-no-lb-map", args: []string{"conntrack"}, setup: func(t *testing.T, f *fixture) { f.unpin(t, lb.CTMapName) },
			stderr: "edgeplanectl: map lb_ct_map is not pinned under <root>/maps: the agent on this node may be older than this edgeplanectl, or --bpffs-root is wrong\n"},
	)
	cases = append(cases,
		goldenCase{name: "route-get-vxlan-device.table", args: []string{"route", "get", "10.244.2.9"},
			setup: withCfg(func(c *nodecfg.NodeCfg) { c.EncapMode = nodecfg.EncapDevice })},
		goldenCase{name: "route-get-host-masquerade-off.table", args: []string{"route", "get", "1.1.1.1"},
			setup: withCfg(func(c *nodecfg.NodeCfg) { c.Flags &^= nodecfg.FlagMasquerade })},
		goldenCase{name: "route-get-not-ready.table", args: []string{"route", "get", "10.244.2.9"},
			setup: withCfg(func(c *nodecfg.NodeCfg) { c.Flags = 0 })},
		goldenCase{name: "config-not-ready.table", args: []string{"config"},
			setup: withCfg(func(c *nodecfg.NodeCfg) { *c = nodecfg.NodeCfg{} })},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				c.setup(t, f)
			}
			code, stdout, stderr := f.run(t, c.args...)
			if c.stderr != "" {
				if got := f.scrub(stderr, c.name); code != 1 || stdout != "" || got != c.stderr {
					t.Fatalf("edgeplanectl %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", strings.Join(c.args, " "), code, stdout, got, c.stderr)
				}
				return
			}
			if code != 0 || f.scrub(stderr, c.name) != c.warning {
				t.Fatalf("edgeplanectl %s: exit %d, stderr %q, want %q", strings.Join(c.args, " "), code, stderr, c.warning)
			}
			checkGolden(t, c.name, f.scrub(stdout, c.name))
		})
	}
}

// TestOtherAgentVersions: the agent on the node pinned maps of another version. node_cfg_map's
// fields are only appended, so every verb reads the common prefix; an agent older than network
// domains has no domains_map either, and only the domains verb needs it.
func TestOtherAgentVersions(t *testing.T) {
	f := newFixture(t)
	const noDomainsMap = "edgeplanectl: map domains_map is not pinned under <root>/maps: the agent on this node may be older than this edgeplanectl, or --bpffs-root is wrong\n"
	size := uint32(binary.Size(nodecfg.NodeCfg{}))
	for _, c := range []struct {
		name         string
		cfgSize      uint32
		domainsMap   bool
		wantInConfig string // in config's output
		wantInRoute  string // in route get 10.244.5.9's output
	}{
		// Without Domain, GatewayIP and the conntrack close timeouts: the default domain, no
		// gateway, lb.h's timeouts.
		{"older", size - 20, false, "  domain        0x00000000\n  gateway IP    -\n",
			"domains_map    not pinned: domain 0x1ac6a97e not checked"},
		// Unknown trailing bytes (0xff) are ignored.
		{"newer", size + 8, true, "  domain        site-a (0xc43bc0a8)\n  gateway IP    -\n  flags         ready,masquerade\n",
			"verdict      vxlan to node 172.20.0.15 (cloud-5): bpf_redirect_neigh to eth0 (ifindex 3); crosses the private line to domain cloud"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.pinNodeCfgOfSize(t, c.cfgSize)
			if !c.domainsMap {
				f.unpin(t, domainsmap.MapName)
			}
			for _, args := range [][]string{{"maps"}, {"progs"}, {"routes"}, {"nodes"}, {"config"}, {"route", "get", "10.244.2.9"}} {
				for _, o := range []string{"table", "json"} {
					if code, stdout, stderr := f.run(t, append(args, "-o", o)...); code != 0 || stderr != "" || stdout == "" {
						t.Errorf("edgeplanectl %s -o %s: exit %d, stdout %d bytes, stderr %q", strings.Join(args, " "), o, code, len(stdout), stderr)
					}
				}
			}
			if _, stdout, _ := f.run(t, "config"); !strings.Contains(stdout, "node IP       192.168.1.11") ||
				!strings.Contains(stdout, c.wantInConfig) {
				t.Errorf("config does not decode node_cfg_map (want %q):\n%s", c.wantInConfig, stdout)
			}
			if _, stdout, _ := f.run(t, "route", "get", "10.244.5.9"); !strings.Contains(stdout, c.wantInRoute) {
				t.Errorf("route get 10.244.5.9 does not say %q:\n%s", c.wantInRoute, stdout)
			}
			code, stdout, stderr := f.run(t, "domains")
			switch {
			case c.domainsMap && (code != 0 || !strings.Contains(stdout, "node domain    site-a (0xc43bc0a8)")):
				t.Errorf("domains: exit %d, stderr %q:\n%s", code, stderr, stdout)
			case !c.domainsMap && (code != 1 || f.scrub(stderr, "") != noDomainsMap):
				t.Errorf("domains: exit %d, stderr %q; want exit 1 and %q", code, stderr, noDomainsMap)
			}
		})
	}
}

// TestNoAgent runs every verb against pins alone: the datapath was loaded and filled by a
// process that has closed everything (an agent that is down), and node.json is gone too. The name
// index stays (the agent does not remove it on exit), so names show and nothing is warned.
func TestNoAgent(t *testing.T) {
	f := newFixture(t)
	if err := cninode.Remove(f.runDir); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"maps"}, {"progs"}, {"endpoints"}, {"routes"}, {"nodes"}, {"domains"}, {"config"}, {"nat"}, {"stats"},
		{"services"}, {"conntrack"},
		{"route", "get", "10.244.2.9"}, {"route", "get", "1.1.1.1"}, {"route", "get", "10.244.6.9"},
	} {
		for _, o := range []string{"table", "json"} {
			code, stdout, stderr := f.run(t, append(args, "-o", o)...)
			if code != 0 || stderr != "" || stdout == "" {
				t.Errorf("edgeplanectl %s -o %s: exit %d, stdout %d bytes, stderr %q", strings.Join(args, " "), o, code, len(stdout), stderr)
			}
		}
	}
	if _, stdout, _ := f.run(t, "config"); !strings.Contains(stdout, "absent") {
		t.Errorf("config without node.json does not say it is absent:\n%s", stdout)
	}
	if code, stdout, _ := f.run(t, "__complete", "routes", "--domain", ""); code != 0 || !strings.HasPrefix(stdout, "cloud\ndefault\nsite-a\nsite-b\n:4\n") {
		t.Errorf("completing --domain: exit %d, %q", code, stdout)
	}
	if code, stdout, _ := f.run(t, "__complete", "nodes", "--node", ""); code != 0 || !strings.HasPrefix(stdout, "cloud-4\ncloud-5\nedge-1\nedge-2\nedge-3\nsite-b-6\n:4\n") {
		t.Errorf("completing --node: exit %d, %q", code, stdout)
	}
	if code, stdout, _ := f.run(t, "__complete", "services", "--service", ""); code != 0 || !strings.HasPrefix(stdout, "default/admin\ndefault/ingress\ndefault/web\nkube-system/kube-dns\n:4\n") {
		t.Errorf("completing --service: exit %d, %q", code, stdout)
	}
	if code, stdout, _ := f.run(t, "__complete", "endpoints", "--pool", ""); code != 0 || !strings.HasPrefix(stdout, "cloud\nhangzhou-1\nhangzhou-2\nsite-b\n:4\n") {
		t.Errorf("completing --pool: exit %d, %q", code, stdout)
	}
}

// TestMissingPins: with nothing pinned, every verb says what to do, on one line.
func TestMissingPins(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	want := "edgeplanectl: no edgeplane maps under " + missing + ": is the agent running on this node? use --bpffs-root\n"
	for _, args := range [][]string{
		{"maps"}, {"progs"}, {"endpoints"}, {"routes"}, {"nodes"}, {"domains"}, {"config"}, {"nat"}, {"stats"}, {"route", "get", "10.0.0.1"}, {"monitor"},
		{"services"}, {"conntrack"},
	} {
		code, stdout, stderr := run(append([]string{"--bpffs-root", missing}, args...)...)
		if code != 1 || stdout != "" || stderr != want {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and %q", args, code, stdout, stderr, want)
		}
	}
}

// TestEmptyBPFFS: a mounted bpffs without edgeplane's pins (agent never started here).
func TestEmptyBPFFS(t *testing.T) {
	root := bpffstest.Mount(t)
	if err := os.Mkdir(filepath.Join(root, maps.Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run("--bpffs-root", root, "endpoints")
	want := "edgeplanectl: no edgeplane maps under " + root + ": is the agent running on this node? use --bpffs-root\n"
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr, want)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "edgeplanectl: unknown flag: --bogus (see 'edgeplanectl --help')\n"},
		{[]string{"routes", "-o", "yaml"}, "edgeplanectl: invalid output format \"yaml\": use table or json (see 'edgeplanectl routes --help')\n"},
		{[]string{"endpoints", "--ip", "10.1"}, "edgeplanectl: invalid argument \"10.1\" for \"--ip\" flag: \"10.1\" is not an IPv4 address or CIDR (see 'edgeplanectl endpoints --help')\n"},
		{[]string{"route", "get"}, "edgeplanectl: route get takes one IPv4 address, got 0 arguments (see 'edgeplanectl route get --help')\n"},
		{[]string{"route", "get", "fd00::1"}, "edgeplanectl: \"fd00::1\" is not an IPv4 address (see 'edgeplanectl route get --help')\n"},
		{[]string{"maps", "extra"}, "edgeplanectl: maps takes no arguments, got \"extra\" (see 'edgeplanectl maps --help')\n"},
		{[]string{"stats", "--drops"}, "edgeplanectl: unknown flag: --drops (see 'edgeplanectl stats --help')\n"},
		{[]string{"services", "--scope", "outside"}, "edgeplanectl: --scope \"outside\": use internal or external (see 'edgeplanectl services --help')\n"},
		{[]string{"services", "--service", "web"}, "edgeplanectl: --service \"web\": use namespace/name (see 'edgeplanectl services --help')\n"},
		{[]string{"conntrack", "--port", "http"}, "edgeplanectl: invalid argument \"http\" for \"--port\" flag: strconv.ParseUint: parsing \"http\": invalid syntax (see 'edgeplanectl conntrack --help')\n"},
	} {
		code, stdout, stderr := run(c.args...)
		if code != 2 || stdout != "" || stderr != c.want {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, stdout, stderr, c.want)
		}
	}
	// Unknown verbs: cobra's message, still one line.
	if code, _, stderr := run("frobnicate"); code != 2 || strings.Count(stderr, "\n") != 1 {
		t.Errorf("unknown command: exit %d, stderr %q", code, stderr)
	}
}

func TestCompletion(t *testing.T) {
	code, stdout, stderr := run("completion", "bash")
	if code != 0 || !strings.Contains(stdout, "edgeplanectl") || stderr != "" {
		t.Fatalf("completion bash: exit %d, stderr %q", code, stderr)
	}
	code, stdout, _ = run("__complete", "-o", "")
	if code != 0 || !strings.Contains(stdout, "table\njson\n") {
		t.Fatalf("completing -o: exit %d, %q", code, stdout)
	}
}
