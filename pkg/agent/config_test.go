package agent

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

func TestCheckOverlaps(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name               string
		cluster, svc, node string
		want               []string // substrings of the error; none: no error
	}{
		{"disjoint", "10.244.0.0/16", "10.96.0.0/12", "192.168.0.0/24", nil},
		{"cluster contains service", "10.0.0.0/8", "10.96.0.0/12", "192.168.0.0/24",
			[]string{"cluster CIDR 10.0.0.0/8 overlaps the service CIDR 10.96.0.0/12"}},
		{"node network inside cluster", "10.244.0.0/16", "10.96.0.0/12", "10.244.5.0/24",
			[]string{"cluster CIDR 10.244.0.0/16 overlaps the node network 10.244.5.0/24"}},
		{"node network covers service", "10.244.0.0/16", "10.96.0.0/12", "10.0.0.0/8",
			[]string{"10.244.0.0/16 overlaps the node network 10.0.0.0/8", "service CIDR 10.96.0.0/12 overlaps the node network 10.0.0.0/8"}},
		{"equal", "10.244.0.0/16", "10.244.0.0/16", "192.168.0.0/24", []string{"overlaps the service CIDR"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckOverlaps(
				Network{"cluster CIDR", p(tc.cluster)},
				Network{"service CIDR", p(tc.svc)},
				Network{"node network", p(tc.node)})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("CheckOverlaps: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckOverlaps: no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func parse(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	t.Setenv("NODE_NAME", "env-node")
	var c Config
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return &c, c.Validate()
}

func TestFlagsDefaults(t *testing.T) {
	c, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "env-node" || c.BPFFSRoot != "/sys/fs/bpf/edgeplane" || c.RunDir != "/run/edgeplane" ||
		c.ClusterCIDR.String() != "10.244.0.0/16" || c.ServiceCIDR.String() != "10.96.0.0/12" ||
		c.NodeCIDRMaskSize != 24 || c.VXLANDevice != "edgeplane.1" || c.EncapMode != "native" ||
		!c.Masquerade || c.MTU != 0 || c.MetricsAddr != "127.0.0.1:9962" || c.MetricsBindAddress != "127.0.0.1:10249" {
		t.Fatalf("defaults: %+v", c)
	}
	// The close timeouts default to lb.h's: kube-proxy's CLOSE_WAIT, Linux's TIME_WAIT and CLOSE.
	if got := c.CTCloseTimeouts(); got != (lb.CTCloseTimeouts{CloseWait: time.Hour, TimeWait: 2 * time.Minute, Close: 10 * time.Second}) {
		t.Fatalf("close timeouts: %+v", got)
	}
}

func TestFlagsParse(t *testing.T) {
	c, err := parse(t, "--node-name=n1", "--cluster-cidr=10.200.0.0/16", "--non-masquerade-cidrs=192.168.0.0/16, 172.16.0.0/12",
		"--masquerade=false", "--encap-mode=device", "--mtu=1400", "--ct-tcp-close-wait-timeout=2h",
		"--ct-tcp-time-wait-timeout=60s", "--ct-tcp-close-timeout=5s", "--metrics-bind-address=")
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "n1" || c.ClusterCIDR.String() != "10.200.0.0/16" || c.Masquerade || c.EncapMode != "device" ||
		c.MTU != 1400 || c.NonMasqueradeCIDRs.String() != "192.168.0.0/16,172.16.0.0/12" || c.MetricsBindAddress != "" ||
		c.CTCloseTimeouts() != (lb.CTCloseTimeouts{CloseWait: 2 * time.Hour, TimeWait: time.Minute, Close: 5 * time.Second}) {
		t.Fatalf("parsed: %+v", c)
	}
}

// EffectiveFlags reports every flag with the parsed value, the defaults included.
func TestEffectiveFlags(t *testing.T) {
	c, err := parse(t, "--node-name=n1", "--encap-mode=device", "--mtu=1400", "--non-masquerade-cidrs=192.168.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	got := c.EffectiveFlags()
	for name, want := range map[string]string{
		"node-name": "n1", "encap-mode": "device", "mtu": "1400", "non-masquerade-cidrs": "192.168.0.0/16",
		"cluster-cidr": "10.244.0.0/16", "masquerade": "true", "resync-period": "30s",
	} {
		if got[name] != want {
			t.Errorf("--%s = %q, want %q", name, got[name], want)
		}
	}
	fs := pflag.NewFlagSet("count", pflag.ContinueOnError)
	new(Config).RegisterFlags(fs)
	if len(got) != fs.NFlag()+countFlags(fs) {
		t.Errorf("%d flags reported, %d registered", len(got), countFlags(fs))
	}
}

func countFlags(fs *pflag.FlagSet) (n int) {
	fs.VisitAll(func(*pflag.Flag) { n++ })
	return n
}

func TestFlagsInvalid(t *testing.T) {
	for _, args := range [][]string{
		{"--encap-mode=gre"},
		{"--cluster-cidr=10.244.1.0/16"},
		{"--node-cidr-mask-size=8"},
		{"--mtu=100"},
		{"--non-masquerade-cidrs=nope"},
		{"--cluster-cidr=fd00::/64"},
		{"--ct-tcp-close-wait-timeout=0s"},
		{"--ct-tcp-time-wait-timeout=500ms"},
		{"--ct-tcp-close-timeout=-1s"},
		{"--ct-tcp-close-wait-timeout=200000000h"},
		{"--metrics-bind-address=10249"},
	} {
		if _, err := parse(t, args...); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

// The domain ConfigMap and the reporter Lease are in the agent's namespace: $POD_NAMESPACE (the
// DaemonSet's downward API), else edgeplane-system, where deploy/ puts the ConfigMap.
func TestClusterObjectsInAgentNamespace(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	c, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if c.DomainConfig != "edgeplane-system/edgeplane-domains" || c.ReporterLease != "edgeplane-system/edgeplane-agent-reporter" {
		t.Errorf("without $POD_NAMESPACE: --domain-config %q, --reporter-lease %q", c.DomainConfig, c.ReporterLease)
	}
	t.Setenv("POD_NAMESPACE", "net")
	if c, err = parse(t); err != nil {
		t.Fatal(err)
	}
	if c.DomainConfig != "net/edgeplane-domains" || c.ReporterLease != "net/edgeplane-agent-reporter" {
		t.Errorf("with POD_NAMESPACE=net: --domain-config %q, --reporter-lease %q", c.DomainConfig, c.ReporterLease)
	}
	for _, args := range [][]string{{"--reporter-lease=nons"}, {"--reporter-lease-duration=1s"}, {"--domain-config=a/b/c"}} {
		if _, err := parse(t, args...); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

// command runs NewCommand on args as Main would (single-dash forms rewritten) and returns the
// Config it would run the agent with (nil when it would not run), its output and its error.
func command(t *testing.T, args ...string) (*Config, string, error) {
	t.Helper()
	t.Setenv("NODE_NAME", "env-node")
	var got *Config
	cmd := NewCommand("v9.9.9", func(_ context.Context, c Config) error {
		got = &c
		return nil
	})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(singleDashCompat(cmd, args, &out))
	err := cmd.ExecuteContext(t.Context())
	return got, out.String(), err
}

// The deployed command line (deploy/base/daemonset.yaml's args, ConfigMap values substituted,
// and the lab's) reaches the agent's Config whole, with the version set.
func TestCommandParsesDeployedFlags(t *testing.T) {
	c, _, err := command(t, "--node-name=n1", "--cluster-cidr=10.244.0.0/16", "--node-cidr-mask-size=24",
		"--service-cidr=10.96.0.0/12", "--mtu=0", "--encap-mode=native", "--masquerade=true",
		"--non-masquerade-cidrs=", "--underlay-interface=", "--bpffs-root=/sys/fs/bpf/edgeplane",
		"--run-dir=/run/edgeplane", "--metrics-addr=127.0.0.1:9962", "--proc-sys=/host/proc/sys",
		"--domain-config=edgeplane-system/edgeplane-domains", "--daemonset=edgeplane-system/edgeplane-agent",
		"--cni-conf-dir=/host/etc/cni/net.d", "--cni-bin-dir=/host/opt/cni/bin",
		"--kubeconfig=/lab/kubeconfig", "--flannel-subnet-file=/lab/subnet.env", "--reporter-lease-duration=5s")
	if err != nil {
		t.Fatal(err)
	}
	if c == nil {
		t.Fatal("the agent would not run")
	}
	want := Config{NodeName: "n1", Kubeconfig: "/lab/kubeconfig", DaemonSet: "edgeplane-system/edgeplane-agent",
		ProcSys: "/host/proc/sys", CNIConfDir: "/host/etc/cni/net.d", CNIBinDir: "/host/opt/cni/bin",
		FlannelSubnetFile: "/lab/subnet.env", ReporterLeaseDuration: 5 * time.Second, Version: "v9.9.9"}
	if c.NodeName != want.NodeName || c.Kubeconfig != want.Kubeconfig || c.DaemonSet != want.DaemonSet ||
		c.ProcSys != want.ProcSys || c.CNIConfDir != want.CNIConfDir || c.CNIBinDir != want.CNIBinDir ||
		c.FlannelSubnetFile != want.FlannelSubnetFile || c.ReporterLeaseDuration != want.ReporterLeaseDuration ||
		c.Version != want.Version || c.ClusterCIDR.String() != "10.244.0.0/16" || !c.Masquerade {
		t.Errorf("parsed %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("the deployed flags do not validate: %v", err)
	}
}

// --help lists the agent's own flags first, then klog's in a section of their own, each flag in
// exactly one of them.
func TestCommandHelpOrder(t *testing.T) {
	c, out, err := command(t, "--help")
	if err != nil || c != nil {
		t.Fatalf("--help: ran the agent %v, error %v", c != nil, err)
	}
	own, logging, ok := strings.Cut(out, "\nLogging flags (klog):\n")
	if !ok || !strings.Contains(own, "\nFlags:\n") {
		t.Fatalf("no \"Flags:\" section followed by a klog one:\n%s", out)
	}
	section := func(text string) []string {
		var names []string
		for _, line := range strings.Split(text, "\n") {
			if _, after, ok := strings.Cut(line, "--"); ok && strings.HasPrefix(strings.TrimSpace(line), "-") {
				names = append(names, strings.FieldsFunc(after, func(r rune) bool { return r == ' ' || r == '=' })[0])
			}
		}
		return names
	}
	ownNames, logNames := section(own), section(logging)
	for _, name := range []string{"node-name", "cluster-cidr", "non-masquerade-cidrs", "domain-config", "validate-flags", "version", "help", "uninstall"} {
		if !slices.Contains(ownNames, name) {
			t.Errorf("--%s is not among the agent's flags %q", name, ownNames)
		}
	}
	for _, name := range []string{"v", "vmodule", "logtostderr", "log_file"} {
		if !slices.Contains(logNames, name) || slices.Contains(ownNames, name) {
			t.Errorf("--%s is not in the klog section only: agent's %q, klog's %q", name, ownNames, logNames)
		}
	}
	if !strings.Contains(logging, "-v, --v Level") {
		t.Errorf("klog's -v has no one-letter form:\n%s", logging)
	}
	// The types pflag names come from the values: CIDRs say so.
	if !strings.Contains(own, "--cluster-cidr cidr") || !strings.Contains(own, "--non-masquerade-cidrs cidrs") {
		t.Errorf("the CIDR flags show no types:\n%s", own)
	}
}

// klog's flags are parsed with the agent's, in both the one-letter and the long form.
func TestCommandKlogFlags(t *testing.T) {
	for _, args := range [][]string{{"-v=4"}, {"--v=4"}, {"-v", "4"}} {
		_, _, err := command(t, append(args, "--validate-flags")...)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if v := klogFlags().Lookup("v").Value.String(); v != "4" {
			t.Errorf("%q: klog's verbosity is %s", args, v)
		}
	}
	t.Cleanup(func() { _ = klogFlags().Set("v", "0") })
}

// Command lines written for the agent before it used pflag keep working: single-dash long flags
// (Go's flag package took them) are read as two-dash ones, with a warning.
func TestCommandSingleDashCompat(t *testing.T) {
	c, out, err := command(t, "-node-name=n1", "-mtu", "1400", "-masquerade=false", "--encap-mode=device", "-help=false")
	if err != nil {
		t.Fatal(err)
	}
	if c == nil || c.NodeName != "n1" || c.MTU != 1400 || c.Masquerade || c.EncapMode != EncapDevice {
		t.Fatalf("parsed %+v", c)
	}
	if !strings.Contains(out, `read "-node-name=n1" as "--node-name=n1"`) || strings.Contains(out, "encap-mode") {
		t.Errorf("warnings:\n%s", out)
	}
	// Unknown names and what follows "--" are left as they are: pflag refuses them.
	if _, _, err := command(t, "-no-such-flag=1"); err == nil {
		t.Error("-no-such-flag=1 accepted")
	}
	if _, _, err := command(t, "--", "-mtu=1400"); err == nil {
		t.Error("an argument after -- accepted")
	}
}

// Main's exit codes and messages: usage errors (unknown flag, stray argument, invalid values in
// --validate-flags mode) exit 2 naming --help; --help, --version and valid flags exit 0.
func TestMainExitCodes(t *testing.T) {
	t.Setenv("NODE_NAME", "env-node")
	for _, tc := range []struct {
		args []string
		code int
		want string // in stdout + stderr
	}{
		{[]string{"--no-such-flag", "--validate-flags"}, 2, "unknown flag: --no-such-flag (see 'edgeplane-agent --help')"},
		{[]string{"node-name=n1", "--validate-flags"}, 2, `unexpected arguments ["node-name=n1"]`},
		{[]string{"--mtu=1", "--validate-flags"}, 2, "invalid flags: --mtu 1 is out of range"},
		{[]string{"--validate-flags"}, 0, ""},
		{[]string{"--version"}, 0, "edgeplane-agent v1.0.0\n"},
		{[]string{"-h"}, 0, "Logging flags (klog):"},
	} {
		var out bytes.Buffer
		if code := Main(t.Context(), tc.args, &out, &out, "v1.0.0"); code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%q: exit %d, want %d, output %q, want %q in it", tc.args, code, tc.code, out.String(), tc.want)
		}
	}
}
