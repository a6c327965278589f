package metrics

import (
	"github.com/edgeplane/edgeplane/pkg/agentinfo"
)

// Kernel family names: what the datapath's feature probes found on this node's kernel
// (pkg/datapath KernelFeatures), set once the datapath is loaded.
const (
	KernelFeature = "edgeplane_kernel_feature"
	KernelInfo    = "edgeplane_kernel_info"
)

var kernelFamilies = []Family{
	{KernelFeature, "gauge", []string{"feature"}, "Whether the node's kernel offers each feature the datapath chooses by kernel (1/0): tcx, check_mtu, encap_l2_eth; without one the datapath uses the fallback docs/install.md names."},
	{KernelInfo, "gauge", []string{"release"}, "Always 1; the label is the node's kernel release (uname -r)."},
}

// SetKernel exports what the feature probes found on the kernel k.
func (m *Metrics) SetKernel(k agentinfo.Kernel) {
	m.kernelInfo.Reset()
	m.kernelInfo.WithLabelValues(k.Release).Set(1)
	for _, f := range k.Features {
		m.kernelFeature.WithLabelValues(f.Name).Set(boolValue(f.Available))
	}
}
