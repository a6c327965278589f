// Package agent is edgeplane-agent: it registers this node (pod CIDR, VXLAN device, Flannel-compatible
// annotations), loads and attaches the datapath, writes node_cfg_map and the CNI plugin's node.json,
// and runs the reconcilers that keep the pinned maps equal to the cluster. Start-up order matters:
// the node config file is written last, once the datapath is attached and every node's route is in
// place, because the CNI plugin treats it as "ready". On SIGTERM the agent stops watching and leaves
// every pin in place, so pods keep forwarding until the next agent adopts them. A periodic pass
// re-converges the device, the datapath attachments and the annotations, repairing outside changes.
package agent

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/edgeplane/edgeplane/pkg/k8s"

	"github.com/spf13/pflag"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/cniconf"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

// Encapsulation modes (--encap-mode).
const (
	EncapNative = "native" // encapsulate in BPF on the underlay NIC
	EncapDevice = "device" // hand to the collect_md VXLAN device with a tunnel key
)

// vxlanOverhead is what VXLAN over IPv4 adds: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
const vxlanOverhead = 50

// Config is the agent's configuration, from flags.
type Config struct {
	Kubeconfig         string
	NodeName           string
	BPFFSRoot          string
	RunDir             string
	SnapshotDir        string // where the snapshot of the last good state is kept (snapshot.go); "" disables
	ClusterCIDR        netip.Prefix
	ServiceCIDR        netip.Prefix
	NodeCIDRMaskSize   int
	UnderlayInterface  string
	VXLANDevice        string
	EncapMode          string
	Masquerade         bool
	NonMasqueradeCIDRs PrefixList
	MTU                int
	IPv4BigTCP         bool // BIG TCP for IPv4 on the underlay NIC and route-mode pods (bigtcp.go)
	MetricsAddr        string
	HealthzBindAddress string // kube-proxy's proxy health server (pkg/svchealth); empty disables
	MetricsBindAddress string // kube-proxy's metrics server (/proxyMode, /metrics, /healthz); empty disables
	Resync             time.Duration
	// APIServerProbe is how often the agent checks that the API server answers (once a second
	// while it does not; docs/autonomy.md).
	APIServerProbe    time.Duration
	ProcSys           string
	DomainConfig      string // namespace/name of the domain ConfigMap
	FlannelSubnetFile string // flanneld's subnet.env, removed when the agent takes over (flannel.go)
	Version           string // the binary's version, for build_info (set by main, not a flag)

	// Service connection tracking's TCP close timeouts (--ct-tcp-*-timeout): written into
	// node_cfg_map for the programs, and used by the garbage collector.
	CTTCPCloseWaitTimeout time.Duration
	CTTCPTimeWaitTimeout  time.Duration
	CTTCPCloseTimeout     time.Duration

	// Who reports problems of cluster-wide objects (Services, the domain ConfigMap, peers' Nodes):
	// the holder of this Lease (namespace/name), renewed within ReporterLeaseDuration.
	ReporterLease         string
	ReporterLeaseDuration time.Duration

	// --uninstall and what it also removes (uninstall.go).
	Uninstall  bool
	CNIConfDir string
	CNIBinDir  string
	// DaemonSet (namespace/name) runs the agent: when it is deleted, the agent uninstalls on its
	// way out instead of leaving its pins (uninstall.go). Empty: always leave them.
	DaemonSet string
}

