// Package k8s connects the agent to the API server: it builds the clientset (from a kubeconfig file
// or the in-cluster service account), the shared informer factories the reconcilers read from (every
// Node; only the Pods scheduled to this node, filtered by the API server with a field selector), and
// knows the node annotations edgeplane shares with Flannel. Nothing here writes to BPF maps.
package k8s

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// userAgent names the agent in API server audit logs and metrics.
const userAgent = "edgeplane-agent"

// NewClientset connects with the kubeconfig at path, or with the in-cluster service account when path
// is empty.
func NewClientset(path string) (kubernetes.Interface, error) {
	cfg, err := restConfig(path)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = userAgent
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating clientset: %w", err)
	}
	return cs, nil
}

func restConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (pass --kubeconfig outside a pod): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// Informers are the two factories the agent starts: one for cluster-wide objects and one whose
// Pods are only those bound to this node, so a large cluster does not stream every Pod to every node.
type Informers struct {
	Cluster informers.SharedInformerFactory
	Local   informers.SharedInformerFactory
}

// NewInformers builds the factories; call Start on both after registering handlers.
func NewInformers(cs kubernetes.Interface, nodeName string, resync time.Duration) Informers {
	onNode := fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	return Informers{
		Cluster: informers.NewSharedInformerFactoryWithOptions(cs, resync, informers.WithTransform(TrimForCache)),
		Local: informers.NewSharedInformerFactoryWithOptions(cs, resync, informers.WithTransform(TrimForCache),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = onNode })),
	}
}

// NewConfigMapInformerFactory is a factory whose ConfigMaps are only the one named namespace/name:
// the agent's RBAC grants exactly that one.
func NewConfigMapInformerFactory(cs kubernetes.Interface, namespace, name string) informers.SharedInformerFactory {
	byName := fields.OneTermEqualSelector("metadata.name", name).String()
	return informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace), informers.WithTransform(TrimForCache),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = byName }))
}

// Start starts every informer registered so far on both factories.
func (i Informers) Start(stop <-chan struct{}) {
	i.Cluster.Start(stop)
	i.Local.Start(stop)
}

// Shutdown stops the informers and waits for their goroutines.
func (i Informers) Shutdown() {
	i.Cluster.Shutdown()
	i.Local.Shutdown()
}
