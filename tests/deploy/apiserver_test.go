package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// The agent's identity, as its pod-bound service account token presents it.
const (
	agentUser      = "system:serviceaccount:edgeplane-system:edgeplane-agent"
	nodeNameExtra  = "authentication.kubernetes.io/node-name"
	fieldManager   = "edgeplane-deploy-test"
	policyDeniedRE = "edgeplane-agent may"
)

var agentGroups = []string{"system:serviceaccounts", "system:serviceaccounts:edgeplane-system", "system:authenticated"}

// warnings collects the API server's warning headers (deprecations, ignored fields).
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	w.list = append(w.list, text)
	w.mu.Unlock()
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}

// apiLab is a lab with only the API server (no nodes): the manifests need nothing else.
type apiLab struct {
	admin    *rest.Config
	client   kubernetes.Interface
	dynamic  dynamic.Interface
	mapper   meta.RESTMapper
	warnings *warnings
}

func newAPILab(t *testing.T) *apiLab {
	t.Helper()
	cfg, err := lab.ConfigFromEnv()
	if errors.Is(err, lab.ErrNotRoot) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logf = t.Logf
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.KeepLogs()
		}
		l.Close()
	})
	a := &apiLab{admin: l.API.RESTConfig(), client: l.Client, warnings: &warnings{}}
	withWarnings := rest.CopyConfig(a.admin)
	withWarnings.WarningHandler = a.warnings
	if a.dynamic, err = dynamic.NewForConfig(withWarnings); err != nil {
		t.Fatal(err)
	}
	a.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(l.Client.Discovery()))
	return a
}

// apply server-side applies obj, as `kubectl apply --server-side [--dry-run=server]` does.
func (a *apiLab) apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	var res dynamic.ResourceInterface = a.dynamic.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		res = a.dynamic.Resource(m.Resource).Namespace(obj.GetNamespace())
	}
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = res.Apply(ctx, obj.GetName(), obj, opts)
	return err
}

// impersonate is a client acting as the agent's service account; nodeName, when set, is the node
// its token is bound to.
func (a *apiLab) impersonate(t *testing.T, nodeName string) kubernetes.Interface {
	t.Helper()
	return a.impersonateAs(t, agentUser, nodeName)
}

// impersonateUser is a client acting as another service account of the agent's namespace.
func (a *apiLab) impersonateUser(t *testing.T, user string) kubernetes.Interface {
	t.Helper()
	return a.impersonateAs(t, user, "")
}

