package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The lab's made-up address plan. None of it exists outside the lab's namespaces. UnderlayNet is
// the cloud domain's network; domains.go has the other domains and the public addresses.
var (
	UnderlayNet  = netip.MustParsePrefix("172.30.0.0/24")
	APIServerIP  = netip.MustParseAddr("172.30.0.2")
	OutsideIP    = netip.MustParseAddr("172.30.0.100")
	ClusterCIDR  = netip.MustParsePrefix("10.244.0.0/16")
	ServiceCIDR  = netip.MustParsePrefix("10.96.0.0/12")
	UnderlayMTU  = 1500
	switchBridge = "br0"
)

// NodeIP is the underlay address of node number n (1-based) in the cloud domain: 172.30.0.(10+n).
// DomainNodeIP gives it in any domain.
func NodeIP(n int) netip.Addr { return DomainNodeIP(DomainCloud, n) }

// NodePodCIDR is the pod CIDR the harness gives node number n: 10.244.n.0/24.
func NodePodCIDR(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(n), 0}), 24)
}

// Env names of the binaries' directories; `make test` sets them.
const (
	EnvEdgeplaneBin  = "EDGEPLANE_BIN"
	EnvK8sBin        = "K8S_BIN"
	EnvCNIPluginsBin = "CNI_PLUGINS_BIN"
	// EnvKeep, when set, keeps every lab's directory (logs, run dirs) after Close, not only a
	// failed one's.
	EnvKeep = "EDGEPLANE_LAB_KEEP"
)

// Config says where the binaries are and where the lab keeps its files.
type Config struct {
	EdgeplaneBin  string // edgeplane-agent, edgeplane-cni
	K8sBin        string // etcd, kube-apiserver
	CNIPluginsBin string // host-local, portmap, bandwidth, loopback
	// BaseDir is where the lab directory is created (default os.TempDir()).
	BaseDir string
	// ServiceAccountAdmission starts kube-apiserver with the ServiceAccount admission plugin on:
	// Pods then need their namespace's service account, which only kube-controller-manager's
	// service-account controller creates (StartCluster). Off, the lab makes Pods without it.
	ServiceAccountAdmission bool
	// Logf receives progress lines (default: discarded).
	Logf func(format string, args ...any)
}

// ErrNotRoot is returned by CheckEnv when the process cannot build namespaces.
var ErrNotRoot = errors.New("the lab needs root (network namespaces, bpffs mounts, BPF)")

// ConfigFromEnv reads the binary directories from EDGEPLANE_BIN, K8S_BIN and CNI_PLUGINS_BIN and
// checks the binaries are there. The error tells how to get them: run `make test`.
func ConfigFromEnv() (Config, error) {
	if os.Geteuid() != 0 {
		return Config{}, ErrNotRoot
	}
	c := Config{
		EdgeplaneBin:  os.Getenv(EnvEdgeplaneBin),
		K8sBin:        os.Getenv(EnvK8sBin),
		CNIPluginsBin: os.Getenv(EnvCNIPluginsBin),
	}
	want := map[string][]string{
		EnvEdgeplaneBin:  {c.EdgeplaneBin, "edgeplane-agent", "edgeplane-cni"},
		EnvK8sBin:        {c.K8sBin, "etcd", "kube-apiserver"},
		EnvCNIPluginsBin: {c.CNIPluginsBin, "host-local", "portmap", "bandwidth", "loopback"},
	}
	var errs []error
	for _, env := range []string{EnvEdgeplaneBin, EnvK8sBin, EnvCNIPluginsBin} {
		dir := want[env][0]
		if dir == "" {
			errs = append(errs, fmt.Errorf("%s is not set", env))
			continue
		}
		for _, bin := range want[env][1:] {
			if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
				errs = append(errs, fmt.Errorf("%s=%s: %w", env, dir, err))
			}
		}
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("the end-to-end lab needs the built binaries: run `make test` (or `make demo`; or set %s, %s and %s as the Makefile does): %w",
			EnvEdgeplaneBin, EnvK8sBin, EnvCNIPluginsBin, errors.Join(errs...))
	}
	return c, nil
}

