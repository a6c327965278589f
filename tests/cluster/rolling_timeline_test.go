package cluster

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/watch"
)

// The rolling update diagnostics' timeline (rollingDiag): the API objects the agents react to,
// followed by watches, and the test process's own stalls.

// watch follows a resource, adding to the timeline what describe makes of each event ("" for
// nothing worth a line). A watch the API server ends is opened again from the last version seen
// (from scratch if that is too old: describe then sees the objects again).
func (d *rollingDiag) watch(ctx context.Context, kind string, open func(context.Context, string) (watch.Interface, error),
	describe func(watch.Event) string) {
	d.watches.Go(func() {
		rv := ""
		for ctx.Err() == nil {
			w, err := open(ctx, rv)
			if err != nil {
				d.event("%s watch: %v", kind, err)
				rv = ""
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			d.follow(ctx, w, &rv, describe)
			w.Stop()
		}
	})
}

// follow reads w until it ends or ctx is done, keeping the last resource version seen in rv.
func (d *rollingDiag) follow(ctx context.Context, w watch.Interface, rv *string, describe func(watch.Event) string) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			if ev.Type == watch.Error {
				*rv = "" // e.g. 410 Gone: from scratch
				return
			}
			if m, err := meta.Accessor(ev.Object); err == nil {
				*rv = m.GetResourceVersion()
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			if s := describe(ev); s != "" {
				d.event("%s", s)
			}
		}
	}
}

// sampleStalls adds to the timeline every moment the test process was not scheduled for 250 ms
// or more (a 10 ms ticker that fires late), with the machine's CPU pressure then: a stream whose
// echo is late because nothing ran is not one the network lost.
func (d *rollingDiag) sampleStalls(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if gap := now.Sub(last); gap >= 250*time.Millisecond {
				psi, _ := os.ReadFile("/proc/pressure/cpu")
				first, _, _ := strings.Cut(string(psi), "\n")
				d.event("stall: the test process ran nothing for %v (cpu pressure: %s)", gap.Round(time.Millisecond), first)
			}
			last = now
		}
	}
}

// nodeChange describes Node events by what a reconciler reads (the agents' filters: labels,
// annotations, pod CIDRs, addresses, and taints), not the status heartbeats.
func nodeChange() func(watch.Event) string {
	last := map[string]*corev1.Node{}
	return func(ev watch.Event) string {
		n, ok := ev.Object.(*corev1.Node)
		if !ok {
			return ""
		}
		old := last[n.Name]
		last[n.Name] = n
		if old == nil || ev.Type != watch.Modified {
			if old == nil && ev.Type == watch.Added {
				return "" // the watch's initial list
			}
			return fmt.Sprintf("node %s %s", strings.ToLower(string(ev.Type)), n.Name)
		}
		var changes []string
		changes = append(changes, changedKeys("label", old.Labels, n.Labels)...)
		changes = append(changes, changedKeys("annotation", old.Annotations, n.Annotations)...)
		if !slices.Equal(old.Spec.PodCIDRs, n.Spec.PodCIDRs) || old.Spec.PodCIDR != n.Spec.PodCIDR {
			changes = append(changes, fmt.Sprintf("podCIDRs %v -> %v", old.Spec.PodCIDRs, n.Spec.PodCIDRs))
		}
		if !slices.EqualFunc(old.Spec.Taints, n.Spec.Taints, func(a, b corev1.Taint) bool { return a.Key == b.Key && a.Effect == b.Effect }) {
			changes = append(changes, fmt.Sprintf("taints %v -> %v", taintKeys(old.Spec.Taints), taintKeys(n.Spec.Taints)))
		}
		if !slices.Equal(old.Status.Addresses, n.Status.Addresses) {
			changes = append(changes, fmt.Sprintf("addresses %v -> %v", old.Status.Addresses, n.Status.Addresses))
		}
		if nodeReady(old) != nodeReady(n) {
			changes = append(changes, fmt.Sprintf("Ready %s -> %s", nodeReady(old), nodeReady(n)))
		}
		if len(changes) == 0 {
			return ""
		}
		return "node " + n.Name + ": " + strings.Join(changes, "; ")
	}
}

func changedKeys(what string, old, new map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(new)) {
		if o, ok := old[k]; !ok {
			out = append(out, fmt.Sprintf("%s %s added (%q)", what, k, new[k]))
		} else if o != new[k] {
			out = append(out, fmt.Sprintf("%s %s %q -> %q", what, k, o, new[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(old)) {
		if _, ok := new[k]; !ok {
			out = append(out, fmt.Sprintf("%s %s removed", what, k))
		}
	}
	return out
}

func taintKeys(ts []corev1.Taint) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Key+":"+string(t.Effect))
	}
	return out
}

func nodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// sliceChange describes the echo Service's EndpointSlices: each endpoint with its node and
// conditions.
func sliceChange(ev watch.Event) string {
	s, ok := ev.Object.(*discoveryv1.EndpointSlice)
	if !ok {
		return ""
	}
	var eps []string
	for _, e := range s.Endpoints {
		node := ""
		if e.NodeName != nil {
			node = *e.NodeName
		}
		eps = append(eps, fmt.Sprintf("%v@%s ready=%v serving=%v terminating=%v", e.Addresses, node,
			condition(e.Conditions.Ready), condition(e.Conditions.Serving), condition(e.Conditions.Terminating)))
	}
	return fmt.Sprintf("slice %s %s rv %s: %s", strings.ToLower(string(ev.Type)), s.Name, s.ResourceVersion, strings.Join(eps, ", "))
}

func condition(b *bool) string {
	if b == nil {
		return "-"
	}
	return strconv.FormatBool(*b)
}

// podChange describes the agent pods' lifecycle: phase, readiness, deletion.
func podChange(ev watch.Event) string {
	p, ok := ev.Object.(*corev1.Pod)
	if !ok {
		return ""
	}
	readyNow := false
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			readyNow = c.Status == corev1.ConditionTrue
		}
	}
	deleting := ""
	if p.DeletionTimestamp != nil {
		deleting = " deleting"
	}
	return fmt.Sprintf("agent %s %s on %s: %s ready=%v%s", strings.ToLower(string(ev.Type)), p.Name, p.Spec.NodeName, p.Status.Phase, readyNow, deleting)
}