func (a *apiLab) impersonateAs(t *testing.T, user, nodeName string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(a.admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: agentGroups}
	if nodeName != "" {
		cfg.Impersonate.Extra = map[string][]string{nodeNameExtra: {nodeName}}
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAgainstAPIServer runs the manifest checks that need a real API server, on one lab.
func TestAgainstAPIServer(t *testing.T) {
	a := newAPILab(t)
	objs := objects(t)
	t.Run("DryRunApply", func(t *testing.T) { testDryRunApply(t, a, objs) })
	t.Run("Apply", func(t *testing.T) {
		for _, o := range objs {
			if err := a.apply(t.Context(), o, false); err != nil {
				t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	})
	if t.Failed() {
		return
	}
	t.Run("RBAC", func(t *testing.T) { testRBAC(t, a) })
	t.Run("NodePatchPolicy", func(t *testing.T) { testNodePatchPolicy(t, a) })
}

// testDryRunApply: every object is accepted by the API server's validation and admission, with no
// warning. The namespace is created for real first, as the namespaced objects need it.
func testDryRunApply(t *testing.T, a *apiLab, objs []*unstructured.Unstructured) {
	ctx := t.Context()
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			if err := a.apply(ctx, o, false); err != nil {
				t.Fatalf("creating namespace %s: %v", o.GetName(), err)
			}
		}
	}
	a.warnings.take()
	for _, o := range objs {
		if err := a.apply(ctx, o, true); err != nil {
			t.Errorf("%s %s/%s rejected: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		for _, w := range a.warnings.take() {
			t.Errorf("%s %s/%s: API server warning: %s", o.GetKind(), o.GetNamespace(), o.GetName(), w)
		}
	}
}

// access is one request the agent may or may not make.
type access struct {
	verb, group, resource, subresource, namespace, name string
}

func (x access) String() string {
	r := x.resource
	if x.subresource != "" {
		r += "/" + x.subresource
	}
	if x.group != "" {
		r += "." + x.group
	}
	if x.name != "" {
		r += " " + x.name
	}
	ns := x.namespace
	if ns == "" {
		ns = "*"
	}
	return fmt.Sprintf("%s %s in %s", x.verb, r, ns)
}

// testRBAC: the service account may do what the agent does (pkg/agent, pkg/agent/podcidr,
// pkg/controller) and nothing else: SubjectAccessReviews both ways, then the rules the API server
// reports for it must be exactly the expected ones.
func testRBAC(t *testing.T, a *apiLab) {
	ctx := t.Context()
	allowed := []access{
		{verb: "get", resource: "nodes"}, {verb: "list", resource: "nodes"},
		{verb: "watch", resource: "nodes"}, {verb: "patch", resource: "nodes"},
		{verb: "list", resource: "pods"}, {verb: "watch", resource: "pods"},
		{verb: "list", resource: "pods", namespace: "kube-system"},
		{verb: "list", resource: "services"}, {verb: "watch", resource: "services"},
		{verb: "list", resource: "services", namespace: "default"},
		{verb: "list", group: "discovery.k8s.io", resource: "endpointslices"},
		{verb: "watch", group: "discovery.k8s.io", resource: "endpointslices"},
		{verb: "watch", group: "discovery.k8s.io", resource: "endpointslices", namespace: "kube-system"},
		// Warning events on Nodes (recorded in "default") and on Services, in their namespace.
		{verb: "create", resource: "events", namespace: "default"},
		{verb: "patch", resource: "events", namespace: "default"},
		{verb: "create", resource: "events", namespace: "kube-system"},
		{verb: "patch", resource: "events", namespace: "shop"},
	}
	for _, v := range []string{"get", "list", "watch"} {
		allowed = append(allowed, access{verb: v, resource: "configmaps", namespace: "edgeplane-system", name: "edgeplane-domains"})
	}
	for _, v := range []string{"create", "get", "list", "delete"} {
		allowed = append(allowed, access{verb: v, group: "coordination.k8s.io", resource: "leases", namespace: "kube-system"})
	}
	// The reporter Lease (pkg/k8s Election): create, and get/update of that one Lease.
	allowed = append(allowed, access{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: "edgeplane-system"})
	for _, v := range []string{"get", "update"} {
		allowed = append(allowed, access{verb: v, group: "coordination.k8s.io", resource: "leases", namespace: "edgeplane-system", name: "edgeplane-agent-reporter"})
	}
	// Route mode's BGP passwords: get of a Secret in the domain ConfigMap's namespace (pkg/agent bgp.go).
	allowed = append(allowed, access{verb: "get", resource: "secrets", namespace: "edgeplane-system", name: "site-a-bgp"})
	// Its own DaemonSet, by name (pkg/k8s OwnDaemonSet: deleted means uninstall).
	for _, v := range []string{"get", "list", "watch"} {
		allowed = append(allowed, access{verb: v, group: "apps", resource: "daemonsets", namespace: "edgeplane-system", name: "edgeplane-agent"})
	}
	denied := []access{
		{verb: "list", group: "apps", resource: "daemonsets", namespace: "edgeplane-system"},
		{verb: "get", group: "apps", resource: "daemonsets", namespace: "kube-system", name: "edgeplane-agent"},
		{verb: "delete", group: "apps", resource: "daemonsets", namespace: "edgeplane-system", name: "edgeplane-agent"},
		{verb: "update", group: "apps", resource: "daemonsets", namespace: "edgeplane-system", name: "edgeplane-agent"},
		{verb: "get", resource: "secrets"}, {verb: "list", resource: "secrets"}, {verb: "watch", resource: "secrets"},
		{verb: "get", resource: "secrets", namespace: "kube-system"},
		{verb: "list", resource: "secrets", namespace: "edgeplane-system"},
		{verb: "watch", resource: "secrets", namespace: "edgeplane-system"},
		{verb: "update", resource: "secrets", namespace: "edgeplane-system", name: "site-a-bgp"},
		{verb: "patch", resource: "pods", namespace: "default"}, {verb: "update", resource: "pods", namespace: "default"},
		{verb: "create", resource: "pods", namespace: "default"}, {verb: "delete", resource: "pods", namespace: "default"},
		{verb: "create", resource: "pods", subresource: "exec", namespace: "default"},
		{verb: "update", resource: "nodes"}, {verb: "delete", resource: "nodes"}, {verb: "create", resource: "nodes"},
		{verb: "patch", resource: "nodes", subresource: "status"}, {verb: "get", resource: "nodes", subresource: "proxy"},
		{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: "default"},
		{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: "edgeplane-system", name: "other"},
		{verb: "delete", group: "coordination.k8s.io", resource: "leases", namespace: "edgeplane-system", name: "edgeplane-agent-reporter"},
		{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: "kube-system"},
		{verb: "get", resource: "events", namespace: "default"}, {verb: "list", resource: "events"},
		{verb: "delete", resource: "events", namespace: "kube-system"}, {verb: "update", resource: "events", namespace: "default"},
		{verb: "create", group: "events.k8s.io", resource: "events", namespace: "default"},
		{verb: "create", resource: "services", namespace: "default"}, {verb: "update", resource: "services", namespace: "default"},
		{verb: "patch", resource: "services", subresource: "status", namespace: "default"},
		{verb: "delete", resource: "services", namespace: "default"},
		{verb: "create", group: "discovery.k8s.io", resource: "endpointslices", namespace: "default"},
		{verb: "update", group: "discovery.k8s.io", resource: "endpointslices", namespace: "default"},
		{verb: "delete", group: "discovery.k8s.io", resource: "endpointslices", namespace: "default"},
		{verb: "list", resource: "endpoints"}, {verb: "watch", resource: "endpoints"},
		{verb: "get", resource: "configmaps", namespace: "edgeplane-system"},
		{verb: "get", resource: "configmaps", namespace: "edgeplane-system", name: "edgeplane-config"},
		{verb: "get", resource: "configmaps", namespace: "kube-system", name: "edgeplane-domains"},
		{verb: "update", resource: "configmaps", namespace: "edgeplane-system", name: "edgeplane-domains"},
		{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: "edgeplane-system"},
		{verb: "impersonate", resource: "users"},
		{verb: "escalate", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
	}
	check := func(x access, want bool) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: agentUser, Groups: agentGroups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: x.verb, Group: x.group, Resource: x.resource, Subresource: x.subresource, Namespace: x.namespace, Name: x.name,
			},
		}}
		got, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%v: %v", x, err)
		}
		if got.Status.Allowed != want {
			t.Errorf("%v: allowed=%v, want %v (%s)", x, got.Status.Allowed, want, got.Status.Reason)
		}
	}
	for _, x := range allowed {
		check(x, true)
	}
	for _, x := range denied {
		check(x, false)
	}

	// What the API server says the agent may do, per namespace, must be exactly this: anything
	// more is a grant the agent does not use.
	common := []string{"get nodes", "list nodes", "watch nodes", "patch nodes", "list pods", "watch pods",
		"list services", "watch services", "list endpointslices.discovery.k8s.io", "watch endpointslices.discovery.k8s.io",
		"create events", "patch events", "get namespaces"}
	want := map[string][]string{
		"edgeplane-system": append(slices.Clone(common), "get configmaps/edgeplane-domains",
			"list configmaps/edgeplane-domains", "watch configmaps/edgeplane-domains",
			"create leases.coordination.k8s.io", "get leases.coordination.k8s.io/edgeplane-agent-reporter",
			"update leases.coordination.k8s.io/edgeplane-agent-reporter",
			"get daemonsets.apps/edgeplane-agent", "list daemonsets.apps/edgeplane-agent", "watch daemonsets.apps/edgeplane-agent",
			"get secrets"),
		"kube-system": append(slices.Clone(common), "create leases.coordination.k8s.io", "get leases.coordination.k8s.io",
			"list leases.coordination.k8s.io", "delete leases.coordination.k8s.io"),
		"default": slices.Clone(common),
		"shop":    slices.Clone(common),
	}
	agent := a.impersonate(t, "")
	for ns, rules := range want {
		// Less what any service account gets from the API server's default roles.
		baseline := grants(rulesOf(t, a.impersonateUser(t, "system:serviceaccount:edgeplane-system:nobody"), ns), nil)
		got := grants(rulesOf(t, agent, ns), baseline)
		sort.Strings(got)
		sort.Strings(rules)
		if !slices.Equal(got, rules) {
			t.Errorf("namespace %s: the agent may\n  %s\nwant exactly\n  %s", ns, strings.Join(got, "\n  "), strings.Join(rules, "\n  "))
		}
	}

	// And for real: secrets are refused, nodes listed.
	if _, err := agent.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets as the agent: %v, want Forbidden", err)
	}
	if _, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("listing nodes as the agent: %v", err)
	}
	if _, err := agent.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("listing services as the agent: %v", err)
	}
	if _, err := agent.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("listing endpointslices as the agent: %v", err)
	}
}

