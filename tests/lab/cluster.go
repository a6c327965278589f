package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The lab's kubelet-cluster mode (docs/kubelet-lab.md, "A cluster of kubelet nodes"): real nodes,
// each a network namespace plus a mount namespace (mountns.go) running containerd and a kubelet
// that registers its Node; kube-controller-manager with its default controllers and node IPAM (pod
// CIDRs come from it, as on kubeadm clusters), kube-scheduler, no kube-proxy; edgeplane installed
// only as docs/install.md tells a user (its image imported into each node's containerd, then
// `kubectl apply -k` of an overlay of deploy/base, the nodes labelled, the rollout awaited), and
// CoreDNS as a Deployment behind kube-system/kube-dns. The harness starts no agent in this mode.

// Environment for the cluster mode's images: the edgeplane image tarball (`make image`'s amd64
// tarball) and CoreDNS's (the e2e helper's scripts build it).
const (
	EnvEdgeplaneImage = "EDGEPLANE_IMAGE"
	EnvCoreDNSImage   = "EDGEPLANE_COREDNS_IMAGE"
	// EnvE2EImages is the e2e image tarballs, one a line (scripts/build-e2e-images.sh prints
	// them; make test sets it): CoreDNS's is the one named coredns.tar, when
	// EDGEPLANE_COREDNS_IMAGE is unset.
	EnvE2EImages = "E2E_IMAGES"
)

// KubeDNSIP is the kube-dns Service's address, every kubelet's clusterDNS.
var KubeDNSIP = netip.MustParseAddr("10.96.0.10")

// ClusterNodeSpec is one node of a cluster.
type ClusterNodeSpec struct {
	Name   string
	Domain string // DomainCloud, DomainSiteA, DomainSiteB ("" is the cloud)
	// Zone is the node's topology.kubernetes.io/zone label ("" is the domain's name).
	Zone string
}

// DefaultClusterNodes are node1 and node2 in the cloud and node3 in site-a, which the lab's
// private line joins to the cloud; each in a zone of its own (zone-a, zone-b, zone-c), for the
// e2e specs that want nodes in several zones (traffic distribution, topology hints).
var DefaultClusterNodes = []ClusterNodeSpec{
	{"node1", DomainCloud, "zone-a"},
	{"node2", DomainCloud, "zone-b"},
	{"node3", DomainSiteA, "zone-c"},
}

// ClusterOptions say what StartCluster builds.
type ClusterOptions struct {
	// Nodes default to DefaultClusterNodes. Each domain is one node pool of the domain's name
	// (label apps.openyurt.io/nodepool).
	Nodes []ClusterNodeSpec
	// PauseImage is the pause image tarball (EDGEPLANE_PAUSE_IMAGE when empty).
	PauseImage string
	// EdgeplaneImage is edgeplane's image tarball (EDGEPLANE_IMAGE when empty; with neither,
	// BuildEdgeplaneImage builds one from the checkout into the cluster's dir).
	EdgeplaneImage string
	// CoreDNSImage is CoreDNS's image tarball (EDGEPLANE_COREDNS_IMAGE, or the coredns.tar of
	// E2E_IMAGES, when empty); NoCoreDNS
	// leaves CoreDNS out.
	CoreDNSImage string
	NoCoreDNS    bool
	// DeployBase is deploy/base of the checkout (found from the working directory when empty).
	DeployBase string
}

// Cluster is a running kubelet cluster on a lab.
type Cluster struct {
	Lab   *Lab
	Nodes []*KubeletNode
	// Kubeconfig is the admin kubeconfig, for use inside APINetns (Kubectl does).
	Kubeconfig string
	APINetns   Netns
	// Dir is <lab dir>/cluster: the overlay (Overlay), the base it copies.
	Dir string
	// Overlay is the kustomization `kubectl apply -k` installs edgeplane from.
	Overlay string
	// EdgeplaneImageRef is the reference the imported edgeplane image carries.
	EdgeplaneImageRef string
	// CoreDNSImageRef is CoreDNS's, "" without CoreDNS.
	CoreDNSImageRef string
	// NotReadyBeforeInstall is each node's Ready condition message just before edgeplane was
	// installed (kubelet's "cni plugin not initialized"), or "" for a node that was Ready.
	NotReadyBeforeInstall map[string]string
	// Timings of the bring-up phases, for the logs and docs.
	Timings []Timing

	kubectl string
}

// Timing is how long a phase of the bring-up took.
type Timing struct {
	Phase    string
	Duration time.Duration
}