// Lab is one running lab: its namespaces, the API server, the nodes and the pods.
type Lab struct {
	ID      string // "ep" + 4 hex digits; prefix of every namespace name
	Dir     string // lab directory: logs, PKI, node run dirs, bpffs mounts
	Switch  Netns
	API     *APIServer
	Outside Netns
	Client  kubernetes.Interface

	cfg       Config
	mu        sync.Mutex
	closers   []func()
	nodes     map[string]*Node
	pods      map[string]*Pod
	podSeq    int
	portSeq   int
	keepDir   bool
	closed    bool
	closeOnce sync.Once
	pluginDir string

	// netMu serializes what changes the underlay beyond one host: the domains' bridges, the
	// router and its iptables rules (domains.go).
	netMu  sync.Mutex
	router Netns           // "" until the domains are built
	hosts  []*underlayHost // every host plugged into a domain's bridge, in order
	lines  map[string]bool // private line chain -> up
	// segment2: site-a's second segment and the router's leg on it are built (routesite.go).
	segment2 bool
	gateway  *Gateway // bird2 in the router, once StartGateway ran (gateway.go)
}

// New builds the switch, the API namespace with etcd and kube-apiserver (ready), and the outside
// host. On error everything already built is torn down.
func New(ctx context.Context, cfg Config) (l *Lab, err error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.BaseDir == "" {
		cfg.BaseDir = os.TempDir()
	}
	var rnd [2]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	id := "ep" + hex.EncodeToString(rnd[:])
	dir, err := os.MkdirTemp(cfg.BaseDir, "edgeplane-lab-"+id+"-")
	if err != nil {
		return nil, err
	}
	// scripts/lab-clean.sh leaves a lab alone while its owner lives.
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	l = &Lab{ID: id, Dir: dir, cfg: cfg, nodes: map[string]*Node{}, pods: map[string]*Pod{}, lines: map[string]bool{}}
	l.keepDir = os.Getenv(EnvKeep) != ""
	l.onClose(func() {
		if !l.keepDir {
			os.RemoveAll(dir)
		}
	})
	defer func() {
		if err != nil {
			l.KeepLogs()
			l.Close()
			err = fmt.Errorf("%w (lab files kept in %s)", err, dir)
		}
	}()
	start := time.Now()
	cfg.Logf("lab %s: building in %s", id, dir)

	if err := l.makePluginDir(); err != nil {
		return nil, err
	}
	if l.Switch, err = l.addNetns(ctx, "sw"); err != nil {
		return nil, err
	}
	if _, err := l.Switch.IP(ctx, "link", "add", switchBridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if _, err := l.Switch.IP(ctx, "link", "set", switchBridge, "up"); err != nil {
		return nil, err
	}

	apiNS, err := l.addNetns(ctx, "api")
	if err != nil {
		return nil, err
	}
	if err := l.attach(ctx, apiNS, "api", APIServerIP); err != nil {
		return nil, err
	}
	if err := l.joinUnderlay(ctx, &underlayHost{netns: apiNS, domain: cloudDomain, ip: APIServerIP, public: APIServerPublicIP}); err != nil {
		return nil, err
	}
	if l.Outside, err = l.addNetns(ctx, "out"); err != nil {
		return nil, err
	}
	if err := l.attach(ctx, l.Outside, "out", OutsideIP); err != nil {
		return nil, err
	}
	if err := l.joinUnderlay(ctx, &underlayHost{netns: l.Outside, domain: cloudDomain, ip: OutsideIP}); err != nil {
		return nil, err
	}

	if l.API, err = startAPIServer(ctx, l, apiNS, net.IP(APIServerIP.AsSlice())); err != nil {
		return nil, err
	}
	if l.Client, err = kubernetes.NewForConfig(l.API.RESTConfig()); err != nil {
		return nil, err
	}
	if err := l.API.waitReady(ctx, l.Client); err != nil {
		return nil, err
	}
	if err := l.waitNamespace(ctx, "default"); err != nil {
		return nil, err
	}
	// Where deploy/ installs the agent, its domain ConfigMap and its reporter Lease: the agents'
	// defaults (--domain-config, --reporter-lease) name it.
	if err := l.waitNamespace(ctx, AgentNamespace); err != nil {
		return nil, err
	}
	cfg.Logf("lab %s: API server ready at %s after %v", id, l.API.URL, time.Since(start).Round(time.Millisecond))
	return l, nil
}

// AgentNamespace is the agent's namespace as deploy/ installs it; lab agents run without
// $POD_NAMESPACE, so their defaults name it too.
const AgentNamespace = "edgeplane-system"

// ErrClosed is returned when something is added to a lab that has been torn down.
var ErrClosed = errors.New("lab is closed")

func (l *Lab) checkOpen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return nil
}

