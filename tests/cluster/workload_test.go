package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/internal/ociimage"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// echoImage is the workload image: tests/cluster/echoserver alone.
const echoImage = "localhost/edgeplane/echoserver:lab"

// The echo Deployment: one replica per node (required anti-affinity), behind the ClusterIP
// Service "echo" in the namespace "default".
const (
	echoNamespace = "default"
	echoName      = "echo"
	echoPort      = 8080
	echoFQDN      = echoName + "." + echoNamespace + ".svc.cluster.local"
)

var echoOnce struct {
	sync.Once
	err error
}

// deployEcho builds and imports the echo image (once) and applies the Deployment and Service,
// waiting for the rollout. Idempotent.
func deployEcho(t *testing.T, c *lab.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	echoOnce.Do(func() {
		tar := filepath.Join(c.Dir, "echoserver.tar")
		bin := filepath.Join(c.Dir, "echoserver")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./echoserver")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			echoOnce.err = fmt.Errorf("building echoserver: %w: %s", err, out)
			return
		}
		img, err := ociimage.Build(ociimage.Spec{OS: "linux", Arch: runtime.GOARCH,
			Layers:     []ociimage.Layer{{Files: []ociimage.File{{Path: "/echoserver", Source: bin}}}},
			Entrypoint: []string{"/echoserver"}})
		if err == nil {
			err = ociimage.WriteArchive(tar, []string{echoImage}, img)
		}
		if err == nil {
			_, err = c.ImportImages(ctx, tar)
		}
		if err != nil {
			echoOnce.err = err
			return
		}
		manifest := filepath.Join(c.Dir, "echo.yaml")
		if err := os.WriteFile(manifest, []byte(fmt.Sprintf(echoManifest, len(c.Nodes), echoImage)), 0o644); err != nil {
			echoOnce.err = err
			return
		}
		if out, err := c.Kubectl(ctx, "apply", "-f", manifest); err != nil {
			echoOnce.err = fmt.Errorf("%w: %s", err, out)
			return
		}
		echoOnce.err = c.RolloutStatus(ctx, echoNamespace, "deployment/"+echoName, 3*time.Minute)
	})
	if echoOnce.err != nil {
		t.Fatalf("deploying the echo workload: %v", echoOnce.err)
	}
}

const echoManifest = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  namespace: default
spec:
  replicas: %[1]d
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector:
                matchLabels: {app: echo}
              topologyKey: kubernetes.io/hostname
      terminationGracePeriodSeconds: 1
      containers:
        - name: echo
          image: %[2]s
          imagePullPolicy: Never
          ports:
            - containerPort: 8080
            - containerPort: 8081
          readinessProbe:
            tcpSocket: {port: 8080}
            periodSeconds: 1
          # Not BestEffort: the lab's containers share one cgroup parent (containerd's /k8s.io),
          # where a BestEffort container's cpu.shares (2) against an agent's (51, its 50m) left the
          # echo server unscheduled for 2 s while a new agent started on a loaded machine
          # (TestRollingUpdate's streams then timed out with nothing lost on the wire).
          resources:
            requests: {cpu: 100m}
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: default
spec:
  selector: {app: echo}
  ports:
    - port: 8080
      targetPort: 8080
`

// echoPod is one replica of the echo Deployment: its node, its IP and its network namespace.
type echoPod struct {
	Name  string
	Node  *lab.KubeletNode
	IP    string
	Netns lab.Netns
}

// echoPods lists the echo replicas, one per node, in node order.
func echoPods(t *testing.T, c *lab.Cluster) []echoPod {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	list, err := c.Lab.Client.CoreV1().Pods(echoNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + echoName})
	if err != nil {
		t.Fatal(err)
	}
	var pods []echoPod
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		k := c.Node(p.Spec.NodeName)
		if k == nil {
			t.Fatalf("pod %s on unknown node %q", p.Name, p.Spec.NodeName)
		}
		ns, err := k.SandboxNetns(ctx, p.Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, echoPod{Name: p.Name, Node: k, IP: p.Status.PodIP, Netns: ns})
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Node.Name < pods[j].Node.Name })
	if len(pods) != len(c.Nodes) {
		t.Fatalf("%d echo pods running, want one on each of the %d nodes: %+v", len(pods), len(c.Nodes), pods)
	}
	return pods
}

// dialIn opens a TCP connection from inside ns (a pod's namespace: the connection is the pod's).
func dialIn(ctx context.Context, ns lab.Netns, addr string) (net.Conn, error) {
	var conn net.Conn
	err := lab.InNetns(ns, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}

// hello connects from ns to addr and returns the hostname line the echo server sends first.
func hello(ctx context.Context, ns lab.Netns, addr string) (string, error) {
	conn, err := dialIn(ctx, ns, addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading %s's hostname: %w", addr, err)
	}
	return strings.TrimSpace(line), nil
}

// lookupIn resolves name from inside ns through the cluster DNS (the kube-dns Service), as a pod
// with dnsPolicy ClusterFirst would.
func lookupIn(ctx context.Context, ns lab.Netns, name string) ([]string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var conn net.Conn
		err := lab.InNetns(ns, func() error {
			var err error
			conn, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, net.JoinHostPort(lab.KubeDNSIP.String(), "53"))
			return err
		})
		return conn, err
	}}
	return r.LookupHost(ctx, name)
}

// agentPods returns the agent DaemonSet's pods by node name, with their images.
func agentPods(t *testing.T, c *lab.Cluster) map[string]corev1.Pod {
	t.Helper()
	list, err := c.Lab.Client.CoreV1().Pods("edgeplane-system").List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=edgeplane-agent"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = p
		}
	}
	return out
}

// routerLineBytes is the byte count of the router's private line chain (cloud <-> site-a).
func routerLineBytes(t *testing.T, c *lab.Cluster) uint64 {
	t.Helper()
	out, err := c.Lab.Router().Exec(t.Context(), "iptables", "-w", "10", "-L", "line-cloud-site-a", "-v", "-x", "-n")
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "ACCEPT" {
			var b uint64
			fmt.Sscan(f[1], &b)
			total += b
		}
	}
	return total
}

func prettyJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
