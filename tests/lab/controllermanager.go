package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A lab runs no kube-controller-manager unless a test asks for one (StartControllerManager): the
// suites that only need Nodes and Pods do not pay for it. Started, it is the real binary
// (scripts/build-k8s.sh kube-controller-manager) in the API namespace, authenticated as
// system:kube-controller-manager with a certificate from the lab CA and, as kubeadm runs it, with
// one service-account token per controller (--use-service-account-credentials), so the controllers
// work under their bootstrap RBAC roles. Only the controllers the lab has no stand-in for run
// (DefaultControllers): EndpointSlices are then produced by Kubernetes itself from Services and the
// lab's Pods. The harness plays kubelet (pod status), the node lifecycle (nodes are Ready) and the
// cloud (pod CIDRs, load-balancer status), so node-ipam, node-lifecycle, route and service-lb
// controllers stay off: node-lifecycle in particular would find no kubelet heartbeats and taint
// every lab node and mark its pods not ready. The kubelet cluster (StartCluster, cluster.go) has
// real kubelets and runs it with every default controller plus node IPAM instead.

// DefaultControllers are the kube-controller-manager controllers the lab runs: EndpointSlices for
// Services with a selector, their mirroring from hand-made Endpoints, the garbage collector (it
// deletes a Service's EndpointSlices with the Service, through their owner reference) and the
// namespace controller (it finishes namespace deletion).
var DefaultControllers = []string{
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"garbage-collector-controller",
	"namespace-controller",
}

// ControllerManagerOptions tweak the lab's kube-controller-manager.
type ControllerManagerOptions struct {
	// Controllers replaces DefaultControllers (names as --controllers takes them).
	Controllers []string
	// ExtraArgs are appended to the harness's flags.
	ExtraArgs []string
}

// controllerManagerProbe is the headless Service StartControllerManager waits on: the
// EndpointSlice controller gives every Service with a selector a slice, even one without endpoints.
const controllerManagerProbe = "lab-controller-manager-probe"

// StartControllerManager starts kube-controller-manager in the API namespace against the lab API
// server and waits until its EndpointSlice controller works (it has made a slice for a probe
// Service, which is then deleted). It logs to <lab dir>/controller-manager/ and is stopped at
// Close. The process is also l.API.ControllerManager.
func (l *Lab) StartControllerManager(ctx context.Context, opts ControllerManagerOptions) (*Process, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if p := l.API.ControllerManager; p != nil {
		if done, _ := p.Exited(); !done {
			return nil, errors.New("kube-controller-manager is already running")
		}
	}
	bin := filepath.Join(l.cfg.K8sBin, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("kube-controller-manager: %w (run scripts/build-k8s.sh kube-controller-manager, or make test)", err)
	}
	dir := filepath.Join(l.Dir, "controller-manager")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := l.API.writeComponentKubeconfig(kubeconfig, l.API.URL, "system:kube-controller-manager"); err != nil {
		return nil, err
	}
	controllers := opts.Controllers
	if len(controllers) == 0 {
		controllers = DefaultControllers
	}
	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--use-service-account-credentials=true",
		"--leader-elect=false",
		"--allocate-node-cidrs=false",
		"--secure-port=0", // nothing to serve: readiness is observed through the API
		"--v=2",
	}, opts.ExtraArgs...)
	start := time.Now()
	p, err := startProcess("kube-controller-manager", l.API.Netns, filepath.Join(dir, "kube-controller-manager.log"), bin, args...)
	if err != nil {
		return nil, err
	}
	l.API.ControllerManager = p
	l.onClose(func() { p.Stop(5 * time.Second) })
	if err := l.waitControllerManager(ctx, p, runsEndpointSlices(controllers), 90*time.Second); err != nil {
		return nil, err
	}
	l.Logf("lab %s: kube-controller-manager (%s) working after %v", l.ID, strings.Join(controllers, ","), time.Since(start).Round(time.Millisecond))
	return p, nil
}

// runsEndpointSlices reports whether a --controllers list turns the EndpointSlice controller on.
func runsEndpointSlices(controllers []string) bool {
	on := false
	for _, c := range controllers {
		switch c {
		case "*", "endpointslice-controller", "endpointslice":
			on = true
		case "-endpointslice-controller", "-endpointslice":
			return false
		}
	}
	return on
}

// waitControllerManager creates the probe Service in kube-system and waits for its EndpointSlice.
// With the EndpointSlice controller turned off there is nothing to observe: it only checks that
// the process stays up for a moment.
func (l *Lab) waitControllerManager(ctx context.Context, p *Process, endpointSlices bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	exited := func() error {
		if done, err := p.Exited(); done {
			return fmt.Errorf("kube-controller-manager exited (%v); log tail:\n%s", err, p.LogTail(40))
		}
		return nil
	}
	if !endpointSlices {
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
		return exited()
	}
	svcs := l.Client.CoreV1().Services(metav1.NamespaceSystem)
	slices := l.Client.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem)
	probe := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: controllerManagerProbe},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, // headless: no proxy programs anything for it
			Selector:  map[string]string{"edgeplane.lab/probe": "no-such-pod"},
			Ports:     []corev1.ServicePort{{Name: "probe", Port: 1, Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := svcs.Create(ctx, probe, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the controller-manager probe Service: %w", err)
	}
	selector := metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + controllerManagerProbe}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svcs.Delete(ctx, controllerManagerProbe, metav1.DeleteOptions{})
		// Without the garbage collector nothing else would delete the slice.
		_ = slices.DeleteCollection(ctx, metav1.DeleteOptions{}, selector)
	}()
	for {
		if err := exited(); err != nil {
			return err
		}
		list, err := slices.List(ctx, selector)
		if err == nil && len(list.Items) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-controller-manager made no EndpointSlice for the probe Service within %v; log tail:\n%s", timeout, p.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