// Logf writes a progress line through the configured logger.
func (l *Lab) Logf(format string, args ...any) { l.cfg.Logf(format, args...) }

// Config is the configuration the lab was built with.
func (l *Lab) Config() Config { return l.cfg }

// KeepLogs keeps the lab directory (logs, run dirs) after Close, for a failed run.
func (l *Lab) KeepLogs() {
	l.mu.Lock()
	l.keepDir = true
	l.mu.Unlock()
}

// Close tears the lab down in reverse order of creation. Safe to call more than once and from
// several goroutines: every call returns once the teardown is complete.
func (l *Lab) Close() { l.closeOnce.Do(l.close) }

func (l *Lab) close() {
	l.mu.Lock()
	l.closed = true
	closers := l.closers
	l.closers = nil
	l.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
}

// onClose registers fn to run at Close; once the lab is closed (a test goroutine racing an
// emergency teardown) fn runs at once, so nothing created late is left behind.
func (l *Lab) onClose(fn func()) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		fn()
		return
	}
	l.closers = append(l.closers, fn)
	l.mu.Unlock()
}

// addNetns creates "<id>-<role>" and registers its deletion.
func (l *Lab) addNetns(ctx context.Context, role string) (Netns, error) {
	ns, err := addNetns(ctx, l.ID+"-"+role)
	if err != nil {
		return "", err
	}
	l.onClose(func() {
		if err := deleteNetns(ns); err != nil {
			l.Logf("lab %s: %v", l.ID, err)
		}
	})
	return ns, nil
}

// attach plugs ns into the cloud domain's bridge: eth0 in ns (MTU 1500, addr/24), its peer <port>
// enslaved to br0. The veth is created directly between the two lab namespaces.
func (l *Lab) attach(ctx context.Context, ns Netns, port string, addr netip.Addr) error {
	return l.plug(ctx, ns, "eth0", port, addr, cloudDomain)
}

// plug connects ns to domain d's bridge: ifname in ns (MTU 1500, addr with the domain's prefix
// length), its peer <port> in the switch namespace enslaved to the domain's bridge.
func (l *Lab) plug(ctx context.Context, ns Netns, ifname, port string, addr netip.Addr, d domain) error {
	steps := [][]string{
		{"link", "add", ifname, "mtu", fmt.Sprint(UnderlayMTU), "type", "veth", "peer", "name", port, "mtu", fmt.Sprint(UnderlayMTU), "netns", l.Switch.Name()},
		{"addr", "add", netip.PrefixFrom(addr, d.net.Bits()).String(), "dev", ifname},
		{"link", "set", ifname, "up"},
	}
	for _, s := range steps {
		if _, err := ns.IP(ctx, s...); err != nil {
			return err
		}
	}
	if _, err := l.Switch.IP(ctx, "link", "set", port, "master", d.bridge, "up"); err != nil {
		return err
	}
	return nil
}

func (l *Lab) waitNamespace(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := l.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if apierrors.IsNotFound(err) {
			_, err = l.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s: %w", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// makePluginDir holds the CNI plugins under the names a conflist uses: "edgeplane" is
// edgeplane-cni (as the deploy manifests install it), the rest are the reference plugins.
func (l *Lab) makePluginDir() error {
	l.pluginDir = filepath.Join(l.Dir, "cni-bin")
	if err := os.MkdirAll(l.pluginDir, 0o755); err != nil {
		return err
	}
	links := map[string]string{"edgeplane": filepath.Join(l.cfg.EdgeplaneBin, "edgeplane-cni")}
	for _, p := range []string{"host-local", "portmap", "bandwidth", "loopback"} {
		links[p] = filepath.Join(l.cfg.CNIPluginsBin, p)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(l.pluginDir, name)); err != nil {
			return err
		}
	}
	return nil
}

// mountBPFFS mounts a private bpffs instance at dir and registers its unmount.
func (l *Lab) mountBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := syscall.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting bpffs at %s: %w", dir, err)
	}
	l.onClose(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			l.Logf("lab %s: unmounting %s: %v", l.ID, dir, err)
		}
	})
	return nil
}
