package agent

import (
	"flag"
	"net/netip"
	"strings"
	"testing"
	"time"

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
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
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
