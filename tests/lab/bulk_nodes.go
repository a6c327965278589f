package lab

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	domainmodel "github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// Bulk Nodes load the agents' node side the way a large edge cluster does: thousands of Node
// objects as kubelet, kubeadm and Flannel's annotations leave them (labels, conditions, capacity,
// nodeInfo, images), in pools grouped into network domains, with /26 pod CIDRs from a /12 cluster
// CIDR. No node is behind them: their underlay addresses are in BulkNodeNet, which nothing in the
// lab owns, and their VTEPs are made up. The agents program routes and tunnel endpoints for them
// and never send to them (nothing in the lab addresses their pod CIDRs).

var (
	// BulkClusterCIDR is the cluster CIDR of a lab with bulk Nodes (the agents' --cluster-cidr):
	// a /12 that holds the lab's own nodes' ClusterCIDR and the bulk Nodes' pod CIDRs.
	BulkClusterCIDR = netip.MustParsePrefix("10.240.0.0/12")
	// BulkPodCIDRs holds the bulk Nodes' pod CIDRs (16,384 /26s), outside ClusterCIDR.
	BulkPodCIDRs = netip.MustParsePrefix("10.248.0.0/13")
	// BulkNodeNet holds the bulk Nodes' underlay addresses (RFC 2544's benchmark network).
	BulkNodeNet = netip.MustParsePrefix("198.18.0.0/15")
)

// BulkNodeMask is the prefix length of a bulk Node's pod CIDR.
const BulkNodeMask = 26

// BulkNodeLabel marks bulk Nodes, so they can be listed and deleted together.
const BulkNodeLabel = "bench.edgeplane.io/bulk-node"

// BulkNodeName is the name of bulk Node i.
func BulkNodeName(i int) string { return fmt.Sprintf("bulk-node-%05d", i) }

// BulkNodePodCIDR is bulk Node i's pod CIDR: the i-th /26 of BulkPodCIDRs.
func BulkNodePodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(offset(BulkPodCIDRs.Addr(), uint32(i)<<(32-BulkNodeMask)), BulkNodeMask)
}

// BulkNodeIP is bulk Node i's underlay address in BulkNodeNet (i < 131,070).
func BulkNodeIP(i int) netip.Addr { return offset(BulkNodeNet.Addr(), uint32(i)+1) }

func offset(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := binary.BigEndian.Uint32(b[:]) + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// BulkPool is the pool of bulk Node i among `pools` pools: pool-000 .. pool-<pools-1>, round robin.
func BulkPool(i, pools int) string { return fmt.Sprintf("pool-%03d", i%max(pools, 1)) }

// BulkDomain is the domain of pool p (BulkPool's number) among `domains` domains: domain-00 ..,
// pools dealt round robin.
func BulkDomain(p, domains int) string { return fmt.Sprintf("domain-%02d", p%max(domains, 1)) }

// BulkDomainConfig is the domain ConfigMap's config.yaml that groups `pools` pools into
// `domains` domains (BulkDomain), every pair of domains public (the default).
func BulkDomainConfig(pools, domains int) string {
	members := map[string][]string{}
	for p := range pools {
		d := BulkDomain(p, domains)
		members[d] = append(members[d], BulkPool(p, pools))
	}
	var sb strings.Builder
	sb.WriteString("domains:\n")
	for d := range domains {
		name := BulkDomain(d, domains)
		fmt.Fprintf(&sb, "  %s: [%s]\n", name, strings.Join(members[name], ", "))
	}
	return sb.String()
}

// SetDomainConfig creates or replaces the agents' domain ConfigMap (edgeplane-system/
// edgeplane-domains, the agent's default) with config.yaml.
func (l *Lab) SetDomainConfig(ctx context.Context, config string) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-domains", Namespace: AgentNamespace},
		Data: map[string]string{domainmodel.ConfigKey: config}}
	cms := l.Client.CoreV1().ConfigMaps(AgentNamespace)
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("updating the domain configmap: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("creating the domain configmap: %w", err)
	}
	return nil
}

// BulkNodes creates bulk Nodes from..to-1 (BulkNodeName), in `pools` pools (BulkPool), with
// `workers` parallel writers: each Node is created, then its status written as kubelet's would
// be. Nodes that already exist are kept. It returns how many were created.
func (l *Lab) BulkNodes(ctx context.Context, from, to, pools, workers int) (int, error) {
	if err := l.checkOpen(); err != nil {
		return 0, err
	}
	if most := 1 << (BulkNodeMask - BulkPodCIDRs.Bits()); to > most {
		return 0, fmt.Errorf("bulk nodes: %d nodes, want at most %d (the /26s of %s)", to, most, BulkPodCIDRs)
	}
	cs, err := l.bulkClient()
	if err != nil {
		return 0, err
	}
	return bulkCreate(ctx, from, to, workers, func(ctx context.Context, i int) (bool, error) {
		return CreateBulkNode(ctx, cs, i, pools)
	})
}

// BulkClient is an admin client without client-side rate limits, for writing bulk objects.
func (l *Lab) BulkClient() (kubernetes.Interface, error) { return l.bulkClient() }

