package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// PodNamespace is the Kubernetes namespace lab pods live in.
const PodNamespace = "default"

// Pod is a pod sandbox wired by the CNI chain on its node, plus its Pod object.
type Pod struct {
	Name        string
	Node        *Node
	Netns       Netns
	IP          netip.Addr
	ContainerID string
	UID         k8stypes.UID
	Result      *types100.Result

	conflist *libcni.NetworkConfigList
	rt       *libcni.RuntimeConf
	once     sync.Once
	delErr   error
}

// PodOptions tweak a pod.
type PodOptions struct {
	// Conflist replaces the node's edgeplane chain (harness self-tests use plugin-only chains).
	Conflist *libcni.NetworkConfigList
	// NoObject skips the Pod object (pure CNI cycles).
	NoObject bool
	// Labels are added to the Pod object's labels (app=lab unless given here), for Service
	// selectors.
	Labels map[string]string
	// Ports are the container's ports, which named Service targetPorts resolve against.
	Ports []corev1.ContainerPort
}

// AddPod creates a pod sandbox on node: a netns, CNI ADD through the node's chain, then the Pod
// object with spec.nodeName and status.podIP, as kubelet would.
func (l *Lab) AddPod(ctx context.Context, node *Node, name string, opts PodOptions) (_ *Pod, err error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.podSeq++
	seq := l.podSeq
	l.mu.Unlock()
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	p := &Pod{Name: name, Node: node, ContainerID: hex.EncodeToString(rnd[:]), UID: k8stypes.UID(fmt.Sprintf("%x-%x-%x-%x-%x", rnd[0:4], rnd[4:6], rnd[6:8], rnd[8:10], rnd[10:16]))}
	p.conflist = opts.Conflist
	if p.conflist == nil {
		if p.conflist, err = node.Conflist(); err != nil {
			return nil, err
		}
	}
	ns, err := addNetns(ctx, fmt.Sprintf("%s-p%d", l.ID, seq))
	if err != nil {
		return nil, err
	}
	p.Netns = ns
	p.rt = &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       ns.Path(),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", PodNamespace},
			{"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
			{"K8S_POD_UID", string(p.UID)},
		},
	}
	// The lab's Close deletes whatever pod is still there; Delete is idempotent.
	l.onClose(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Delete(ctx); err != nil {
			l.Logf("lab %s: %v", l.ID, err)
		}
	})
	defer func() {
		if err != nil {
			_ = p.Delete(context.Background())
		}
	}()
	res, err := node.CNI().AddNetworkList(ctx, p.conflist, p.rt)
	if err != nil {
		return nil, fmt.Errorf("CNI ADD for pod %s on %s: %w", name, node.Name, err)
	}
	if p.Result, err = types100.NewResultFromResult(res); err != nil {
		return nil, fmt.Errorf("CNI ADD result for pod %s: %w", name, err)
	}
	for _, ipc := range p.Result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok && ipc.Address.IP.To4() != nil {
			p.IP = a
			break
		}
	}
	l.mu.Lock()
	l.pods[name] = p
	l.mu.Unlock()
	if opts.NoObject {
		return p, nil
	}
	if !p.IP.IsValid() && len(p.Result.IPs) > 0 {
		return nil, fmt.Errorf("CNI ADD for pod %s returned no IPv4 address: %v", name, p.Result)
	}
	if err := p.createObject(ctx, opts); err != nil {
		return nil, err
	}
	return p, nil
}

// HostVeth is the name of the pod's host-side veth in its node's namespace: the CNI result's
// last interface without a sandbox (bridge, on a Flannel node, lists cni0 before it).
func (p *Pod) HostVeth() string {
	name := ""
	for _, ifc := range p.Result.Interfaces {
		if ifc.Sandbox == "" {
			name = ifc.Name
		}
	}
	return name
}

// Pods returns the lab's live pods by name.
func (l *Lab) Pods() map[string]*Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]*Pod, len(l.pods))
	for k, v := range l.pods {
		out[k] = v
	}
	return out
}

// createObject creates the Pod object as a scheduler and a kubelet would leave it for a running
// pod: spec.nodeName, status.podIP(s), phase Running, Ready and ContainersReady true. That is what
// the EndpointSlice controller lists a pod by.
func (p *Pod) createObject(ctx context.Context, opts PodOptions) error {
	c := p.Node.lab.Client.CoreV1().Pods(PodNamespace)
	labels := map[string]string{"app": "lab"}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: PodNamespace, UID: p.UID, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:   p.Node.Name,
			Containers: []corev1.Container{{Name: "c", Image: "lab.invalid/pause:1", Ports: opts.Ports}},
		},
	}
	created, err := c.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Pod %s: %w", p.Name, err)
	}
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    p.Node.IP.String(),
		HostIPs:   []corev1.HostIP{{IP: p.Node.IP.String()}},
		PodIP:     p.IP.String(),
		PodIPs:    []corev1.PodIP{{IP: p.IP.String()}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
	}
	if _, err := c.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting Pod %s status: %w", p.Name, err)
	}
	return nil
}

// SetReady sets the Pod object's Ready and ContainersReady conditions, as kubelet does when a
// readiness probe starts failing or passes again. The EndpointSlice controller then marks the
// pod's endpoint ready or not (Lab.WaitEndpointSlices observes it).
func (p *Pod) SetReady(ctx context.Context, ready bool) error {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	c := p.Node.lab.Client.CoreV1().Pods(PodNamespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := c.Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
			found := false
			for i := range obj.Status.Conditions {
				if cond := &obj.Status.Conditions[i]; cond.Type == t {
					found = true
					if cond.Status != status {
						cond.Status, cond.LastTransitionTime = status, now
					}
				}
			}
			if !found {
				obj.Status.Conditions = append(obj.Status.Conditions, corev1.PodCondition{Type: t, Status: status, LastTransitionTime: now})
			}
		}
		_, err = c.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("setting Pod %s ready=%v: %w", p.Name, ready, err)
	}
	return nil
}

// Delete does what kubelet does when a pod goes: CNI DEL, netns removal, Pod object deletion.
// It runs once; later calls return the first result.
func (p *Pod) Delete(ctx context.Context) error {
	p.once.Do(func() {
		l := p.Node.lab
		var errs []error
		if err := p.Node.CNI().DelNetworkList(ctx, p.conflist, p.rt); err != nil {
			errs = append(errs, fmt.Errorf("CNI DEL for pod %s: %w", p.Name, err))
		}
		if err := deleteNetns(p.Netns); err != nil {
			errs = append(errs, err)
		}
		err := l.Client.CoreV1().Pods(PodNamespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting Pod %s: %w", p.Name, err))
		}
		l.mu.Lock()
		if l.pods[p.Name] == p {
			delete(l.pods, p.Name)
		}
		l.mu.Unlock()
		p.delErr = errors.Join(errs...)
	})
	return p.delErr
}

// Check runs CNI CHECK for the pod.
func (p *Pod) Check(ctx context.Context) error {
	return p.Node.CNI().CheckNetworkList(ctx, p.conflist, p.rt)
}
