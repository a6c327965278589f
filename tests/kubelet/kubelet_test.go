// Package kubelet runs a real kubelet on the netns lab: node3 runs a private containerd (CRI) and
// kubelet v1.37 whose runtime invokes edgeplane-cni from the installed conflist; a Pod bound to
// node3 must get its IP from the chain and reach the libcni pods on node1 and node2.
//
// Needs root, the lab binaries (EDGEPLANE_BIN, K8S_BIN with kubelet, CNI_PLUGINS_BIN) and the
// pause image tarball in EDGEPLANE_PAUSE_IMAGE (scripts/install-containerd.sh prints it).
// kubectl logs/exec are never used against node3.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/tests/lab"
)

func TestKubeletChainsEdgeplane(t *testing.T) {
	cfg, err := lab.ConfigFromEnv()
	if errors.Is(err, lab.ErrNotRoot) {
		t.Skip("needs root")
	}
	if err != nil {
		t.Fatal(err)
	}
	pauseTar := os.Getenv(lab.EnvPauseImage)
	if pauseTar == "" {
		t.Fatalf("%s is not set: export %s=$(scripts/install-containerd.sh)", lab.EnvPauseImage, lab.EnvPauseImage)
	}
	if _, err := os.Stat(filepath.Join(cfg.K8sBin, "kubelet")); err != nil {
		t.Fatalf("no kubelet in K8S_BIN: %v (scripts/build-k8s.sh kubelet)", err)
	}
	cfg.Logf = t.Logf
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close) // registered first: runs after the log dump below

	var pods []*lab.Pod
	for i := 1; i <= 2; i++ {
		n, err := l.AddNode(ctx, fmt.Sprintf("node%d", i), i, lab.NodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p, err := l.AddPod(ctx, n, fmt.Sprintf("pod-%da", i), lab.PodOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	n3, err := l.AddNode(ctx, "node3", 3, lab.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// containerd 1.6 (Debian 12) cannot parse CNI 1.1.0 results, which pkg/install's conflist
	// declares: the node runs the installed conflist at cniVersion 1.0.0 (docs/kubelet-lab.md).
	k, err := l.StartKubelet(ctx, n3, pauseTar, lab.KubeletOptions{CNIVersion: cniVersion()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.KeepLogs()
			t.Logf("kubelet log tail:\n%s\ncontainerd log tail:\n%s\nCNI log: %s\nlab dir %s",
				k.Kubelet.LogTail(60), k.Containerd.LogTail(30), n3.CNILogPath(), l.Dir)
		}
	})

	// The Node object the lab made is kept: kubelet registers into it and must not change the
	// pod CIDR the agent routes.
	if err := waitFor(ctx, 90*time.Second, func() error {
		if err := k.Stopped(); err != nil {
			return err
		}
		node, err := l.Client.CoreV1().Nodes().Get(ctx, n3.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node.Status.NodeInfo.KubeletVersion == "" {
			return fmt.Errorf("kubelet has not posted node status yet")
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s not Ready: %v", n3.Name, node.Status.Conditions)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubelet registered %s Ready after %v", n3.Name, time.Since(start).Round(time.Millisecond))
	node, err := l.Client.CoreV1().Nodes().Get(ctx, n3.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Spec.PodCIDR != n3.PodCIDR.String() {
		t.Fatalf("kubelet changed spec.podCIDR to %q, want %s", node.Spec.PodCIDR, n3.PodCIDR)
	}

	// A Pod bound to node3, image from the local store only.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kubelet-pod", Namespace: lab.PodNamespace},
		Spec: corev1.PodSpec{
			NodeName:                      n3.Name,
			AutomountServiceAccountToken:  new(bool),
			TerminationGracePeriodSeconds: new(int64),
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: "pause", Image: lab.PauseImage, ImagePullPolicy: corev1.PullNever,
			}},
		},
	}
	start = time.Now()
	if _, err := l.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var podIP netip.Addr
	if err := waitFor(ctx, 60*time.Second, func() error {
		if err := k.Stopped(); err != nil {
			return err
		}
		p, err := l.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pod phase %s, podIP %q, conditions %v, containers %v", p.Status.Phase, p.Status.PodIP, p.Status.Conditions, p.Status.ContainerStatuses)
		}
		podIP, err = netip.ParseAddr(p.Status.PodIP)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod %s Running with IP %s after %v", pod.Name, podIP, time.Since(start).Round(time.Millisecond))
	if !n3.PodCIDR.Contains(podIP) {
		t.Fatalf("pod IP %s outside %s's pod CIDR %s", podIP, n3.Name, n3.PodCIDR)
	}
	eps, err := n3.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := eps[podIP]; !ok {
		t.Fatalf("endpoints_map on %s has no %s: %v", n3.Name, podIP, eps)
	}
	sandbox, err := k.SandboxNetns(ctx, podIP.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sandbox netns %s", sandbox.Path())

	for _, p := range pods {
		rtt, err := lab.WaitPing(ctx, sandbox, p.IP, 10*time.Second)
		if err != nil {
			t.Errorf("kubelet pod %s -> %s (%s on %s): %v", podIP, p.Name, p.IP, p.Node.Name, err)
		} else {
			t.Logf("kubelet pod %s -> %s (%s on %s): %v", podIP, p.Name, p.IP, p.Node.Name, rtt)
		}
		rtt, err = lab.WaitPing(ctx, p.Netns, podIP, 10*time.Second)
		if err != nil {
			t.Errorf("%s (%s) -> kubelet pod %s: %v", p.Name, p.IP, podIP, err)
		} else {
			t.Logf("%s (%s) -> kubelet pod %s: %v", p.Name, p.IP, podIP, rtt)
		}
	}

	// Deleting the Pod: kubelet stops the sandbox, containerd runs CNI DEL, the endpoint goes.
	start = time.Now()
	if err := l.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 30*time.Second, func() error {
		eps, err := n3.Endpoints()
		if err != nil {
			return err
		}
		if _, ok := eps[podIP]; ok {
			return fmt.Errorf("endpoints_map on %s still has %s", n3.Name, podIP)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("CNI DEL removed %s's endpoint after %v", podIP, time.Since(start).Round(time.Millisecond))
	if err := waitFor(ctx, 30*time.Second, func() error {
		_, err := l.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("pod object still there (%v)", err)
	}); err != nil {
		t.Error(err)
	}
}

// cniVersion overrides the cniVersion of the conflist pkg/install writes, from
// EDGEPLANE_KUBELET_CNI_VERSION (e.g. 1.1.0 reproduces containerd 1.6's "unsupported CNI result
// version"); empty keeps the installer's.
func cniVersion() string { return os.Getenv("EDGEPLANE_KUBELET_CNI_VERSION") }

func waitFor(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