// StartCluster brings the cluster up on l (a fresh lab: its domains are built for the nodes
// outside the cloud). On error everything is left to the lab's Close (its caller's), with the
// logs kept.
func (l *Lab) StartCluster(ctx context.Context, opts ClusterOptions) (_ *Cluster, err error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.KeepLogs()
		}
	}()
	if len(opts.Nodes) == 0 {
		opts.Nodes = DefaultClusterNodes
	}
	if opts.PauseImage == "" {
		opts.PauseImage = os.Getenv(EnvPauseImage)
	}
	if opts.EdgeplaneImage == "" {
		opts.EdgeplaneImage = os.Getenv(EnvEdgeplaneImage)
	}
	if opts.CoreDNSImage == "" && !opts.NoCoreDNS {
		opts.CoreDNSImage = os.Getenv(EnvCoreDNSImage)
		if opts.CoreDNSImage == "" {
			// make test's list of the e2e images (scripts/build-e2e-images.sh), one a line.
			for _, p := range strings.Fields(os.Getenv(EnvE2EImages)) {
				if filepath.Base(p) == "coredns.tar" {
					opts.CoreDNSImage = p
				}
			}
		}
	}
	if opts.DeployBase == "" {
		if opts.DeployBase, err = findDeployBase(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Lab: l, APINetns: l.API.Netns, Dir: filepath.Join(l.Dir, "cluster"), kubectl: filepath.Join(l.cfg.K8sBin, "kubectl")}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	if opts.EdgeplaneImage == "" {
		opts.EdgeplaneImage = filepath.Join(c.Dir, "edgeplane-image.tar")
		start := time.Now()
		if err := BuildEdgeplaneImage(ctx, l.cfg, filepath.Dir(filepath.Dir(opts.DeployBase)), opts.EdgeplaneImage); err != nil {
			return nil, err
		}
		l.Logf("lab %s: cluster: built edgeplane's image (%s) in %v", l.ID, EdgeplaneImageRef, time.Since(start).Round(time.Millisecond))
	}
	for env, path := range map[string]string{EnvPauseImage: opts.PauseImage, EnvEdgeplaneImage: opts.EdgeplaneImage} {
		if path == "" {
			return nil, fmt.Errorf("the cluster needs %s (an image tarball)", env)
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%s: %w", env, err)
		}
	}
	if !opts.NoCoreDNS && opts.CoreDNSImage == "" {
		return nil, fmt.Errorf("the cluster needs %s (CoreDNS's image tarball: scripts/build-e2e-images.sh prints it) or %s, or NoCoreDNS", EnvCoreDNSImage, EnvE2EImages)
	}
	for _, b := range []string{"kubectl", "kube-scheduler", "kube-controller-manager", "kubelet"} {
		if _, err := os.Stat(filepath.Join(l.cfg.K8sBin, b)); err != nil {
			return nil, fmt.Errorf("%s: %w (run scripts/build-k8s.sh %s)", b, err, b)
		}
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := l.API.WriteKubeconfig(c.Kubeconfig); err != nil {
		return nil, err
	}
	start := time.Now()
	phase := start
	mark := func(name string) {
		d := time.Since(phase)
		phase = time.Now()
		c.Timings = append(c.Timings, Timing{name, d})
		l.Logf("lab %s: cluster: %s took %v", l.ID, name, d.Round(time.Millisecond))
	}

	// Pods need their service account (tokens for the agent's in-cluster client).
	if !l.API.ServiceAccounts {
		if err := l.API.restart(ctx, l.Client, true); err != nil {
			return nil, fmt.Errorf("restarting kube-apiserver with the ServiceAccount admission plugin: %w", err)
		}
		mark("kube-apiserver restart (ServiceAccount admission)")
	}

	// Nodes: namespaces on their domains, then containerd + kubelet in each node's mount
	// namespace, in parallel.
	for i, s := range opts.Nodes {
		n, err := l.AddNode(ctx, s.Name, i+1, NodeOptions{Domain: s.Domain, SelfRegister: true})
		if err != nil {
			return nil, err
		}
		k, err := l.newKubeletNode(n)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, k)
	}
	if err := c.onEveryNode(func(i int, k *KubeletNode) error {
		return c.startNode(ctx, k, opts.Nodes[i], opts.PauseImage)
	}); err != nil {
		return nil, err
	}
	if err := c.waitNodes(ctx, "registered", 90*time.Second, func(*corev1.Node) bool { return true }); err != nil {
		return nil, err
	}
	mark("nodes registered")

	// kube-controller-manager after the nodes registered (its node-lifecycle controller and the
	// kubelets' first status updates conflict otherwise), with node IPAM.
	if _, err := l.StartControllerManager(ctx, ControllerManagerOptions{
		Controllers: []string{"*"},
		ExtraArgs: []string{
			"--allocate-node-cidrs=true",
			"--cluster-cidr=" + ClusterCIDR.String(),
			"--node-cidr-mask-size=24",
			"--service-cluster-ip-range=" + ServiceCIDR.String(),
			"--root-ca-file=" + l.API.pki.CACert,
			"--service-account-private-key-file=" + l.API.pki.SAKey,
		},
	}); err != nil {
		return nil, err
	}
	if err := c.waitNodes(ctx, "given a pod CIDR", 60*time.Second, func(n *corev1.Node) bool { return n.Spec.PodCIDR != "" }); err != nil {
		return nil, err
	}
	if err := c.readPodCIDRs(ctx); err != nil {
		return nil, err
	}
	if _, err := l.StartScheduler(ctx); err != nil {
		return nil, err
	}
	if err := c.routeAPIToPods(ctx); err != nil {
		return nil, err
	}
	mark("controller-manager, pod CIDRs, scheduler")

	// edgeplane, the documented way. Until its conflist is on a node, the node is NotReady.
	c.NotReadyBeforeInstall = map[string]string{}
	for _, k := range c.Nodes {
		n, err := l.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if !nodeReady(n) {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					c.NotReadyBeforeInstall[k.Name] = cond.Message
				}
			}
		}
	}
	refs, err := c.ImportImages(ctx, opts.EdgeplaneImage)
	if err != nil {
		return nil, err
	}
	c.EdgeplaneImageRef = refs[0]
	mark("edgeplane image imported")
	if err := c.writeOverlay(opts.DeployBase, c.EdgeplaneImageRef); err != nil {
		return nil, err
	}
	if out, err := c.Kubectl(ctx, "apply", "-k", c.Overlay); err != nil {
		return nil, fmt.Errorf("installing edgeplane: %w: %s", err, out)
	}
	if out, err := c.Kubectl(ctx, "label", "nodes", "--all", "edgeplane.io/agent=true"); err != nil {
		return nil, fmt.Errorf("labelling the nodes: %w: %s", err, out)
	}
	if err := c.RolloutStatus(ctx, "edgeplane-system", "daemonset/edgeplane-agent", 3*time.Minute); err != nil {
		return nil, err
	}
	if err := c.waitNodes(ctx, "Ready", 90*time.Second, nodeReady); err != nil {
		return nil, err
	}
	mark("edgeplane installed, nodes Ready")

	if !opts.NoCoreDNS {
		refs, err := c.ImportImages(ctx, opts.CoreDNSImage)
		if err != nil {
			return nil, err
		}
		c.CoreDNSImageRef = refs[0]
		if err := c.installCoreDNS(ctx); err != nil {
			return nil, err
		}
		mark("CoreDNS")
	}
	l.Logf("lab %s: cluster of %d nodes up after %v", l.ID, len(c.Nodes), time.Since(start).Round(time.Millisecond))
	return c, nil
}