// rulesOf is what the API server says c's user may do in namespace ns.
func rulesOf(t *testing.T, c kubernetes.Interface, ns string) []authorizationv1.ResourceRule {
	t.Helper()
	review, err := c.AuthorizationV1().SelfSubjectRulesReviews().Create(t.Context(),
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if review.Status.Incomplete {
		t.Fatalf("rules review in %s is incomplete: %s", ns, review.Status.EvaluationError)
	}
	return review.Status.ResourceRules
}

// grants flattens rules into "verb resource[.group]", less those in except.
func grants(rules []authorizationv1.ResourceRule, except []string) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				if g != "" {
					res += "." + g
				}
				names := r.ResourceNames
				if len(names) == 0 {
					names = []string{""}
				}
				for _, v := range r.Verbs {
					for _, n := range names {
						x := v + " " + res
						if n != "" {
							x += "/" + n
						}
						if !slices.Contains(except, x) && !slices.Contains(out, x) {
							out = append(out, x)
						}
					}
				}
			}
		}
	}
	return out
}

// testNodePatchPolicy: through the ValidatingAdmissionPolicy the agent may patch its own Node's
// annotations (with the agent's own code, pkg/k8s.PatchNodeAnnotations) and nothing else.
func testNodePatchPolicy(t *testing.T, a *apiLab) {
	ctx := t.Context()
	const policy = "edgeplane-agent-own-node-annotations"

	// The policy's type-checking status is written by kube-controller-manager, which the lab does
	// not run. Its expressions are proven by use instead: with failurePolicy Fail, an expression
	// that does not evaluate denies every patch, the agent's own included (checked below).
	for _, name := range []string{"node-a", "node-b"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{"apps.openyurt.io/nodepool": "site-1"},
			Annotations: map[string]string{"example.com/operator-note": "keep"},
		}}
		if _, err := a.client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	onA := a.impersonate(t, "node-a")
	patch := func(c kubernetes.Interface, node, body string) error {
		_, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	deniedByPolicy := func(err error) bool {
		return err != nil && strings.Contains(err.Error(), policyDeniedRE)
	}

	// Admission policies take effect a moment after they are created: wait for a denial.
	otherNode := `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.2"}}}`
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last = patch(onA, "node-b", otherNode)
		return last != nil && strings.Contains(last.Error(), policyDeniedRE), nil
	})
	if err != nil {
		t.Fatalf("patching another node as the agent of node-a is still allowed: %v", last)
	}

	// Allowed: the agent's own patch of its own node.
	nodeA, err := a.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vtep := k8s.VTEPAnnotations(k8s.VTEP{MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, IP: netip.MustParseAddr("192.0.2.1")})
	vtep[k8s.PodCIDRAnnotation] = "10.244.1.0/24"
	vtep[k8s.RoutesAdvertisedAnnotation] = "site-1" // route mode's speaker, set and removed
	if err := k8s.PatchNodeAnnotations(ctx, k8stest.FromClientset(onA), k8stest.Node(nodeA), vtep); err != nil {
		t.Fatalf("the agent's own annotation patch is refused: %v", err)
	}
	if err := patch(onA, "node-a", `{"metadata":{"annotations":{"`+k8s.RoutesAdvertisedAnnotation+`":null}}}`); err != nil {
		t.Errorf("the agent removing its %s annotation is refused: %v", k8s.RoutesAdvertisedAnnotation, err)
	}
	delete(vtep, k8s.RoutesAdvertisedAnnotation)

	for name, c := range map[string]struct {
		client kubernetes.Interface
		node   string
		patch  string
	}{
		"another node":              {onA, "node-b", otherNode},
		"a token bound to no node":  {a.impersonate(t, ""), "node-a", otherNode},
		"a label":                   {onA, "node-a", `{"metadata":{"labels":{"apps.openyurt.io/nodepool":"site-2"}}}`},
		"an annotation not its own": {onA, "node-a", `{"metadata":{"annotations":{"example.com/operator-note":"changed"}}}`},
		"removing an annotation":    {onA, "node-a", `{"metadata":{"annotations":{"example.com/operator-note":null}}}`},
		"public-ip-overwrite":       {onA, "node-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip-overwrite":"198.51.100.1"}}}`},
		"spec":                      {onA, "node-a", `{"spec":{"unschedulable":true}}`},
		"taints":                    {onA, "node-a", `{"spec":{"taints":[{"key":"x","effect":"NoSchedule"}]}}`},
	} {
		if err := patch(c.client, c.node, c.patch); !deniedByPolicy(err) {
			t.Errorf("the agent patching %s: %v, want denied by %s", name, err, policy)
		}
	}
	// The policy binds the agent only.
	if err := patch(a.client, "node-a", `{"metadata":{"labels":{"apps.openyurt.io/nodepool":"site-2"}}}`); err != nil {
		t.Errorf("the admin's label patch is refused: %v", err)
	}
	got, err := a.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range vtep {
		if got.Annotations[k] != v {
			t.Errorf("node-a annotation %s=%q, want %q", k, got.Annotations[k], v)
		}
	}
	if got.Annotations["example.com/operator-note"] != "keep" || got.Spec.Unschedulable {
		t.Errorf("node-a changed by a denied patch: %v unschedulable=%v", got.Annotations, got.Spec.Unschedulable)
	}
}
