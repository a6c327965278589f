package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// APIServer is a real etcd + kube-apiserver pair in the lab's API namespace.
type APIServer struct {
	Netns     Netns
	IP        net.IP
	URL       string // https://<IP>:6443
	PublicURL string // https://203.0.113.2:6443: nodes outside the cloud, through the router's NAT
	Etcd      *Process
	Apiserver *Process
	// ControllerManager is kube-controller-manager once Lab.StartControllerManager has run.
	ControllerManager *Process
	// Scheduler is kube-scheduler once Lab.StartScheduler has run.
	Scheduler *Process
	// ServiceAccounts is whether the ServiceAccount admission plugin is on (StartCluster turns
	// it on; the other labs make Pods without service accounts and keep it off).
	ServiceAccounts bool

	pki                                 *pki
	dir, bin                            string
	kubeletClientCert, kubeletClientKey string
}

// start starts kube-apiserver, with the ServiceAccount admission plugin on or off.
func (a *APIServer) start(serviceAccounts bool) error {
	admission := "--disable-admission-plugins=ServiceAccount"
	if serviceAccounts {
		admission = "--enable-admission-plugins=ServiceAccount"
	}
	p, err := startProcess("kube-apiserver", a.Netns, filepath.Join(a.dir, "kube-apiserver.log"), a.bin,
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address="+a.IP.String(),
		"--advertise-address="+a.IP.String(),
		fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--cert-dir="+filepath.Join(a.dir, "certs"),
		"--tls-cert-file="+a.pki.ServingCert,
		"--tls-private-key-file="+a.pki.ServingKey,
		"--client-ca-file="+a.pki.CACert,
		"--service-account-key-file="+a.pki.SAPub,
		"--service-account-signing-key-file="+a.pki.SAKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range="+ServiceCIDR.String(),
		"--authorization-mode=Node,RBAC",
		admission,
		// Kubelets are reached at their InternalIP (lab node names resolve nowhere), with a
		// client certificate of their own.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--kubelet-client-certificate="+a.kubeletClientCert,
		"--kubelet-client-key="+a.kubeletClientKey,
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	a.Apiserver, a.ServiceAccounts = p, serviceAccounts
	return nil
}

// restart stops kube-apiserver and starts it again (etcd keeps the objects) with the
// ServiceAccount admission plugin on or off, and waits until it is ready.
func (a *APIServer) restart(ctx context.Context, client kubernetes.Interface, serviceAccounts bool) error {
	a.Apiserver.Stop(10 * time.Second)
	if err := a.start(serviceAccounts); err != nil {
		return err
	}
	return a.waitReady(ctx, client)
}

const apiserverPort = 6443

func startAPIServer(ctx context.Context, l *Lab, ns Netns, ip net.IP) (*APIServer, error) {
	dir := filepath.Join(l.Dir, "apiserver")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// The certificate names the public address from the start: the domains may come later.
	p, err := newPKI(filepath.Join(dir, "pki"), []net.IP{ip, net.IP(APIServerPublicIP.AsSlice())})
	if err != nil {
		return nil, fmt.Errorf("creating lab PKI: %w", err)
	}
	a := &APIServer{
		Netns:     ns,
		IP:        ip,
		URL:       fmt.Sprintf("https://%s:%d", ip, apiserverPort),
		PublicURL: fmt.Sprintf("https://%s:%d", APIServerPublicIP, apiserverPort),
		pki:       p,
	}

	// etcd listens on the API namespace's own loopback only.
	a.Etcd, err = startProcess("etcd", ns, filepath.Join(dir, "etcd.log"), filepath.Join(l.cfg.K8sBin, "etcd"),
		"--name=lab",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=lab=http://127.0.0.1:2380",
		"--listen-metrics-urls=",
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	l.onClose(func() { a.Etcd.Kill() })

	// The API server's client certificate towards kubelets (exec, logs, port-forward, proxy): a
	// kubelet that authenticates its callers (the cluster mode's) sees system:masters, as kubeadm's
	// apiserver-kubelet-client was.
	certPEM, keyPEM, err := p.clientCert("kube-apiserver-kubelet-client", "system:masters")
	if err != nil {
		return nil, err
	}
	a.kubeletClientCert, a.kubeletClientKey = filepath.Join(dir, "pki", "apiserver-kubelet-client.crt"), filepath.Join(dir, "pki", "apiserver-kubelet-client.key")
	if err := os.WriteFile(a.kubeletClientCert, certPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(a.kubeletClientKey, keyPEM, 0o600); err != nil {
		return nil, err
	}
	a.dir, a.bin = dir, filepath.Join(l.cfg.K8sBin, "kube-apiserver")
	if err := a.start(l.cfg.ServiceAccountAdmission); err != nil {
		return nil, err
	}
	l.onClose(func() { a.Apiserver.Stop(5 * time.Second) })
	return a, nil
}

// RESTConfig is an admin client configuration whose connections are made from inside the API
// namespace, so the test process talks to the lab API server without any route into the lab.
func (a *APIServer) RESTConfig() *rest.Config {
	return &rest.Config{
		Host: a.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   a.pki.caPEM,
			CertData: a.pki.adminCertPEM,
			KeyData:  a.pki.adminKeyPEM,
		},
		QPS:     200,
		Burst:   400,
		Timeout: 30 * time.Second,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := InNetns(a.Netns, func() error {
				var err error
				conn, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}
}

// WriteKubeconfig writes an admin kubeconfig for processes inside the lab (agents), pointing at
// the API server's private address in the cloud domain.
func (a *APIServer) WriteKubeconfig(path string) error { return a.writeKubeconfig(path, a.URL) }

func (a *APIServer) writeKubeconfig(path, server string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: a.pki.caPEM}
	cfg.AuthInfos["lab-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: a.pki.adminCertPEM, ClientKeyData: a.pki.adminKeyPEM}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "lab-admin"}
	cfg.CurrentContext = "lab"
	return clientcmd.WriteToFile(*cfg, path)
}

// writeComponentKubeconfig writes a kubeconfig for a component that authenticates as user (in
// groups) with a client certificate of its own from the lab CA, so RBAC treats it as in a kubeadm
// cluster: system:kube-controller-manager, system:kube-proxy.
func (a *APIServer) writeComponentKubeconfig(path, server, user string, groups ...string) error {
	certPEM, keyPEM, err := a.pki.clientCert(user, groups...)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: a.pki.caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: user}
	cfg.CurrentContext = "lab"
	return clientcmd.WriteToFile(*cfg, path)
}

// waitReady polls /readyz until the API server answers ok, or a process dies.
func (a *APIServer) waitReady(ctx context.Context, client kubernetes.Interface) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		for _, p := range []*Process{a.Etcd, a.Apiserver} {
			if done, err := p.Exited(); done {
				return fmt.Errorf("%s exited (%v); log tail:\n%s", p.Name, err, p.LogTail(30))
			}
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		rcancel()
		if err == nil && string(body) == "ok" {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("readyz: %s", body)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w; log tail:\n%s", last, a.Apiserver.LogTail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Pause stops the control plane (SIGSTOP: kube-scheduler and kube-controller-manager if they run, the API server,
// then etcd) until resume continues it in the reverse order. For benchmark samples of the
// datapath: the API server and etcd, after taking tens of thousands of objects, keep working in
// the background (compaction, watch caches) on the same CPUs as the measurement. Established
// connections (the agents' watches) stay; a request made meanwhile waits.
func (a *APIServer) Pause() (resume func(), err error) {
	var stopped []*Process
	resume = func() {
		for i := len(stopped) - 1; i >= 0; i-- {
			_ = stopped[i].Signal(syscall.SIGCONT)
		}
	}
	for _, p := range []*Process{a.Scheduler, a.ControllerManager, a.Apiserver, a.Etcd} {
		if p == nil {
			continue
		}
		if err := p.Signal(syscall.SIGSTOP); err != nil {
			resume()
			return nil, err
		}
		stopped = append(stopped, p)
	}
	return resume, nil
}
