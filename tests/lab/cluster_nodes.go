package lab

// The cluster's nodes: images imported into every node's containerd, waits on the Node objects,
// the pod CIDRs kube-controller-manager gave them and the API namespace's routes to them.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// importedRef is a reference ctr prints while importing: "unpacking <ref> (sha256:...)...done".
var importedRef = regexp.MustCompile(`unpacking (\S+) \(sha256:`)

// ImportImages imports image tarballs into every node's containerd (k8s.io namespace), as a user
// would with `ctr -n k8s.io images import` on each node, and returns the references the tarballs
// carry, in order (the first reference of each).
func (c *Cluster) ImportImages(ctx context.Context, tarballs ...string) ([]string, error) {
	refs := make([]string, len(tarballs))
	var mu sync.Mutex
	err := c.onEveryNode(func(_ int, k *KubeletNode) error {
		for j, tar := range tarballs {
			out, err := k.Ctr(ctx, "images", "import", tar)
			if err != nil {
				return fmt.Errorf("importing %s on %s: %w: %s", tar, k.Name, err, out)
			}
			m := importedRef.FindStringSubmatch(out)
			if m == nil {
				return fmt.Errorf("importing %s on %s: no image reference in ctr's output: %s", tar, k.Name, out)
			}
			mu.Lock()
			refs[j] = m[1]
			mu.Unlock()
		}
		return nil
	})
	return refs, err
}

// onEveryNode runs fn on every node at once and joins their errors.
func (c *Cluster) onEveryNode(fn func(i int, k *KubeletNode) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for i, k := range c.Nodes {
		wg.Go(func() { errs[i] = fn(i, k) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// TagImage gives an imported image a second reference on every node (ctr images tag).
func (c *Cluster) TagImage(ctx context.Context, ref, newRef string) error {
	for _, k := range c.Nodes {
		if out, err := k.Ctr(ctx, "images", "tag", "--force", ref, newRef); err != nil {
			return fmt.Errorf("tagging %s as %s on %s: %w: %s", ref, newRef, k.Name, err, out)
		}
	}
	return nil
}

// Node returns the cluster node by name, or nil.
func (c *Cluster) Node(name string) *KubeletNode {
	for _, k := range c.Nodes {
		if k.Name == name {
			return k
		}
	}
	return nil
}

// waitNodes waits until every cluster node's Node object satisfies ok.
func (c *Cluster) waitNodes(ctx context.Context, what string, timeout time.Duration, ok func(*corev1.Node) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var missing []string
		for _, k := range c.Nodes {
			if err := k.Stopped(); err != nil {
				return err
			}
			n, err := c.Lab.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
			if err != nil || !ok(n) {
				missing = append(missing, k.Name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			var tails string
			for _, name := range missing {
				if k := c.Node(name); k != nil {
					tails += fmt.Sprintf("----- kubelet %s\n%s\n", name, k.Kubelet.LogTail(15))
				}
			}
			return fmt.Errorf("nodes %v not %s within %v\n%s\n%s", missing, what, timeout, c.describe("kube-system"), tails)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readPodCIDRs sets each node's PodCIDR from its Node object (kube-controller-manager's choice).
func (c *Cluster) readPodCIDRs(ctx context.Context) error {
	for _, k := range c.Nodes {
		n, err := c.Lab.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p, err := netip.ParsePrefix(n.Spec.PodCIDR)
		if err != nil {
			return fmt.Errorf("node %s pod CIDR: %w", k.Name, err)
		}
		k.PodCIDR = p
	}
	return nil
}

// routeAPIToPods routes the pod CIDRs from the API namespace, so that the API server's proxy
// (services/proxy, pods/proxy) reaches pods, as it does on a control-plane node of a real
// cluster: a cloud node's CIDR via the node, a site node's via the router, which forwards it over
// the private line's leg (the router's filter lets the API server and those CIDRs through).
func (c *Cluster) routeAPIToPods(ctx context.Context) error {
	for _, k := range c.Nodes {
		if k.Domain == DomainCloud {
			if _, err := c.APINetns.IP(ctx, "route", "replace", k.PodCIDR.String(), "via", k.IP.String()); err != nil {
				return err
			}
			continue
		}
		rt := c.Lab.Router()
		if _, err := rt.IP(ctx, "route", "replace", k.PodCIDR.String(), "via", k.IP.String()); err != nil {
			return err
		}
		for _, dir := range [][2]string{{APIServerIP.String() + "/32", k.PodCIDR.String()}, {k.PodCIDR.String(), APIServerIP.String() + "/32"}} {
			if _, err := rt.Exec(ctx, "iptables", "-w", "10", "-I", "FORWARD", "-s", dir[0], "-d", dir[1], "-j", "ACCEPT"); err != nil {
				return err
			}
		}
	}
	return nil
}
