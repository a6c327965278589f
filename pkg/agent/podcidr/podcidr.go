// Package podcidr gives this node its pod CIDR. kube-controller-manager's allocator, when enabled,
// writes node.spec.podCIDR and that is used as it is (after checking it lies inside the cluster CIDR
// and overlaps no other node's). Otherwise edgeplane allocates itself, and the API server is the
// arbiter: to take a subnet a node creates a claim, a coordination.k8s.io Lease in kube-system whose
// name is derived from the subnet (edgeplane-podcidr-10-244-3-0-24). Object names are unique, so of
// two nodes racing for one subnet exactly one Create succeeds and the other gets AlreadyExists and
// tries the next subnet; no read-modify-write of shared state is involved. The winner then records
// the subnet on its own Node in the edgeplane.io/pod-cidr annotation, which peers read. The claim is
// owned by the Node (ownerReference), so the garbage collector frees the subnet when the Node is
// deleted; an allocator that meets a claim whose holder Node no longer exists deletes it, with a
// UID + resourceVersion precondition so that only that exact stale claim goes, and retries.
// A node that crashed between claiming and annotating finds its claim by holder and reuses it.
package podcidr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// Claims are Leases with this label, in Namespace.
const (
	ClaimLabel       = "edgeplane.io/pod-cidr-claim"
	DefaultNamespace = "kube-system"
	claimPrefix      = "edgeplane-podcidr-"
)

// ErrExhausted means every subnet of the cluster CIDR is taken.
var ErrExhausted = errors.New("no free pod CIDR left in the cluster CIDR")

// Allocator finds or allocates a node's pod CIDR.
type Allocator struct {
	Client      k8s.API
	ClusterCIDR netip.Prefix
	MaskSize    int    // size of each node's pod CIDR, e.g. 24
	Namespace   string // of the claims; DefaultNamespace when empty
	// Nodes, optional, lists the cluster's Nodes from a cache that holds their names, pod CIDRs
	// and edgeplane's annotations (the agent's Node informer, which lists them anyway while the
	// node registers): with thousands of Nodes a second list of the full objects costs the API
	// server and the agent more than the wait. Nil, or an error: Client.ListNodes.
	Nodes func(ctx context.Context) ([]*k8s.Node, error)
	// RetryInterval is the wait before another attempt after a transient answer (Ensure); one
	// second when zero.
	RetryInterval time.Duration
}

