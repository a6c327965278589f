package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// writeOverlay copies deploy/base to <cluster dir>/edgeplane/base and writes the overlay next to
// it, <cluster dir>/edgeplane/overlay: the image set to ref, the lab's cluster and service CIDRs,
// the API server's address for agents (no kube-proxy: the "kubernetes" Service is unreachable
// until edgeplane runs; the public address, which every domain reaches), and the network domains
// (each pool the domain of its name, the private line cloud <-> site-a).
func (c *Cluster) writeOverlay(deployBase, ref string) error {
	root := filepath.Join(c.Dir, "edgeplane")
	base := filepath.Join(root, "base")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(deployBase)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if err := copyFile(filepath.Join(deployBase, e.Name()), filepath.Join(base, e.Name()), 0o644); err != nil {
			return err
		}
	}
	c.Overlay = filepath.Join(root, "overlay")
	if err := os.MkdirAll(c.Overlay, 0o755); err != nil {
		return err
	}
	var domains, pools strings.Builder
	seen := map[string]bool{}
	for _, k := range c.Nodes {
		if !seen[k.Domain] {
			seen[k.Domain] = true
			fmt.Fprintf(&pools, "      %s: [%s]\n", k.Domain, k.Domain)
		}
	}
	for _, line := range privateLines {
		if seen[line[0]] && seen[line[1]] {
			fmt.Fprintf(&domains, "    - domains: [%s, %s]\n      mode: private\n", line[0], line[1])
		}
	}
	connectivity := "    connectivity:\n" + domains.String()
	if domains.Len() == 0 {
		connectivity = "    connectivity: []\n"
	}
	files := map[string]string{
		"config.yaml": fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: edgeplane-config
  namespace: edgeplane-system
data:
  cluster-cidr: %q
  node-cidr-mask-size: "24"
  service-cidr: %q
  api-server-host: %q
  api-server-port: "%d"
`, ClusterCIDR, ServiceCIDR, APIServerPublicIP, apiserverPort),
		"domains.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: edgeplane-domains
  namespace: edgeplane-system
data:
  config.yaml: |
    poolLabel: apps.openyurt.io/nodepool
    defaultConnectivity: public
    domains:
` + pools.String() + connectivity,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(c.Overlay, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return c.SetOverlayImage(ref)
}

// SetOverlayImage (re)writes the overlay's kustomization with edgeplane's image set to ref, as
// `kustomize edit set image` would; `kubectl apply -k` of the overlay then rolls the DaemonSet.
func (c *Cluster) SetOverlayImage(ref string) error {
	name, tag := ref, "latest"
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	return os.WriteFile(filepath.Join(c.Overlay, "kustomization.yaml"), []byte(fmt.Sprintf(`# The lab's overlay of deploy/base (tests/lab/clusterinstall.go).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../base
patches:
  - path: config.yaml
  - path: domains.yaml
images:
  - name: ghcr.io/edgeplane/edgeplane
    newName: %s
    newTag: %q
`, name, tag)), 0o644)
}

// coreDNSManifest is CoreDNS as kubeadm installs it, trimmed: RBAC, the Corefile (cluster.local
// only: nothing is forwarded, the lab has no upstream), a Deployment of two replicas from the
// imported image, and the kube-dns Service at KubeDNSIP.
const coreDNSManifest = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
  - kind: ServiceAccount
    name: coredns
    namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        prometheus :9153
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 2
  selector:
    matchLabels:
      k8s-app: kube-dns
  strategy:
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      tolerations:
        - key: node-role.kubernetes.io/control-plane
          effect: NoSchedule
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                labelSelector:
                  matchLabels:
                    k8s-app: kube-dns
                topologyKey: kubernetes.io/hostname
      containers:
        - name: coredns
          image: %[1]s
          imagePullPolicy: Never
          args: ["-conf", "/etc/coredns/Corefile"]
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
            - {name: metrics, containerPort: 9153, protocol: TCP}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              add: [NET_BIND_SERVICE]
              drop: [ALL]
          volumeMounts:
            - name: config-volume
              mountPath: /etc/coredns
              readOnly: true
          livenessProbe:
            httpGet: {path: /health, port: 8080}
            initialDelaySeconds: 10
            periodSeconds: 10
            failureThreshold: 5
          readinessProbe:
            httpGet: {path: /ready, port: 8181}
            periodSeconds: 2
      volumes:
        - name: config-volume
          configMap:
            name: coredns
            items:
              - {key: Corefile, path: Corefile}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/name: CoreDNS
spec:
  clusterIP: %[2]s
  selector:
    k8s-app: kube-dns
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
    - {name: metrics, port: 9153, protocol: TCP}
`

// installCoreDNS applies coreDNSManifest with the imported image and waits for the rollout.
func (c *Cluster) installCoreDNS(ctx context.Context) error {
	path := filepath.Join(c.Dir, "coredns.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(coreDNSManifest, c.CoreDNSImageRef, KubeDNSIP)), 0o644); err != nil {
		return err
	}
	if out, err := c.Kubectl(ctx, "apply", "-f", path); err != nil {
		return fmt.Errorf("installing CoreDNS: %w: %s", err, out)
	}
	return c.RolloutStatus(ctx, "kube-system", "deployment/coredns", 2*time.Minute)
}
