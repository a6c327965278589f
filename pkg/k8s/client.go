// Package k8s connects the agent to the API server: a client of only the API groups the agent uses
// (from a kubeconfig file or the in-cluster service account), the informers the reconcilers
// read from (every Node; only the Pods scheduled to this node, filtered by the API server with a
// field selector), and the node annotations edgeplane shares with Flannel. Nothing here writes to
// BPF maps.
//
// The client is not client-go's clientset: that one, and its informer factory, register every API
// group of Kubernetes in their scheme at start-up and link the code of each, which costs the agent
// megabytes of memory for types it never sees. Here REST clients of core/v1, discovery/v1 and
// coordination/v1 serve the narrow API interface with the agent's own types of the first two
// (package api, and the compact Node, Service and EndpointSlice), and the informers are
// client-go's plain ones (informers.go), built on ListerWatchers of that interface. They list,
// then watch: no streamed initial lists, which YurtHub's cache does not answer (listsOnly).
package k8s

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/connrotation"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// userAgent names the agent in API server audit logs and metrics.
const userAgent = "edgeplane-agent"

// Scheme holds the API types the agent reads and writes, and the event recorder references
// objects with: of core/v1 and discovery/v1 those it reads (its own: package api, and the compact
// Node, Service and EndpointSlice), coordination/v1, and meta/v1's options, status and watch
// events.
var Scheme = runtime.NewScheme()

func init() {
	metav1.AddToGroupVersion(Scheme, api.CoreV1) // also meta/v1's options, status and watch events
	// Nodes, Services and EndpointSlices as the cache keeps them, decoded straight into it
	// (nodedecode.go, servicedecode.go, slicedecode.go), from protobuf and from JSON alike; their
	// lists when not protobuf (decodeList) and the rest as this module's API types (package api).
	Scheme.AddKnownTypes(api.CoreV1, &Node{}, &api.NodeList{}, &Service{}, &api.ServiceList{},
		&api.Pod{}, &api.PodList{}, &api.ConfigMap{}, &api.ConfigMapList{}, &api.Secret{}, &api.Event{})
	Scheme.AddKnownTypes(api.DiscoveryV1, &EndpointSlice{}, &api.EndpointSliceList{})
	metav1.AddToGroupVersion(Scheme, api.DiscoveryV1)
	utilruntime.Must(coordinationv1.AddToScheme(Scheme))
}

// Resource names a resource the agent lists and watches.
type Resource string

const (
	Nodes          Resource = "nodes"
	Pods           Resource = "pods"
	Services       Resource = "services"
	EndpointSlices Resource = "endpointslices"
	ConfigMaps     Resource = "configmaps"
)

// API is the part of the Kubernetes API the agent calls, one method a request. Client implements
// it against the API server; tests implement it on client-go's fake clientset (package k8stest).
type API interface {
	// GetNode gets the Node as the informers' cache keeps it (TrimForCache): the agent reads no
	// more of a Node.
	GetNode(ctx context.Context, name string) (*Node, error)
	// ListNodes lists every Node, as the informers' cache keeps them (TrimForCache).
	ListNodes(ctx context.Context) ([]*Node, error)
	// PatchNode applies a JSON merge patch to the Node.
	PatchNode(ctx context.Context, name string, patch []byte) (*Node, error)

	ListLeases(ctx context.Context, namespace, labelSelector string) (*coordinationv1.LeaseList, error)
	GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error)
	CreateLease(ctx context.Context, namespace string, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
	// UpdateLease replaces the Lease, failing with a conflict when its resourceVersion is stale.
	UpdateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
	DeleteLease(ctx context.Context, namespace, name string, pre metav1.Preconditions) error

	// The event methods work in the event's namespace.
	CreateEvent(ctx context.Context, event *api.Event) (*api.Event, error)
	// PatchEvent applies a strategic merge patch to the event.
	PatchEvent(ctx context.Context, event *api.Event, patch []byte) (*api.Event, error)

	// GetSecret reads one Secret: the TCP-MD5 password of a route-mode domain's BGP peer.
	GetSecret(ctx context.Context, namespace, name string) (*api.Secret, error)

	// ListerWatcher lists and watches resource in namespace (every namespace when empty), only the
	// objects fieldSelector selects.
	ListerWatcher(resource Resource, namespace string, fieldSelector fields.Selector) cache.ListerWatcher
}

