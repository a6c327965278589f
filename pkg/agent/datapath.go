package agent

import (
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
)

// The node's VXLAN device and the datapath's configuration (node_cfg_map, nonmasq_map,
// attachments), converged at start-up and every resync period (convergeLoop).

// ensureDevice converges the VXLAN device, its routes (cluster and service CIDRs, host-hairpin
// address) and the sysctls.
func (a *Agent) ensureDevice() error {
	dev, err := netdev.EnsureVXLAN(netdev.VXLAN{
		Name:    a.cfg.VXLANDevice,
		MTU:     a.underlay.MTU - vxlanOverhead,
		MAC:     a.vtepMAC,
		Address: a.podCIDR.Addr(),
	})
	if err != nil {
		return err
	}
	a.device = dev
	overlay := a.podCIDR.Addr()
	if err := netdev.EnsureRoutes(dev.Index,
		netdev.DeviceRoute{Dst: a.cfg.ClusterCIDR, Src: overlay},
		netdev.DeviceRoute{Dst: a.cfg.ServiceCIDR, Src: overlay},
		netdev.DeviceRoute{Dst: netip.PrefixFrom(datapath.HostHairpinIP, 32), Src: a.underlay.IP},
	); err != nil {
		return err
	}
	if err := netdev.EnsureForwarding(a.cfg.ProcSys, a.cfg.VXLANDevice); err != nil {
		return err
	}
	// kube-proxy's conntrack setting, which a node without kube-proxy still needs (netdev).
	_, err = netdev.EnsureConntrackCloseWait(a.cfg.ProcSys, a.cfg.CTTCPCloseWaitTimeout)
	return err
}

func (a *Agent) overlayMTU() int {
	if a.cfg.MTU != 0 {
		return a.cfg.MTU
	}
	return a.underlay.MTU - vxlanOverhead
}

// podMTU is the MTU of new pods' interfaces (the CNI plugin reads it from the node config): the
// overlay's in a vxlan domain, the underlay's in a route-mode one, whose paths carry pods' packets
// as they are. There the VXLAN paths that remain (to other domains) keep PMTU right per
// destination: pod_egress answers a packet with DF that does not fit the overlay with
// "fragmentation needed" at overlayMTU, and hands one without DF to the host stack to fragment.
// --mtu sets both. Pods keep the MTU they were created with.
func (a *Agent) podMTU() int {
	if a.cfg.MTU == 0 {
		if r := a.routing.Load(); r != nil && r.Encapsulation == domain.Route {
			return a.underlay.MTU
		}
	}
	return a.overlayMTU()
}

// programDatapath writes node_cfg_map and nonmasq_map and converges the attachments.
func (a *Agent) programDatapath() error {
	c, err := a.nodeConfig()
	if err != nil {
		return err
	}
	if err := a.nodeCfg.Put(c); err != nil {
		return err
	}
	nonMasq := append(PrefixList{a.cfg.ClusterCIDR}, a.cfg.NonMasqueradeCIDRs...)
	if err := a.nonMasq.Sync(nonMasq); err != nil {
		return err
	}
	if err := a.dp.AttachUnderlay(a.underlay.Index); err != nil {
		return err
	}
	if _, err := a.dp.AttachUnderlayXDP(a.underlay.Index); err != nil {
		return err
	}
	return a.dp.AttachOverlayDevice(a.device.Index)
}

func (a *Agent) nodeConfig() (nodecfg.NodeCfg, error) {
	c := nodecfg.NodeCfg{
		UnderlayIfindex: uint32(a.underlay.Index),
		VxlanIfindex:    uint32(a.device.Index),
		VNI:             k8s.VNI,
		MTU:             uint16(a.overlayMTU()), // the inner packets VXLAN paths carry
		Flags:           nodecfg.FlagReady,
		EncapMode:       nodecfg.EncapNative,
	}
	if a.cfg.EncapMode == EncapDevice {
		c.EncapMode = nodecfg.EncapDevice
	}
	if a.cfg.Masquerade {
		c.Flags |= nodecfg.FlagMasquerade
	}
	a.localMu.Lock()
	local := a.local
	a.localMu.Unlock()
	c.Domain = local.DomainID
	if local.IsGateway {
		c.Flags |= nodecfg.FlagGateway
	}
	if local.Gateway.IsValid() {
		gw, err := maps.IPv4From(local.Gateway)
		if err != nil {
			return c, err
		}
		c.GatewayIP = gw
	}
	copy(c.VtepMAC[:], a.device.MAC)
	copy(c.UnderlayMAC[:], a.underlay.MAC)
	var err error
	if c.NodeIP, err = maps.IPv4From(a.underlay.IP); err != nil {
		return c, err
	}
	if err := c.SetPodCIDR(a.podCIDR); err != nil {
		return c, err
	}
	if err := c.SetCTCloseTimeouts(a.cfg.CTCloseTimeouts()); err != nil {
		return c, err
	}
	return c, c.SetClusterCIDR(a.cfg.ClusterCIDR)
}

// setLocal records this node's domain and gateway and rewrites node_cfg_map with them.
func (a *Agent) setLocal(s controller.LocalState) error {
	a.localMu.Lock()
	a.local = s
	a.localMu.Unlock()
	c, err := a.nodeConfig()
	if err != nil {
		return err
	}
	return a.nodeCfg.Put(c)
}
