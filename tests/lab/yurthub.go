package lab

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// OpenYurt's YurtHub on a lab node: the node-local proxy and cache through which an OpenYurt edge
// node's components reach the API server (issue 18 item 4, docs/autonomy.md "YurtHub").
//
// StartYurtHub runs the real yurthub (scripts/build-yurthub.sh) in the node's network namespace,
// as OpenYurt runs it on the host: edge working mode, the secure proxy on 169.254.2.1:10268 (the
// address on the namespace's loopback, as this kernel has no dummy links for YurtHub's
// hub-dummy0), its own server on 127.0.0.1. It bootstraps as on a real node: with a bootstrap
// kubeconfig it asks for its client certificate (signer kube-apiserver-client, system:node:<name>
// in openyurt:yurthub) and its serving certificate (signer kubelet-serving) through
// CertificateSigningRequests; the lab approves and signs them with the lab CA, standing in for
// yurt-manager's approver and kube-controller-manager's signers. The ConfigMap
// kube-system/yurt-hub-cfg adds edgeplane-agent to YurtHub's cache agents (only the responses of
// those components are cached on the node's disk).

// EnvYurtHubBin names the directory holding yurthub; `make test` sets it from
// scripts/build-yurthub.sh.
const EnvYurtHubBin = "YURTHUB_BIN"

// YurtHubBinFromEnv reads YURTHUB_BIN and checks that yurthub is there. The error tells how to get
// it.
func YurtHubBinFromEnv() (string, error) {
	dir := os.Getenv(EnvYurtHubBin)
	if dir == "" {
		return "", fmt.Errorf("%s is not set: set it to the output of scripts/build-yurthub.sh (make test does)", EnvYurtHubBin)
	}
	if _, err := os.Stat(filepath.Join(dir, "yurthub")); err != nil {
		return "", fmt.Errorf("%s=%s: %w", EnvYurtHubBin, dir, err)
	}
	return dir, nil
}

// YurtHub addresses inside the node's namespace (OpenYurt's defaults).
var (
	YurtHubDummyIP     = netip.MustParseAddr("169.254.2.1")
	YurtHubSecureProxy = netip.AddrPortFrom(YurtHubDummyIP, 10268)
	yurtHubServer      = netip.MustParseAddrPort("127.0.0.1:10267") // /v1/healthz, /v1/readyz, /metrics
)

// YurtHubCacheAgent is the component name (the User-Agent up to its first '/') under which
// YurtHub caches the agent's responses: pkg/k8s's client sends "edgeplane-agent".
const YurtHubCacheAgent = "edgeplane-agent"

// YurtHubOptions tune a YurtHub; zero values keep OpenYurt's defaults.
type YurtHubOptions struct {
	// HeartbeatInterval is how often YurtHub renews the node's Lease to check the cloud
	// (--heartbeat-interval-seconds, 10 s by default). YurtHub serves from its cache while the
	// cloud is unhealthy and goes back to the API server after HealthyThreshold renewals in a
	// row.
	HeartbeatInterval time.Duration
	// HealthyThreshold is --heartbeat-healthy-threshold (2 by default).
	HealthyThreshold int
}

// YurtHub is yurthub running on a lab node.
type YurtHub struct {
	Node    *Node
	Dir     string // --root-dir: pki/, yurthub.conf, the bootstrap kubeconfig
	Cache   string // --disk-cache-path: the cached responses
	Process *Process
	// DirectKubeconfig is the node's kubeconfig to the API server itself; the node's Kubecfg
	// (what its agent reads) points at YurtHub's secure proxy once YurtHub runs.
	DirectKubeconfig string
	args             []string
	bin              string
	starts           int
}

