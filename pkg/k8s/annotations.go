package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// The node annotations Flannel's kube subnet manager reads and writes. edgeplane publishes the same
// ones so that Flannel nodes and edgeplane nodes find each other's VTEPs in one cluster.
const (
	flannelPrefix = "flannel.alpha.coreos.com/"

	BackendTypeAnnotation       = flannelPrefix + "backend-type"
	BackendDataAnnotation       = flannelPrefix + "backend-data"
	PublicIPAnnotation          = flannelPrefix + "public-ip"
	PublicIPOverwriteAnnotation = flannelPrefix + "public-ip-overwrite"
	KubeSubnetManagerAnnotation = flannelPrefix + "kube-subnet-manager"

	// PodCIDRAnnotation holds the pod CIDR edgeplane allocated to a node whose spec.podCIDR is empty.
	PodCIDRAnnotation = "edgeplane.io/pod-cidr"

	// RoutesAdvertisedAnnotation names the route-mode domain whose routers have the node's pod
	// CIDR: its BGP speaker sets it once a session is up, and removes it before it withdraws.
	// The domain's other nodes send to the node's pods unencapsulated only while it is there
	// (make before break on a switch to route mode; docs/domains.md).
	RoutesAdvertisedAnnotation = "edgeplane.io/routes-advertised"
)

// VNI is the VXLAN network identifier Flannel uses by default; the wire format fixes it.
const VNI = 1

// ErrNoVTEP means the node has not published a VTEP yet (its agent has not started); it is not a
// configuration error.
var ErrNoVTEP = errors.New("node has no vxlan backend annotations yet")

// backendData is the JSON in the backend-data annotation, as Flannel's vxlan backend writes it.
type backendData struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// VTEP is how a node is reached over the overlay.
type VTEP struct {
	MAC net.HardwareAddr // inner destination MAC: the node's VXLAN device
	IP  netip.Addr       // outer destination as Flannel picks it: the node's public tunnel endpoint
	// LocalIP is the tunnel endpoint within the node's own network domain: public-ip (the address
	// the node's agent found on its underlay), else its InternalIP; public-ip-overwrite (a NAT
	// address) is for senders in other domains.
	LocalIP netip.Addr
}

// Endpoint is the outer destination for a sender that shares the node's L3 network (sameNetwork:
// both in one named domain) or does not.
func (v VTEP) Endpoint(sameNetwork bool) netip.Addr {
	if sameNetwork && v.LocalIP.IsValid() {
		return v.LocalIP
	}
	return v.IP
}

// NodeVTEP reads a node's VTEP from its Flannel annotations. The tunnel endpoint is public-ip-overwrite
// when set, else public-ip, else the node's InternalIP; LocalIP skips public-ip-overwrite.
func NodeVTEP(node *Node) (VTEP, error) {
	a := node.Annotations
	typ, data := a.Get(BackendTypeAnnotation), a.Get(BackendDataAnnotation)
	if typ == "" && data == "" {
		return VTEP{}, ErrNoVTEP
	}
	if typ != "vxlan" {
		return VTEP{}, fmt.Errorf("annotation %s=%q: only vxlan is supported", BackendTypeAnnotation, typ)
	}
	var bd backendData
	if err := json.Unmarshal([]byte(data), &bd); err != nil {
		return VTEP{}, fmt.Errorf("annotation %s=%q: %w", BackendDataAnnotation, data, err)
	}
	if bd.VNI != VNI {
		return VTEP{}, fmt.Errorf("annotation %s: VNI %d, want %d", BackendDataAnnotation, bd.VNI, VNI)
	}
	mac, err := net.ParseMAC(bd.VtepMAC)
	if err != nil || len(mac) != 6 {
		return VTEP{}, fmt.Errorf("annotation %s: VtepMAC %q is not an Ethernet address", BackendDataAnnotation, bd.VtepMAC)
	}
	ip, err := tunnelEndpoint(node, PublicIPOverwriteAnnotation, PublicIPAnnotation)
	if err != nil {
		return VTEP{}, err
	}
	local, err := tunnelEndpoint(node, PublicIPAnnotation)
	if err != nil {
		return VTEP{}, err
	}
	return VTEP{MAC: mac, IP: ip, LocalIP: local}, nil
}

func tunnelEndpoint(node *Node, keys ...string) (netip.Addr, error) {
	for _, key := range keys {
		v, ok := node.Annotations.Lookup(key)
		if !ok || v == "" {
			continue
		}
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is4() {
			return netip.Addr{}, fmt.Errorf("annotation %s=%q is not an IPv4 address", key, v)
		}
		return ip, nil
	}
	if ip, ok := InternalIP(node); ok {
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("no %s annotation and no IPv4 InternalIP", PublicIPAnnotation)
}

// InternalIP is the node's first IPv4 InternalIP address.
func InternalIP(node *Node) (netip.Addr, bool) {
	for _, a := range node.Status.Addresses {
		if a.Type != api.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// NodePodCIDR is the node's IPv4 pod CIDR: spec.podCIDRs (set by kube-controller-manager) first,
// else the edgeplane allocation annotation. ok is false when the node has none yet.
func NodePodCIDR(node *Node) (cidr netip.Prefix, ok bool, err error) {
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, false, fmt.Errorf("spec.podCIDR %q: %w", s, err)
		}
		if p.Addr().Is4() {
			return p.Masked(), true, nil
		}
	}
	if s, found := node.Annotations.Lookup(PodCIDRAnnotation); found {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return netip.Prefix{}, false, fmt.Errorf("annotation %s=%q is not an IPv4 prefix", PodCIDRAnnotation, s)
		}
		return p.Masked(), true, nil
	}
	return netip.Prefix{}, false, nil
}

// VTEPAnnotations are the annotations a node publishes so that peers (edgeplane or Flannel) reach it.
func VTEPAnnotations(vtep VTEP) map[string]string {
	data, _ := json.Marshal(backendData{VNI: VNI, VtepMAC: vtep.MAC.String()}) // cannot fail
	return map[string]string{
		BackendTypeAnnotation:       "vxlan",
		BackendDataAnnotation:       string(data),
		PublicIPAnnotation:          vtep.IP.String(),
		KubeSubnetManagerAnnotation: "true",
	}
}

// PatchNodeAnnotations sets annotations on a node with a JSON merge patch that touches nothing else,
// and skips the request when they are already there.
func PatchNodeAnnotations(ctx context.Context, api API, node *Node, want map[string]string) error {
	if hasAnnotations(node, want) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": want}})
	if err != nil {
		return fmt.Errorf("encoding annotation patch: %w", err)
	}
	_, err = api.PatchNode(ctx, node.Name, patch)
	if err != nil {
		return fmt.Errorf("patching annotations of node %s: %w", node.Name, err)
	}
	return nil
}

func hasAnnotations(node *Node, want map[string]string) bool {
	for k, v := range want {
		if got, ok := node.Annotations.Lookup(k); !ok || got != v {
			return false
		}
	}
	return true
}
