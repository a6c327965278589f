package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/agentinfo"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
	"github.com/edgeplane/edgeplane/pkg/cniconf"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
	"github.com/edgeplane/edgeplane/pkg/snapshot"
)

// uninstallAPITimeout bounds the API server part of an uninstall: a node that cannot reach it still
// gets its local state removed, promptly. ownerGoneAPITimeout is the same when the DaemonSet's
// deletion started the uninstall, inside the pod's termination grace period.
const (
	uninstallAPITimeout = 20 * time.Second
	ownerGoneAPITimeout = 5 * time.Second
)

// vtepAnnotations are the Flannel annotations the agent publishes on its Node (k8s.VTEPAnnotations).
var vtepAnnotations = []string{
	k8s.BackendTypeAnnotation, k8s.BackendDataAnnotation, k8s.PublicIPAnnotation, k8s.KubeSubnetManagerAnnotation,
}

// Uninstall removes what edgeplane put on this node (edgeplane-agent --uninstall), leaving it as it
// was; run it once the DaemonSet is gone, or an agent still running puts everything back. In order:
//   - node.json, then the conflist (--cni-conf-dir): the runtime and the plugin stop wiring pods;
//   - the name index beside node.json (pkg/nameindex: pod and node names for edgeplanectl);
//   - the BGP report beside it (bgp.json, pkg/bgp/bgpstatus). The BGP routes themselves were
//     withdrawn by the stopping agent when its DaemonSet was deleted (Run); after a plain
//     `--uninstall` the site's router drops them when its graceful-restart time ends;
//   - this node's Flannel annotations, when the API server answers and they are edgeplane's (their
//     VTEP MAC is the one the agent derives from the node name), so that nothing (Flannel, a new
//     CNI) reads a VTEP that is about to disappear; and edgeplane.io/routes-advertised (route mode),
//     so that a later install's peers do not send to this node's pods unencapsulated before its
//     speaker has advertised them again;
//   - every pinned link (underlay, VXLAN device, pod veths), which detaches the programs, then the
//     programs and maps (datapath.Cleanup);
//   - the VXLAN device, and with it its address and the cluster and service CIDR and host-hairpin routes;
//   - the CNI plugin binary (--cni-bin-dir).
//
// Deliberately kept:
//   - the edgeplane.io/pod-cidr annotation and its claim Lease: pods still running on the node hold
//     addresses from that CIDR (host-local's state is on disk), so freeing it could give the same
//     addresses to another node's pods. A reinstalled agent takes the same CIDR back; the claim
//     goes with the Node (ownerReference).
//   - sysctls: net.ipv4.ip_forward=1 is what any CNI needs (kubeadm's preflight demands it), the
//     device's rp_filter vanishes with the device, and the previous value of a relaxed "all"
//     rp_filter was never recorded (a strict one would break the next overlay just the same).
//   - the reference plugins (host-local, portmap, bandwidth): usually the runtime's packaging.
//
// Every step tolerates what is already gone, so a second uninstall succeeds. Failing to reach the
// API server is logged, naming what is left, and is not an error: the node is what is uninstalled.
func Uninstall(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	client, err := k8s.NewClient(cfg.Kubeconfig)
	if err != nil {
		klog.FromContext(ctx).Error(err, "No API server client; this node's annotations stay", "annotations", vtepAnnotations)
		return uninstall(ctx, cfg, nil, uninstallAPITimeout) // an untyped nil: no API server
	}
	return uninstall(ctx, cfg, client, uninstallAPITimeout)
}