// StartYurtHub starts yurthub from binDir (YurtHubBinFromEnv) on n, a node added with
// NodeOptions{NoAgent: true} (its Node object exists), signs its certificates, waits until it is
// ready, and points n's agent kubeconfig (n.Kubecfg) at https://169.254.2.1:10268. Start the agent
// after it. The lab's Close stops it.
func (l *Lab) StartYurtHub(ctx context.Context, n *Node, binDir string, opts YurtHubOptions) (*YurtHub, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if err := l.ensureYurtHubConfig(ctx); err != nil {
		return nil, err
	}
	h := &YurtHub{
		Node:             n,
		Dir:              filepath.Join(n.Dir, "yurthub"),
		DirectKubeconfig: filepath.Join(n.Dir, "kubeconfig.direct"),
		bin:              filepath.Join(binDir, "yurthub"),
	}
	h.Cache = filepath.Join(h.Dir, "cache")
	if err := os.MkdirAll(h.Cache, 0o755); err != nil {
		return nil, err
	}
	// The node's kubeconfig (admin credentials, the API server at the address this node reaches)
	// is YurtHub's bootstrap kubeconfig, as yurtadm join writes one with a bootstrap token.
	direct, err := os.ReadFile(n.Kubecfg)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(h.DirectKubeconfig, direct, 0o600); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.Load(direct)
	if err != nil {
		return nil, fmt.Errorf("node %s kubeconfig: %w", n.Name, err)
	}
	server := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster].Server
	bootstrap := filepath.Join(h.Dir, "bootstrap-hub.conf")
	if err := os.WriteFile(bootstrap, direct, 0o600); err != nil {
		return nil, err
	}
	h.args = []string{
		"--node-name=" + n.Name,
		"--node-ip=" + n.IP.String(),
		"--server-addr=" + server,
		"--bootstrap-file=" + bootstrap,
		"--root-dir=" + h.Dir,
		"--disk-cache-path=" + h.Cache,
		"--nodepool-name=" + n.Domain,
		"--working-mode=edge",
		// The filters rewrite Services' endpoints for kube-proxy and CoreDNS (OpenYurt's service
		// topology); edgeplane does topology itself and is not among their components. They also
		// need OpenYurt's NodePool API, which the lab's API server does not have.
		"--enable-resource-filter=false",
		// This kernel has no dummy link type (CONFIG_DUMMY off: "ensure dummy interface failed,
		// operation not supported"), so the lab puts 169.254.2.1 on the node namespace's
		// loopback, where YurtHub's hub-dummy0 would hold it, and YurtHub binds its proxies there.
		"--enable-dummy-if=false",
		"--bind-proxy-address=" + YurtHubDummyIP.String(),
		"--v=2",
	}
	if _, err := n.Netns.Exec(ctx, "ip", "addr", "replace", YurtHubDummyIP.String()+"/32", "dev", "lo"); err != nil {
		return nil, fmt.Errorf("yurthub address on %s: %w", n.Name, err)
	}
	if opts.HeartbeatInterval > 0 {
		h.args = append(h.args, fmt.Sprintf("--heartbeat-interval-seconds=%d", int(opts.HeartbeatInterval.Seconds())))
	}
	if opts.HealthyThreshold > 0 {
		h.args = append(h.args, "--heartbeat-healthy-threshold="+strconv.Itoa(opts.HealthyThreshold))
	}
	signCtx, stopSigning := context.WithCancel(context.WithoutCancel(ctx))
	l.onClose(stopSigning)
	go l.signYurtHubCSRs(signCtx, n.Name)
	if err := h.Start(ctx); err != nil {
		return nil, err
	}
	l.onClose(func() { h.Process.Stop(5 * time.Second) })
	if err := l.writeYurtHubKubeconfig(n.Kubecfg); err != nil {
		return nil, err
	}
	return h, nil
}