// RegisterFlags binds the configuration to command-line flags with their defaults (the agent's
// own flags; NewCommand adds klog's and the command's).
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: in-cluster service account")
	fs.StringVar(&c.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&c.BPFFSRoot, "bpffs-root", maps.DefaultRoot, "bpffs directory for pinned maps, programs and links")
	fs.StringVar(&c.RunDir, "run-dir", cninode.DefaultRunDir, "directory of the node config file the CNI plugin reads")
	fs.StringVar(&c.SnapshotDir, "snapshot-dir", "/var/lib/edgeplane", "directory kept across reboots for the snapshot of the last good state, which a node rebooted while cut off from the API server programs its datapath from; empty disables")
	c.ClusterCIDR, c.ServiceCIDR = netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")
	fs.Var((*prefixValue)(&c.ClusterCIDR), "cluster-cidr", "cluster pod CIDR")
	fs.Var((*prefixValue)(&c.ServiceCIDR), "service-cidr", "service CIDR")
	fs.IntVar(&c.NodeCIDRMaskSize, "node-cidr-mask-size", 24, "prefix length of node pod CIDRs edgeplane allocates")
	fs.StringVar(&c.UnderlayInterface, "underlay-interface", "", "NIC carrying VXLAN (default: the one holding the node's InternalIP, else the default route's)")
	fs.StringVar(&c.VXLANDevice, "vxlan-device", "edgeplane.1", "name of the collect_md VXLAN device")
	fs.StringVar(&c.EncapMode, "encap-mode", EncapNative, "VXLAN encapsulation: native (in BPF) or device (the kernel VXLAN device)")
	fs.BoolVar(&c.Masquerade, "masquerade", true, "masquerade pod traffic leaving the cluster to the node IP")
	fs.Var(&c.NonMasqueradeCIDRs, "non-masquerade-cidrs", "comma-separated destinations never masqueraded (the cluster CIDR always is)")
	fs.IntVar(&c.MTU, "mtu", 0, "pod MTU (default: underlay MTU - 50)")
	fs.BoolVar(&c.IPv4BigTCP, "ipv4-big-tcp", false, "BIG TCP for IPv4 (Linux 6.3+): raise the underlay NIC's IPv4 GSO/GRO size to 192 KiB, and new pods' in a route-mode domain, whose packets leave unencapsulated; needs a NIC whose TSO takes such packets (docs/domains.md)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:9962", "address serving /metrics, /healthz and /readyz; empty disables")
	fs.StringVar(&c.HealthzBindAddress, "healthz-bind-address", "0.0.0.0:10256", "address of kube-proxy's health server (/healthz, /livez) that cloud load balancers probe; empty disables")
	fs.StringVar(&c.MetricsBindAddress, "metrics-bind-address", "127.0.0.1:10249", "address of kube-proxy's metrics server (/proxyMode answering \""+proxyMode+"\", /metrics, /healthz), which tools and the Kubernetes e2e tests query on nodes without kube-proxy; empty disables")
	fs.DurationVar(&c.CTTCPCloseWaitTimeout, "ct-tcp-close-wait-timeout", lb.CTTimeoutTCPCloseWait*time.Second, "how long a Service TCP connection half-closed by one side (a FIN from one side only; the other side may still send) stays tracked after its last packet; kube-proxy's --conntrack-tcp-timeout-close-wait (rounded up to seconds)")
	fs.DurationVar(&c.CTTCPTimeWaitTimeout, "ct-tcp-time-wait-timeout", lb.CTTimeoutTCPTimeWait*time.Second, "how long a Service TCP connection closed by both sides (FINs both ways) stays tracked after its last packet, for late ACKs and retransmitted FINs; Linux conntrack's TIME_WAIT (rounded up to seconds)")
	fs.DurationVar(&c.CTTCPCloseTimeout, "ct-tcp-close-timeout", lb.CTTimeoutTCPClose*time.Second, "how long a Service TCP connection reset by either side (RST) stays tracked after its last packet; Linux conntrack's CLOSE (rounded up to seconds)")
	fs.DurationVar(&c.Resync, "resync-period", 30*time.Second, "period of full reconciliation passes")
	fs.DurationVar(&c.APIServerProbe, "apiserver-probe-interval", k8s.DefaultProbeInterval, "how often the agent checks that the API server answers (GET /version); once a second while it does not, so the end of a partition is noticed within a second (docs/autonomy.md)")
	fs.StringVar(&c.ProcSys, "proc-sys", netdev.DefaultProcSys, "the host's /proc/sys (a container mounts the host's /proc/sys/net elsewhere, e.g. /host/proc/sys)")
	fs.StringVar(&c.FlannelSubnetFile, "flannel-subnet-file", "/run/flannel/subnet.env", "flanneld's subnet file, removed when it describes this node's pod CIDR (a node moving from Flannel, docs/install.md); empty: leave it")
	fs.BoolVar(&c.Uninstall, "uninstall", false, "remove what edgeplane put on this node (pins, vxlan device, node.json, its Node's VTEP annotations), then exit")
	fs.StringVar(&c.DaemonSet, "daemonset", "", "namespace/name of the DaemonSet running this agent: when it is deleted (kubectl delete -k/-f; not on a rolling update, an eviction or a restart), the agent uninstalls from the node on SIGTERM, as --uninstall; empty: it always leaves its pins")
	fs.StringVar(&c.CNIConfDir, "cni-conf-dir", "", "when uninstalling: also remove "+cniconf.ConflistName+" from this directory (empty: leave it)")
	fs.StringVar(&c.CNIBinDir, "cni-bin-dir", "", "when uninstalling: also remove the "+cniconf.PluginType+" plugin from this directory (empty: leave it)")
	c.registerClusterFlags(fs)
}