// Client is the API client of the agent: one REST client a group version.
type Client struct {
	core, discovery, coordination rest.Interface
	// coreJSON is the core group's client in JSON, for the kinds the agent has no protobuf
	// decoding of (Pods, ConfigMaps, Secrets, Events): few objects, each small as the agent reads it.
	coreJSON rest.Interface
	// metadata reads objects as metav1.PartialObjectMetadata (OwnDaemonSet), without their types.
	metadata metadata.Interface

	// dialer made every connection of the groups' clients; CloseAll ends them (reachability.go).
	dialer *connrotation.Dialer
	// probeClient and probeURL serve Probe: a transport of its own, HTTP/1.1.
	probeClient *http.Client
	probeURL    string
	// reachability, when set, holds the informers' lists and watches while the API server is
	// unreachable.
	reachability *Reachability
	// decoder decodes the informers' lists that are not protobuf (decodeList).
	decoder runtime.Decoder
}

var _ API = (*Client)(nil)

// NewClient connects with the kubeconfig at path, or with the in-cluster service account when path
// is empty.
func NewClient(path string) (*Client, error) {
	cfg, err := restConfig(path)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = userAgent
	probe, probeURL, err := probeClient(cfg)
	if err != nil {
		return nil, err
	}
	// Every connection through one dialer, so that the end of an outage can close them all: a
	// watch on a connection that died during it would wait for TCP's retransmission backoff
	// (seconds to minutes) or HTTP/2's ping timeout before noticing.
	dialer := connrotation.NewDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	cfg.Dial = dialer.DialContext
	// One connection pool for the three groups, as the clientset shares its transport.
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the API client: %w", err)
	}
	codecs := rest.CodecFactoryForGeneratedClient(Scheme, serializer.NewCodecFactory(Scheme)).WithoutConversion()
	forGroup := func(gv schema.GroupVersion, apiPath string, codecs runtime.NegotiatedSerializer, protobuf bool) (rest.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath, c.NegotiatedSerializer = &gv, apiPath, codecs
		c.ContentType = runtime.ContentTypeJSON
		if protobuf {
			// Protobuf, with JSON as the fallback, as the clientset asks for built-in types:
			// smaller on the wire and cheaper to decode.
			c.ContentType = runtime.ContentTypeProtobuf
			c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		}
		rc, err := rest.RESTClientForConfigAndClient(c, httpClient)
		if err != nil {
			return nil, fmt.Errorf("creating the API client of %s: %w", gv, err)
		}
		return rc, nil
	}
	c := Client{dialer: dialer, probeClient: probe, probeURL: probeURL,
		decoder: serializer.NewCodecFactory(Scheme).UniversalDeserializer()}
	// The Nodes of the core group's watches are decoded as the cache keeps them (nodedecode.go).
	if c.core, err = forGroup(api.CoreV1, "/api", nodeDecoding{codecs}, true); err != nil {
		return nil, err
	}
	if c.coreJSON, err = forGroup(api.CoreV1, "/api", codecs, false); err != nil {
		return nil, err
	}
	if c.discovery, err = forGroup(api.DiscoveryV1, "/apis", codecs, true); err != nil {
		return nil, err
	}
	if c.coordination, err = forGroup(coordinationv1.SchemeGroupVersion, "/apis", codecs, true); err != nil {
		return nil, err
	}
	if c.metadata, err = metadata.NewForConfigAndClient(cfg, httpClient); err != nil {
		return nil, fmt.Errorf("creating the API metadata client: %w", err)
	}
	return &c, nil
}