// startNode builds k's mount namespace and starts its containerd and kubelet. The node's
// /opt/cni/bin starts with the loopback plugin only, which containerd's CRI runs for every sandbox
// (the runtime's package ships it on a real node); the rest comes from edgeplane-install.
func (c *Cluster) startNode(ctx context.Context, k *KubeletNode, s ClusterNodeSpec, pauseTar string) error {
	l, n := c.Lab, k.Node
	mntns, err := k.makeMountNS(ctx)
	if err != nil {
		return err
	}
	if err := copyFile(filepath.Join(l.cfg.CNIPluginsBin, "loopback"), filepath.Join(k.NodeRoot("/opt/cni/bin"), "loopback"), 0o755); err != nil {
		return err
	}
	zone := s.Zone
	if zone == "" {
		zone = n.Domain
	}
	// The kubelet's own credentials (the Node authorizer's system:node:<name>); a site reaches
	// the API server at its public address.
	kubeconfig := filepath.Join(k.Dir, "kubelet.kubeconfig")
	server := l.API.URL
	if n.Domain != DomainCloud {
		server = l.API.PublicURL
	}
	if err := l.API.writeComponentKubeconfig(kubeconfig, server, "system:node:"+n.Name, "system:nodes"); err != nil {
		return err
	}
	return k.start(ctx, pauseTar, kubeletSpec{
		mountNS:    mntns,
		cniBinDir:  "/opt/cni/bin",
		cniConfDir: "/etc/cni/net.d",
		rootDir:    "/var/lib/kubelet",
		podLogsDir: "/var/log/pods",
		certDir:    "/var/lib/kubelet/pki",
		kubeconfig: kubeconfig,
		nodeLabels: map[string]string{
			"apps.openyurt.io/nodepool":   n.Domain,
			"topology.kubernetes.io/zone": zone,
		},
		config: fmt.Sprintf(`address: 0.0.0.0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %q
authorization:
  mode: Webhook
localStorageCapacityIsolation: true
clusterDNS: [%q]
clusterDomain: cluster.local
`, l.API.pki.CACert, KubeDNSIP),
	})
}

// Close tears down the cluster's lab (the cluster is the lab's: its nodes, control plane and
// namespaces all go).
func (c *Cluster) Close() { c.Lab.Close() }

// findDeployBase finds deploy/base upwards from the working directory (a test runs in its
// package directory).
func findDeployBase() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "deploy", "base", "kustomization.yaml")
		if _, err := os.Stat(p); err == nil {
			return filepath.Dir(p), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("deploy/base not found above the working directory: set ClusterOptions.DeployBase")
		}
		dir = parent
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}