// registerClusterFlags binds the flags about cluster-wide objects: the domain ConfigMap and the
// reporter Lease, both in the agent's namespace by default.
func (c *Config) registerClusterFlags(fs *pflag.FlagSet) {
	ns := AgentNamespace()
	fs.StringVar(&c.DomainConfig, "domain-config", ns+"/"+DomainConfigName, "namespace/name of the ConfigMap that groups node pools into network domains and sets their connectivity (docs/domains.md; default: in the agent's namespace, $POD_NAMESPACE, else "+DefaultNamespace+"); a missing ConfigMap (or an empty flag) means every pool is its own domain and all pairs are public, which the agent logs at start")
	fs.StringVar(&c.ReporterLease, "reporter-lease", ns+"/"+ReporterLeaseName, "namespace/name of the Lease whose holder alone records events about cluster-wide objects (Services, the domain ConfigMap, other nodes); empty: every agent records them")
	fs.DurationVar(&c.ReporterLeaseDuration, "reporter-lease-duration", 15*time.Second, "how long the reporter Lease lasts without renewal: another agent takes over within about this long after its holder dies")
}

// The agent's namespace when $POD_NAMESPACE (the downward API's metadata.namespace) is not set,
// and the names of the objects it finds there.
const (
	DefaultNamespace  = "edgeplane-system"
	DomainConfigName  = "edgeplane-domains"
	ReporterLeaseName = "edgeplane-agent-reporter"
)

// AgentNamespace is the namespace the agent runs in: $POD_NAMESPACE, else edgeplane-system.
func AgentNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return DefaultNamespace
}

// Validate checks what can be checked before touching the host or the API server.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required"))
	}
	for name, p := range map[string]netip.Prefix{"--cluster-cidr": c.ClusterCIDR, "--service-cidr": c.ServiceCIDR} {
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
			errs = append(errs, fmt.Errorf("%s %s must be an IPv4 network address with its prefix length", name, p))
		}
	}
	if c.ClusterCIDR.IsValid() && (c.NodeCIDRMaskSize < c.ClusterCIDR.Bits() || c.NodeCIDRMaskSize > 30) {
		errs = append(errs, fmt.Errorf("--node-cidr-mask-size %d must be between the cluster CIDR's /%d and 30", c.NodeCIDRMaskSize, c.ClusterCIDR.Bits()))
	}
	if c.EncapMode != EncapNative && c.EncapMode != EncapDevice {
		errs = append(errs, fmt.Errorf("--encap-mode %q: want %s or %s", c.EncapMode, EncapNative, EncapDevice))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("--mtu %d is out of range 576-65535", c.MTU))
	}
	if c.BPFFSRoot == "" || c.RunDir == "" || c.VXLANDevice == "" || c.ProcSys == "" {
		errs = append(errs, errors.New("--bpffs-root, --run-dir, --vxlan-device and --proc-sys must not be empty"))
	}
	if c.HealthzBindAddress != "" {
		if _, _, err := net.SplitHostPort(c.HealthzBindAddress); err != nil {
			errs = append(errs, fmt.Errorf("--healthz-bind-address %q: want host:port: %w", c.HealthzBindAddress, err))
		}
	}
	if c.MetricsBindAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsBindAddress); err != nil {
			errs = append(errs, fmt.Errorf("--metrics-bind-address %q: want host:port: %w", c.MetricsBindAddress, err))
		}
	}
	for name, d := range map[string]time.Duration{"--ct-tcp-close-wait-timeout": c.CTTCPCloseWaitTimeout,
		"--ct-tcp-time-wait-timeout": c.CTTCPTimeWaitTimeout, "--ct-tcp-close-timeout": c.CTTCPCloseTimeout} {
		if d < time.Second || d > math.MaxUint32*time.Second {
			errs = append(errs, fmt.Errorf("%s %s: want between 1s and %ds", name, d, uint32(math.MaxUint32)))
		}
	}
	if c.Resync <= 0 {
		errs = append(errs, errors.New("--resync-period must be positive"))
	}
	if _, _, err := c.DomainConfigRef(); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := c.ReporterLeaseRef(); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := c.DaemonSetRef(); err != nil {
		errs = append(errs, err)
	}
	if c.ReporterLeaseDuration < 2*time.Second {
		errs = append(errs, fmt.Errorf("--reporter-lease-duration %v: want at least 2s", c.ReporterLeaseDuration))
	}
	return errors.Join(errs...)
}