// probeClient is Probe's HTTP client: the same server and credentials as the API client, over
// HTTP/1.1 on connections of its own, so that a failed probe closes its connection and the next
// one dials afresh (an HTTP/2 connection would be shared, and kept while dead).
func probeClient(cfg *rest.Config) (*http.Client, string, error) {
	pc := rest.CopyConfig(cfg)
	pc.TLSClientConfig.NextProtos = []string{"http/1.1"}
	pc.Dial = (&net.Dialer{Timeout: DefaultProbeTimeout}).DialContext
	hc, err := rest.HTTPClientFor(pc)
	if err != nil {
		return nil, "", fmt.Errorf("creating the API server probe: %w", err)
	}
	host := strings.TrimSuffix(pc.Host, "/")
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	return hc, host + "/version", nil
}

// Probe asks the API server for its version: an error only when it does not answer (any HTTP
// status is an answer).
func (c *Client) Probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.probeURL, nil)
	if err != nil {
		return err
	}
	resp, err := c.probeClient.Do(req)
	if err != nil {
		c.probeClient.CloseIdleConnections()
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return nil
}

// FollowReachability makes the informers' lists and watches wait while r finds the API server
// unreachable, and closes every API connection when an outage ends (reachability.go).
func (c *Client) FollowReachability(r *Reachability) {
	c.reachability = r
	r.OnReconnect(func(Outage) { c.dialer.CloseAll() })
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

func (c *Client) GetNode(ctx context.Context, name string) (*Node, error) {
	node := &Node{}
	if err := c.core.Get().Resource("nodes").Name(name).Do(ctx).Into(node); err != nil {
		return nil, err
	}
	return node, nil
}

// ListNodes lists the Nodes as the informers' cache keeps them (TrimForCache: names, labels, pod
// CIDRs, Flannel's and edgeplane's annotations, addresses), decoded an item at a time
// (decodeList): the pod CIDR allocator reads no more, and 5,000 full Nodes decoded whole are ~45
// MB at the agent's start.
func (c *Client) ListNodes(ctx context.Context) ([]*Node, error) {
	body, err := c.core.Get().Resource("nodes").Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	obj, err := decodeList(body, Nodes, c.decoder)
	if err != nil {
		return nil, err
	}
	if list, ok := obj.(*api.NodeList); ok { // not protobuf: decoded whole
		return NodesOf(list), nil
	}
	list, ok := obj.(*metainternalversion.List)
	if !ok {
		return nil, fmt.Errorf("listing nodes: decoded %T", obj)
	}
	nodes := make([]*Node, 0, len(list.Items))
	for _, item := range list.Items {
		n, ok := item.(*Node)
		if !ok {
			return nil, fmt.Errorf("listing nodes: decoded %T", item)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

func (c *Client) PatchNode(ctx context.Context, name string, patch []byte) (*Node, error) {
	node := &Node{}
	if err := c.core.Patch(types.MergePatchType).Resource("nodes").Name(name).Body(patch).Do(ctx).Into(node); err != nil {
		return nil, err
	}
	return node, nil
}

func (c *Client) ListLeases(ctx context.Context, namespace, labelSelector string) (*coordinationv1.LeaseList, error) {
	leases := &coordinationv1.LeaseList{}
	err := c.coordination.Get().Namespace(namespace).Resource("leases").
		VersionedParams(&metav1.ListOptions{LabelSelector: labelSelector}, metav1.ParameterCodec).
		Do(ctx).Into(leases)
	if err != nil {
		return nil, err
	}
	return leases, nil
}

func (c *Client) GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	lease := &coordinationv1.Lease{}
	if err := c.coordination.Get().Namespace(namespace).Resource("leases").Name(name).Do(ctx).Into(lease); err != nil {
		return nil, err
	}
	return lease, nil
}

func (c *Client) CreateLease(ctx context.Context, namespace string, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	created := &coordinationv1.Lease{}
	if err := c.coordination.Post().Namespace(namespace).Resource("leases").Body(lease).Do(ctx).Into(created); err != nil {
		return nil, err
	}
	return created, nil
}

func (c *Client) UpdateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	updated := &coordinationv1.Lease{}
	err := c.coordination.Put().Namespace(lease.Namespace).Resource("leases").Name(lease.Name).Body(lease).Do(ctx).Into(updated)
	if err != nil {
		return nil, err
	}
	return updated, nil
}

func (c *Client) DeleteLease(ctx context.Context, namespace, name string, pre metav1.Preconditions) error {
	return c.coordination.Delete().Namespace(namespace).Resource("leases").Name(name).
		Body(&metav1.DeleteOptions{Preconditions: &pre}).Do(ctx).Error()
}

func (c *Client) GetSecret(ctx context.Context, namespace, name string) (*api.Secret, error) {
	secret := &api.Secret{}
	if err := c.coreJSON.Get().Namespace(namespace).Resource("secrets").Name(name).Do(ctx).Into(secret); err != nil {
		return nil, err
	}
	return secret, nil
}

func (c *Client) CreateEvent(ctx context.Context, event *api.Event) (*api.Event, error) {
	created := &api.Event{}
	if err := c.coreJSON.Post().NamespaceIfScoped(event.Namespace, event.Namespace != "").Resource("events").Body(event).Do(ctx).Into(created); err != nil {
		return nil, err
	}
	return created, nil
}

func (c *Client) PatchEvent(ctx context.Context, event *api.Event, patch []byte) (*api.Event, error) {
	patched := &api.Event{}
	err := c.coreJSON.Patch(types.StrategicMergePatchType).NamespaceIfScoped(event.Namespace, event.Namespace != "").Resource("events").Name(event.Name).
		Body(patch).Do(ctx).Into(patched)
	if err != nil {
		return nil, err
	}
	return patched, nil
}

func (c *Client) ListerWatcher(resource Resource, namespace string, fieldSelector fields.Selector) cache.ListerWatcher {
	var client rest.Interface
	switch resource {
	case Nodes, Services:
		client = c.core
	case EndpointSlices:
		client = c.discovery
	default:
		client = c.coreJSON
	}
	// As the clientset's List and Watch: the server's timeout (set by the reflector on watches)
	// bounds the request on this side too, so that a silent connection does not hold it forever.
	request := func(opts *metav1.ListOptions) *rest.Request {
		opts.FieldSelector = fieldSelector.String()
		var timeout time.Duration
		if opts.TimeoutSeconds != nil {
			timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
		}
		return client.Get().NamespaceIfScoped(namespace, namespace != "").Resource(string(resource)).
			VersionedParams(opts, metav1.ParameterCodec).Timeout(timeout)
	}
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		// A list is decoded as it arrives, each item trimmed for the cache (list.go).
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			if err := c.reachability.Wait(ctx); err != nil {
				return nil, err
			}
			body, err := request(&opts).Stream(ctx)
			if err != nil {
				return nil, err
			}
			defer body.Close()
			return decodeList(body, resource, c.decoder)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			if err := c.reachability.Wait(ctx); err != nil {
				return nil, err
			}
			opts.Watch = true
			return request(&opts).Watch(ctx)
		},
	}, listsOnly{})
}

// listsOnly makes the reflectors list and then watch, never stream their initial list (client-go's
// WatchListClient, on by default since 0.35: a watch with sendInitialEvents that counts as synced
// at the server's initial-events-end bookmark). A proxy's cache answers lists but not those
// streams: YurtHub (openyurt v1.7.0, openyurt#2751), the API server of an OpenYurt edge node,
// answers a watch from its cache with a stream that never sends an event, so an agent started
// while the cloud is unreachable would never sync its informers. The reflectors' first lists ask
// for resourceVersion 0, which the API server answers from its watch cache.
type listsOnly struct{}

// IsWatchListSemanticsUnSupported is what client-go's reflector asks
// (watchlist.DoesClientNotSupportWatchListSemantics).
func (listsOnly) IsWatchListSemanticsUnSupported() bool { return true }