// uninstall is Uninstall with the client given, its API server part bounded by apiTimeout; a nil
// client skips the API server.
func uninstall(ctx context.Context, cfg Config, client k8s.API, apiTimeout time.Duration) error {
	logger := klog.FromContext(ctx)
	var errs []error
	if err := removeFile(ctx, cninode.Path(cfg.RunDir)); err != nil {
		errs = append(errs, err)
	}
	if cfg.CNIConfDir != "" {
		if err := removeFile(ctx, filepath.Join(cfg.CNIConfDir, cniconf.ConflistName)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := nameindex.Remove(cfg.RunDir); err != nil {
		errs = append(errs, err)
	}
	if err := bgpstatus.Remove(cfg.RunDir); err != nil {
		errs = append(errs, err)
	}
	if err := agentinfo.Remove(cfg.RunDir); err != nil {
		errs = append(errs, err)
	}
	if cfg.SnapshotDir != "" { // a later install must not start from this one's state
		if err := removeFile(ctx, snapshot.Path(cfg.SnapshotDir)); err != nil {
			errs = append(errs, err)
		}
	}
	if client != nil {
		apiCtx, cancel := context.WithTimeout(ctx, apiTimeout)
		err := removeVTEPAnnotations(apiCtx, client, cfg.NodeName, netdev.LinkMAC(cfg.VXLANDevice))
		cancel()
		if err != nil {
			logger.Error(err, "Could not remove this node's annotations; remove them by hand",
				"node", cfg.NodeName, "command", "kubectl annotate node "+cfg.NodeName+" "+strings.Join(vtepAnnotations, "- ")+"-")
		}
	}
	if err := datapath.Cleanup(cfg.BPFFSRoot); err != nil {
		errs = append(errs, fmt.Errorf("removing pins under %s: %w", cfg.BPFFSRoot, err))
	} else {
		logger.Info("Removed pinned links, programs and maps", "root", cfg.BPFFSRoot)
	}
	if deleted, err := netdev.DeleteVXLAN(cfg.VXLANDevice); err != nil {
		errs = append(errs, err)
	} else if deleted {
		logger.Info("Deleted the vxlan device and its routes", "device", cfg.VXLANDevice)
	}
	if n, err := netdev.DeleteHostRoutes(); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		logger.Info("Deleted edgeplane's host routes (unreachable domains, cloud gateway)", "routes", n, "protocol", int(netdev.RouteProtocol))
	}
	if cfg.CNIBinDir != "" {
		if err := removeFile(ctx, filepath.Join(cfg.CNIBinDir, cniconf.PluginType)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger.Info("Uninstalled edgeplane from this node", "node", cfg.NodeName)
	return nil
}

func removeFile(ctx context.Context, path string) error {
	err := os.Remove(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("removing %s: %w", path, err)
	}
	klog.FromContext(ctx).Info("Removed", "path", path)
	return nil
}

// removeVTEPAnnotations removes the Flannel annotations from the node when edgeplane published them.
// Those of another VTEP (Flannel's own, after a switch back) are left. The merge patch carries the
// resourceVersion it was decided on, so a concurrent change makes it retry rather than remove
// annotations it did not look at. deviceMAC is the MAC of edgeplane's VXLAN device (nil when there
// is none): a node moved from Flannel publishes the MAC it kept from flannel.1.
func removeVTEPAnnotations(ctx context.Context, client k8s.API, nodeName string, deviceMAC net.HardwareAddr) error {
	logger := klog.FromContext(ctx)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := client.GetNode(ctx, nodeName)
		if apierrors.IsNotFound(err) {
			logger.Info("Node object not found; no annotations to remove", "node", nodeName)
			return nil
		}
		if err != nil {
			return fmt.Errorf("getting node %s: %w", nodeName, err)
		}
		present := presentAnnotations(node)
		if len(present) > 0 && !publishedByEdgeplane(node, deviceMAC) {
			logger.Info("This node's Flannel annotations are not edgeplane's (another VTEP MAC); leaving them",
				"node", nodeName, "backendData", node.Annotations.Get(k8s.BackendDataAnnotation))
			present = nil
		}
		if node.Annotations.Has(k8s.RoutesAdvertisedAnnotation) {
			present = append(present, k8s.RoutesAdvertisedAnnotation) // edgeplane's own, whatever the VTEP
		}
		if len(present) == 0 {
			return nil
		}
		remove := make(map[string]any, len(present))
		for _, k := range present {
			remove[k] = nil // JSON merge patch: null deletes the key
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"resourceVersion": node.ResourceVersion, "annotations": remove,
		}})
		if err != nil {
			return fmt.Errorf("encoding annotation patch: %w", err)
		}
		if _, err := client.PatchNode(ctx, nodeName, patch); err != nil {
			return fmt.Errorf("removing annotations of node %s: %w", nodeName, err)
		}
		logger.Info("Removed this node's VTEP annotations", "node", nodeName, "annotations", present)
		return nil
	})
}

func presentAnnotations(node *k8s.Node) []string {
	var present []string
	for _, k := range vtepAnnotations {
		if node.Annotations.Has(k) {
			present = append(present, k)
		}
	}
	return present
}

// publishedByEdgeplane tells whether the node's backend-data names the VTEP MAC edgeplane derives
// from the node name, or the MAC of edgeplane's device (deviceMAC). Without backend-data (a half-published set) the rest is edgeplane's too:
// Flannel always writes backend-data.
func publishedByEdgeplane(node *k8s.Node, deviceMAC net.HardwareAddr) bool {
	data, ok := node.Annotations.Lookup(k8s.BackendDataAnnotation)
	if !ok {
		return true
	}
	var bd struct {
		VtepMAC string `json:"VtepMAC"`
	}
	if err := json.Unmarshal([]byte(data), &bd); err != nil {
		return false
	}
	return strings.EqualFold(bd.VtepMAC, netdev.VTEPMAC(node.Name).String()) ||
		deviceMAC != nil && strings.EqualFold(bd.VtepMAC, deviceMAC.String())
}