// Start starts yurthub (again, after Kill: its certificates and cache stay) and waits until it is
// ready to proxy (/v1/readyz). Ready needs the API server: a YurtHub restarted during a cut is
// not ready until the link returns.
func (h *YurtHub) Start(ctx context.Context) error {
	p, err := h.launch()
	if err != nil {
		return err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		code, body, err := h.Get("/v1/readyz")
		if err == nil && code == http.StatusOK {
			h.Node.lab.Logf("lab %s: yurthub on %s ready after %v", h.Node.lab.ID, h.Node.Name, time.Since(start).Round(time.Millisecond))
			return nil
		}
		if done, werr := p.Exited(); done {
			return fmt.Errorf("yurthub on %s exited (%v); log tail:\n%s", h.Node.Name, werr, p.LogTail(40))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("yurthub on %s not ready after %v (last: %d %q %v); log tail:\n%s",
				h.Node.Name, time.Since(start).Round(time.Second), code, body, err, p.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// launch starts the yurthub process, unless the last one still runs, with a log of its own
// (yurthub.<n>.log in the node's directory) for each start.
func (h *YurtHub) launch() (*Process, error) {
	if h.Process != nil {
		if done, _ := h.Process.Exited(); !done {
			return nil, fmt.Errorf("yurthub on %s is still running", h.Node.Name)
		}
	}
	h.starts++
	logPath := filepath.Join(h.Node.Dir, fmt.Sprintf("yurthub.%d.log", h.starts))
	p, err := startProcess("yurthub@"+h.Node.Name, h.Node.Netns, logPath, h.bin, h.args...)
	if err != nil {
		return nil, err
	}
	h.Process = p
	return p, nil
}

// StartCutOff starts yurthub again after Kill while the API server is unreachable, as a node's
// init does after a reboot during a cut: YurtHub is not ready without the API server, so it waits
// only until the proxy accepts connections on 169.254.2.1:10268.
func (h *YurtHub) StartCutOff(ctx context.Context) error {
	p, err := h.launch()
	if err != nil {
		return err
	}
	start := time.Now()
	for {
		conn, err := DialTCP(h.Node.Netns, YurtHubSecureProxy, time.Second)
		if err == nil {
			conn.Close()
			h.Node.lab.Logf("lab %s: yurthub on %s accepts connections after %v (cut off)", h.Node.lab.ID, h.Node.Name, time.Since(start).Round(time.Millisecond))
			return nil
		}
		if done, werr := p.Exited(); done {
			return fmt.Errorf("yurthub on %s exited (%v); log tail:\n%s", h.Node.Name, werr, p.LogTail(40))
		}
		if time.Since(start) > 60*time.Second {
			return fmt.Errorf("yurthub on %s does not accept connections after 60 s (%v); log tail:\n%s", h.Node.Name, err, p.LogTail(40))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Kill kills yurthub with SIGKILL; its files stay.
func (h *YurtHub) Kill() { h.Process.Kill() }

// Get GETs path from YurtHub's own server (127.0.0.1:10267 in the node's namespace).
func (h *YurtHub) Get(path string) (int, string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return DialTCP(h.Node.Netns, yurtHubServer, time.Second)
		},
	}}
	resp, err := client.Get("http://" + yurtHubServer.String() + path)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s from yurthub on %s: %w", path, h.Node.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// CachedNodes names the Nodes YurtHub holds in its disk cache for the agent (YurtHubCacheAgent):
// what a partition leaves the agent, whatever its informers list from YurtHub then.
func (h *YurtHub) CachedNodes() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(h.Cache, YurtHubCacheAgent, "nodes.v1.core"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") && !strings.HasPrefix(e.Name(), "tmp_") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// CloudHealthy reads node_yurthub_server_healthy_status: whether YurtHub finds the API server
// healthy (it proxies) or not (it serves from its cache). YurtHub exports the gauge from its
// first change on; before that it is healthy.
func (h *YurtHub) CloudHealthy() (bool, error) {
	code, body, err := h.Get("/metrics")
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		return false, fmt.Errorf("yurthub /metrics on %s: %d", h.Node.Name, code)
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "node_yurthub_server_healthy_status{") {
			f := strings.Fields(line)
			return f[len(f)-1] == "1", nil
		}
	}
	return true, nil
}

// ensureYurtHubConfig creates (or updates) kube-system/yurt-hub-cfg so that YurtHub caches the
// agent's responses.
func (l *Lab) ensureYurtHubConfig(ctx context.Context) error {
	cms := l.Client.CoreV1().ConfigMaps(metav1.NamespaceSystem)
	cm := &corev1.ConfigMap{
		// YurtHub watches only ConfigMaps labelled with their name.
		ObjectMeta: metav1.ObjectMeta{Name: "yurt-hub-cfg", Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{"openyurt.io/configmap-name": "yurt-hub-cfg"}},
		Data: map[string]string{"cache_agents": YurtHubCacheAgent},
	}
	// YurtHub forwards every request with its own client certificate (system:node:<name> in
	// openyurt:yurthub), so its group needs what it reads for itself (yurt-hub-cfg) and what the
	// agent does through it; the lab binds the group to cluster-admin (the lab's agents are admins
	// anyway), where OpenYurt installs narrower roles.
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "lab-openyurt-yurthub"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "openyurt:yurthub"}},
	}
	if _, err := l.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding openyurt:yurthub: %w", err)
	}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating yurt-hub-cfg: %w", err)
		}
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating yurt-hub-cfg: %w", err)
		}
	}
	return nil
}