// Ensure returns the pod CIDR of the node named nodeName, allocating and recording one if it has
// none. An answer the API server may give otherwise a moment later (an internal error, a timeout,
// too many requests, a conflict, a broken connection; YurtHub's cache answers "specified key is
// under accessing" while its informers list) is retried every RetryInterval until ctx is done;
// anything else, ErrExhausted or a bad pod CIDR, is returned at once.
func (a *Allocator) Ensure(ctx context.Context, nodeName string) (netip.Prefix, error) {
	if err := a.validate(); err != nil {
		return netip.Prefix{}, err
	}
	interval := a.RetryInterval
	if interval <= 0 {
		interval = time.Second
	}
	for {
		cidr, err := a.ensureOnce(ctx, nodeName)
		if err == nil || !transient(err) {
			return cidr, err
		}
		klog.FromContext(ctx).Info("Pod CIDR: the API server's answer may change; retrying", "node", nodeName, "err", err, "retryIn", interval)
		select {
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("%w (last answer: %w)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// transient says whether err is an answer the API server may not give a moment later.
func transient(err error) bool {
	var netErr net.Error
	return apierrors.IsInternalError(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) ||
		apierrors.IsUnexpectedServerError(err) || apierrors.IsConflict(err) ||
		errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED)
}

// ensureOnce is one attempt of Ensure.
func (a *Allocator) ensureOnce(ctx context.Context, nodeName string) (netip.Prefix, error) {
	node, err := a.Client.GetNode(ctx, nodeName)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("getting node %s: %w", nodeName, err)
	}
	nodes, err := a.listNodes(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	used, live := usedByOthers(ctx, nodeName, nodes)
	if cidr, ok, err := a.fromSpec(node, used); ok || err != nil {
		return cidr, err
	}
	if cidr, ok := a.fromAnnotation(ctx, node, used); ok {
		return cidr, nil
	}
	cidr, err := a.claimFree(ctx, node, used, live)
	if err != nil {
		return netip.Prefix{}, err
	}
	return cidr, a.record(ctx, node, cidr)
}

// listNodes lists the cluster's Nodes from Nodes when it answers, else from the API server.
func (a *Allocator) listNodes(ctx context.Context) ([]*k8s.Node, error) {
	if a.Nodes != nil {
		nodes, err := a.Nodes(ctx)
		if err == nil {
			return nodes, nil
		}
		klog.FromContext(ctx).Info("Listing nodes from the API server for the pod CIDR check", "reason", err)
	}
	nodes, err := a.Client.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	return nodes, nil
}

func (a *Allocator) validate() error {
	c := a.ClusterCIDR
	if !c.IsValid() || !c.Addr().Is4() {
		return fmt.Errorf("cluster CIDR %s is not an IPv4 prefix", c)
	}
	if a.MaskSize < c.Bits() || a.MaskSize > 30 {
		return fmt.Errorf("node CIDR mask size /%d must be between the cluster CIDR's /%d and /30", a.MaskSize, c.Bits())
	}
	return nil
}

func (a *Allocator) namespace() string {
	if a.Namespace == "" {
		return DefaultNamespace
	}
	return a.Namespace
}

// fromSpec uses node.spec.podCIDR when kube-controller-manager set it, refusing a bad one.
func (a *Allocator) fromSpec(node *k8s.Node, used map[netip.Prefix]string) (netip.Prefix, bool, error) {
	if node.Spec.PodCIDR == "" && len(node.Spec.PodCIDRs) == 0 {
		return netip.Prefix{}, false, nil
	}
	n := *node
	n.Annotations = nil // the spec's pod CIDR, not the annotation's
	cidr, ok, err := k8s.NodePodCIDR(&n)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("node %s: %w", node.Name, err)
	}
	if !ok {
		return netip.Prefix{}, false, fmt.Errorf("node %s has no IPv4 pod CIDR in spec.podCIDRs %v", node.Name, node.Spec.PodCIDRs)
	}
	if err := a.check(cidr, used); err != nil {
		return netip.Prefix{}, false, fmt.Errorf("node %s spec.podCIDR: %w", node.Name, err)
	}
	return cidr, true, nil
}

// check refuses a pod CIDR outside the cluster CIDR or overlapping another node's.
func (a *Allocator) check(cidr netip.Prefix, used map[netip.Prefix]string) error {
	if !a.ClusterCIDR.Contains(cidr.Addr()) || cidr.Bits() < a.ClusterCIDR.Bits() {
		return fmt.Errorf("pod CIDR %s is outside the cluster CIDR %s", cidr, a.ClusterCIDR)
	}
	for p, owner := range used {
		if p.Overlaps(cidr) {
			return fmt.Errorf("pod CIDR %s overlaps %s of node %s", cidr, p, owner)
		}
	}
	return nil
}

// fromAnnotation reuses an earlier allocation when it is still valid and its claim is still ours.
func (a *Allocator) fromAnnotation(ctx context.Context, node *k8s.Node, used map[netip.Prefix]string) (netip.Prefix, bool) {
	logger := klog.FromContext(ctx)
	cidr, ok, err := k8s.NodePodCIDR(node)
	if !ok || err != nil {
		return netip.Prefix{}, false
	}
	if err := a.check(cidr, used); err != nil || cidr.Bits() != a.MaskSize {
		logger.Info("Discarding the pod CIDR this node was allocated earlier", "podCIDR", cidr, "reason", err)
		return netip.Prefix{}, false
	}
	won, err := a.claim(ctx, node, cidr)
	if err != nil || !won {
		logger.Info("Discarding the pod CIDR this node was allocated earlier: its claim is not ours", "podCIDR", cidr, "err", err)
		return netip.Prefix{}, false
	}
	return cidr, true
}

// claimFree claims the first subnet of the cluster CIDR that no node uses and no live node's claim
// holds. Claims listed here only save requests; Create decides.
func (a *Allocator) claimFree(ctx context.Context, node *k8s.Node, used map[netip.Prefix]string, live map[string]bool) (netip.Prefix, error) {
	claims, err := a.Client.ListLeases(ctx, a.namespace(), ClaimLabel)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("listing pod CIDR claims: %w", err)
	}
	claimed := map[netip.Prefix]bool{}
	for _, c := range claims.Items {
		cidr, ok := claimedCIDR(&c)
		switch {
		case !ok:
		case holder(&c) == node.Name && a.check(cidr, used) == nil && cidr.Bits() == a.MaskSize:
			return cidr, nil // claimed before a crash, never recorded
		case live[holder(&c)]:
			claimed[cidr] = true
		}
	}
	for cidr := range subnets(a.ClusterCIDR, a.MaskSize) {
		if claimed[cidr] || a.check(cidr, used) != nil {
			continue
		}
		won, err := a.claim(ctx, node, cidr)
		if err != nil {
			return netip.Prefix{}, err
		}
		if won {
			klog.FromContext(ctx).Info("Allocated pod CIDR", "node", node.Name, "podCIDR", cidr)
			return cidr, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%w %s (/%d per node)", ErrExhausted, a.ClusterCIDR, a.MaskSize)
}

// claim creates the claim for cidr. won is false when another live node holds it.
func (a *Allocator) claim(ctx context.Context, node *k8s.Node, cidr netip.Prefix) (won bool, err error) {
	for attempt := 0; attempt < 2; attempt++ {
		_, err := a.Client.CreateLease(ctx, a.namespace(), newClaim(node, cidr))
		if err == nil {
			return true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return false, fmt.Errorf("claiming pod CIDR %s: %w", cidr, err)
		}
		existing, err := a.Client.GetLease(ctx, a.namespace(), claimName(cidr))
		if apierrors.IsNotFound(err) {
			continue // released meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("reading claim of pod CIDR %s: %w", cidr, err)
		}
		if holder(existing) == node.Name {
			return true, nil
		}
		if stale, err := a.releaseIfStale(ctx, existing); err != nil || !stale {
			return false, err
		}
	}
	return false, nil
}

// releaseIfStale deletes a claim whose holder Node no longer exists.
func (a *Allocator) releaseIfStale(ctx context.Context, c *coordinationv1.Lease) (bool, error) {
	_, err := a.Client.GetNode(ctx, holder(c))
	if err == nil {
		return false, nil
	}
	if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("looking up holder of claim %s: %w", c.Name, err)
	}
	pre := metav1.Preconditions{UID: &c.UID, ResourceVersion: &c.ResourceVersion}
	err = a.Client.DeleteLease(ctx, c.Namespace, c.Name, pre)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return false, fmt.Errorf("releasing stale claim %s: %w", c.Name, err)
	}
	klog.FromContext(ctx).Info("Released pod CIDR claim of a deleted node", "claim", c.Name, "holder", holder(c))
	return true, nil
}

// record writes the allocation on the node, touching nothing else.
func (a *Allocator) record(ctx context.Context, node *k8s.Node, cidr netip.Prefix) error {
	return k8s.PatchNodeAnnotations(ctx, a.Client, node, map[string]string{k8s.PodCIDRAnnotation: cidr.String()})
}

func newClaim(node *k8s.Node, cidr netip.Prefix) *coordinationv1.Lease {
	name := node.Name
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:        claimName(cidr),
			Labels:      map[string]string{ClaimLabel: ""},
			Annotations: map[string]string{k8s.PodCIDRAnnotation: cidr.String()},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &name},
	}
}