// CreateBulkNode creates bulk Node i in one of `pools` pools and writes its status. It reports
// false when the Node existed.
func CreateBulkNode(ctx context.Context, cs kubernetes.Interface, i, pools int) (bool, error) {
	name, cidr, ip := BulkNodeName(i), BulkNodePodCIDR(i).String(), BulkNodeIP(i)
	vtep, err := json.Marshal(map[string]any{"VNI": k8s.VNI, "VtepMAC": fmt.Sprintf("02:b0:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))})
	if err != nil {
		return false, err
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{
				BulkNodeLabel: "true", domainmodel.DefaultPoolLabel: BulkPool(i, pools),
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": "ecs.c6.large", corev1.LabelTopologyZone: "zone-" + BulkPool(i, pools),
				"topology.kubernetes.io/region": "edge",
			},
			Annotations: map[string]string{
				k8s.BackendTypeAnnotation: "vxlan", k8s.BackendDataAnnotation: string(vtep),
				k8s.PublicIPAnnotation: ip.String(), k8s.KubeSubnetManagerAnnotation: "true",
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
				"kubeadm.alpha.kubernetes.io/cri-socket":                 "unix:///run/containerd/containerd.sock",
			}},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}, ProviderID: "lab://" + name},
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("creating node %s: %w", name, err)
	}
	created.Status = bulkNodeStatus(i, name, ip, time.Now())
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("writing the status of node %s: %w", name, err)
	}
	return true, nil
}

// bulkNodeStatus is a node status as kubelet writes it (addresses, capacity, conditions, system
// info, a few images).
func bulkNodeStatus(i int, name string, ip netip.Addr, now time.Time) corev1.NodeStatus {
	resources := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("2009324Ki"),
		corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("40901312Ki"),
		"hugepages-1Gi": resource.MustParse("0"), "hugepages-2Mi": resource.MustParse("0"),
	}
	stamp := metav1.NewTime(now)
	condition := func(t corev1.NodeConditionType, status corev1.ConditionStatus, reason, message string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: status, Reason: reason, Message: message, LastHeartbeatTime: stamp, LastTransitionTime: stamp}
	}
	s := corev1.NodeStatus{
		Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name}},
		Capacity:    resources,
		Allocatable: resources,
		Conditions: []corev1.NodeCondition{
			condition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			condition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			condition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			condition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		NodeInfo: corev1.NodeSystemInfo{MachineID: fmt.Sprintf("%032x", i), SystemUUID: fmt.Sprintf("ec2%029x", i), BootID: "boot-" + name,
			KernelVersion: "6.1.0-28-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://1.7.24",
			KubeletVersion: "v1.31.4", KubeProxyVersion: "", OperatingSystem: "linux", Architecture: "amd64"},
	}
	for _, img := range []string{"registry.k8s.io/pause:3.10", "openyurt/yurthub:v1.6.1", "edgeplane/edgeplane-agent:latest",
		"registry.k8s.io/coredns/coredns:v1.11.3", "prom/node-exporter:v1.8.2"} {
		s.Images = append(s.Images, corev1.ContainerImage{Names: []string{img, img + "@sha256:" + strings.Repeat("0", 64)}, SizeBytes: 20 << 20})
	}
	return s
}

// BulkNodeHeartbeat writes bulk Node i's status as kubelet does every nodeStatusReportFrequency
// (5 minutes) when nothing changed: the conditions' heartbeat stamps move (a strategic merge
// patch of the status subresource, as kubelet sends).
func BulkNodeHeartbeat(ctx context.Context, cs kubernetes.Interface, i int, now time.Time) error {
	stamp := now.UTC().Format(time.RFC3339)
	var conditions []map[string]string
	for _, t := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady} {
		conditions = append(conditions, map[string]string{"type": string(t), "lastHeartbeatTime": stamp})
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conditions}})
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Nodes().Patch(ctx, BulkNodeName(i), types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", BulkNodeName(i), err)
	}
	return nil
}

// DeleteBulkNodes deletes every bulk Node (DeleteCollection by label).
func (l *Lab) DeleteBulkNodes(ctx context.Context) error {
	cs, err := l.bulkClient()
	if err != nil {
		return err
	}
	sel := metav1.ListOptions{LabelSelector: BulkNodeLabel + "=true"}
	if err := cs.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		return fmt.Errorf("deleting bulk nodes: %w", err)
	}
	return nil
}

// RouteWatch looks one pod CIDR up in a node's pinned routes_map, for timing how fast a new
// Node reaches the datapath without iterating thousands of routes.
type RouteWatch struct {
	m      *ebpf.Map
	key    []byte
	nodeIP netip.Addr
}

// WatchRoute opens n's routes_map to look cidr up, expecting it to point at nodeIP.
func WatchRoute(n *Node, cidr netip.Prefix, nodeIP netip.Addr) (*RouteWatch, error) {
	m, err := ebpf.LoadPinnedMap(n.MapPath("routes_map"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("opening routes_map of %s: %w", n.Name, err)
	}
	// struct route_key: prefixlen in host order, then the address in network order.
	key := binary.NativeEndian.AppendUint32(nil, uint32(cidr.Bits()))
	key = append(key, cidr.Addr().AsSlice()...)
	return &RouteWatch{m: m, key: key, nodeIP: nodeIP}, nil
}

// Present reports whether the route is there and points at the expected node.
func (w *RouteWatch) Present() (bool, error) {
	v := make([]byte, w.m.ValueSize())
	if err := w.m.Lookup(w.key, &v); errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return netip.AddrFrom4([4]byte(v[:4])) == w.nodeIP, nil
}

// Wait looks the route up every interval until it is present or deadline passes, and returns
// when it was first seen.
func (w *RouteWatch) Wait(deadline time.Time, interval time.Duration) (time.Time, error) {
	for {
		ok, err := w.Present()
		now := time.Now()
		if err != nil {
			return now, err
		}
		if ok {
			return now, nil
		}
		if now.After(deadline) {
			return now, fmt.Errorf("route %s -> %s: not in routes_map by %s", netip.PrefixFrom(netip.AddrFrom4([4]byte(w.key[4:8])), int(binary.NativeEndian.Uint32(w.key[:4]))), w.nodeIP, deadline.Format(time.TimeOnly))
		}
		time.Sleep(interval)
	}
}

// Close closes the map.
func (w *RouteWatch) Close() error { return w.m.Close() }