// writeYurtHubKubeconfig writes the agent's kubeconfig through YurtHub: its secure proxy, whose
// serving certificate the lab CA signed. YurtHub forwards with its own client certificate; the
// admin certificate here only authenticates the agent to YurtHub.
func (l *Lab) writeYurtHubKubeconfig(path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["yurthub"] = &clientcmdapi.Cluster{Server: "https://" + YurtHubSecureProxy.String(), CertificateAuthorityData: l.API.pki.caPEM}
	cfg.AuthInfos["lab-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: l.API.pki.adminCertPEM, ClientKeyData: l.API.pki.adminKeyPEM}
	cfg.Contexts["yurthub"] = &clientcmdapi.Context{Cluster: "yurthub", AuthInfo: "lab-admin"}
	cfg.CurrentContext = "yurthub"
	return clientcmd.WriteToFile(*cfg, path)
}

// signYurtHubCSRs approves and signs node's YurtHub certificate requests (client: signer
// kube-apiserver-client; serving: kubelet-serving) until ctx ends, as yurt-manager's CSR approver
// and kube-controller-manager's signers do in an OpenYurt cluster.
func (l *Lab) signYurtHubCSRs(ctx context.Context, node string) {
	csrs := l.Client.CertificatesV1().CertificateSigningRequests()
	done := map[string]bool{}
	for {
		list, err := csrs.List(ctx, metav1.ListOptions{})
		if err == nil {
			for i := range list.Items {
				csr := &list.Items[i]
				if done[csr.Name] || len(csr.Status.Certificate) > 0 {
					continue
				}
				if err := l.signYurtHubCSR(ctx, node, csr); err != nil {
					l.Logf("lab %s: yurthub CSR %s: %v", l.ID, csr.Name, err)
				}
				done[csr.Name] = true
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (l *Lab) signYurtHubCSR(ctx context.Context, node string, csr *certificatesv1.CertificateSigningRequest) error {
	var usage x509.ExtKeyUsage
	switch csr.Spec.SignerName {
	case certificatesv1.KubeAPIServerClientSignerName:
		usage = x509.ExtKeyUsageClientAuth
	case certificatesv1.KubeletServingSignerName:
		usage = x509.ExtKeyUsageServerAuth
	default:
		return nil
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil {
		return errors.New("no PEM request")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return err
	}
	if req.Subject.CommonName != "system:node:"+node {
		return nil // another node's, or not YurtHub's
	}
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
		Reason: "LabYurtHub", Message: "approved by the lab for YurtHub on " + node,
	})
	approved, err := l.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("approving: %w", err)
	}
	cert, err := l.API.pki.signCSR(req, usage)
	if err != nil {
		return err
	}
	approved.Status.Certificate = cert
	if _, err := l.Client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, approved, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("issuing: %w", err)
	}
	l.Logf("lab %s: signed %s's YurtHub certificate (%s, %s)", l.ID, node, csr.Spec.SignerName, csr.Name)
	return nil
}