// claimName is the claim's object name: edgeplane-podcidr-10-244-3-0-24.
func claimName(cidr netip.Prefix) string {
	return claimPrefix + strings.NewReplacer(".", "-", "/", "-").Replace(cidr.String())
}

func claimedCIDR(c *coordinationv1.Lease) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(c.Annotations[k8s.PodCIDRAnnotation])
	return p, err == nil && claimName(p) == c.Name
}

func holder(c *coordinationv1.Lease) string {
	if c.Spec.HolderIdentity == nil {
		return ""
	}
	return *c.Spec.HolderIdentity
}

// usedByOthers maps every other node's pod CIDR (spec or annotation) to that node's name, and says
// which nodes exist.
func usedByOthers(ctx context.Context, self string, nodes []*k8s.Node) (used map[netip.Prefix]string, live map[string]bool) {
	used, live = map[netip.Prefix]string{}, map[string]bool{}
	for _, n := range nodes {
		live[n.Name] = true
		if n.Name == self {
			continue
		}
		cidr, ok, err := k8s.NodePodCIDR(n)
		if err != nil {
			klog.FromContext(ctx).Info("Ignoring a node's unparseable pod CIDR", "node", n.Name, "err", err)
			continue
		}
		if ok {
			used[cidr] = n.Name
		}
	}
	return used, live
}