// CTCloseTimeouts are the --ct-tcp-*-timeout flags.
func (c *Config) CTCloseTimeouts() lb.CTCloseTimeouts {
	return lb.CTCloseTimeouts{CloseWait: c.CTTCPCloseWaitTimeout, TimeWait: c.CTTCPTimeWaitTimeout, Close: c.CTTCPCloseTimeout}
}

// DomainConfigRef splits --domain-config into namespace and name; both are empty when the flag is
// (no ConfigMap: the default model).
func (c *Config) DomainConfigRef() (namespace, name string, err error) {
	return splitRef("--domain-config", c.DomainConfig)
}

// DaemonSetRef splits --daemonset; both are empty when the flag is.
func (c *Config) DaemonSetRef() (namespace, name string, err error) {
	return splitRef("--daemonset", c.DaemonSet)
}

// ReporterLeaseRef splits --reporter-lease; both are empty when the flag is (every agent reports).
func (c *Config) ReporterLeaseRef() (namespace, name string, err error) {
	return splitRef("--reporter-lease", c.ReporterLease)
}

func splitRef(flagName, ref string) (namespace, name string, err error) {
	if ref == "" {
		return "", "", nil
	}
	namespace, name, ok := strings.Cut(ref, "/")
	if !ok || namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%s %q: want namespace/name", flagName, ref)
	}
	return namespace, name, nil
}

// Network is a named address range that must not overlap another.
type Network struct {
	Name   string
	Prefix netip.Prefix
}

// CheckOverlaps refuses overlapping networks, naming both.
func CheckOverlaps(nets ...Network) error {
	var errs []error
	for i, a := range nets {
		for _, b := range nets[i+1:] {
			if a.Prefix.Overlaps(b.Prefix) {
				errs = append(errs, fmt.Errorf("the %s %s overlaps the %s %s: choose ranges that do not overlap",
					a.Name, a.Prefix, b.Name, b.Prefix))
			}
		}
	}
	return errors.Join(errs...)
}

// PrefixList is a comma-separated list of IPv4 prefixes as a flag.
type PrefixList []netip.Prefix

func (l *PrefixList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Type names the flag's value in --help.
func (l *PrefixList) Type() string { return "cidrs" }

// Set parses the flag's value, replacing the list.
func (l *PrefixList) Set(v string) error {
	var out PrefixList
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("%q is not an IPv4 prefix", f)
		}
		out = append(out, p.Masked())
	}
	*l = out
	return nil
}

// prefixValue is a netip.Prefix as a flag (pflag.TextVar would name no type in --help).
type prefixValue netip.Prefix

func (p *prefixValue) String() string { return netip.Prefix(*p).String() }

// Set parses the flag's value as netip.Prefix's text (empty: the zero prefix, which Validate
// refuses, as it checks the rest: IPv4, a network address).
func (p *prefixValue) Set(v string) error { return (*netip.Prefix)(p).UnmarshalText([]byte(v)) }

// Type names the flag's value in --help.
func (p *prefixValue) Type() string { return "cidr" }

// EffectiveFlags is every agent flag (RegisterFlags) with c's value, as the flag would print it:
// the flags are bound to a scratch Config that is then overwritten with c, so a flag added later
// is reported without a change here.
func (c Config) EffectiveFlags() map[string]string {
	var scratch Config
	fs := pflag.NewFlagSet("effective", pflag.ContinueOnError)
	scratch.RegisterFlags(fs)
	scratch = c
	out := map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) { out[f.Name] = f.Value.String() })
	return out
}
