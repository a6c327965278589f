package netdev

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Flannel's device names (pkg/backend/vxlan: "flannel.<VNI>"; the CNI bridge plugin's default
// bridge, which kube-flannel's conflist uses).
const (
	FlannelDevice = "flannel.1"
	FlannelBridge = "cni0"
)

// PortHolder is a VXLAN device other than edgeplane's that is up on a UDP port: while it is, the
// kernel refuses to bring up a second device with different flags on that port (EADDRINUSE).
type PortHolder struct {
	Name      string
	Index     int
	VNI       int
	Port      int
	FlowBased bool
	MAC       net.HardwareAddr
}

func (h PortHolder) String() string {
	if h.FlowBased {
		return fmt.Sprintf("vxlan device %s (external, UDP %d)", h.Name, h.Port)
	}
	return fmt.Sprintf("vxlan device %s (VNI %d, UDP %d)", h.Name, h.VNI, h.Port)
}

// FlannelShaped says whether the device is what flanneld's vxlan backend creates for
// Flannel-compatible networking: flannel.1, VNI 1, UDP 8472, one VNI (not external).
func (h PortHolder) FlannelShaped() bool {
	return h.Name == FlannelDevice && h.VNI == 1 && h.Port == VXLANPort && !h.FlowBased
}

// VXLANPortHolders lists the VXLAN devices, except the one called except, that are up on UDP port.
func VXLANPortHolders(port int, except string) ([]PortHolder, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []PortHolder
	for _, l := range links {
		v, ok := l.(*netlink.Vxlan)
		if !ok || v.Name == except || v.Port != port || v.Flags&net.FlagUp == 0 {
			continue
		}
		out = append(out, PortHolder{Name: v.Name, Index: v.Index, VNI: v.VxlanId, Port: v.Port, FlowBased: v.FlowBased,
			MAC: v.HardwareAddr})
	}
	return out, nil
}

// DeletePortHolder deletes the device h names, if it is still the same device (same index and
// name); its addresses, routes, neighbours and FDB entries go with it.
func DeletePortHolder(h PortHolder) error {
	l, err := netlink.LinkByIndex(h.Index)
	if err != nil || l.Attrs().Name != h.Name {
		return fmt.Errorf("%s changed while it was being taken over (ifindex %d): %w", h.Name, h.Index, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("deleting %s: %w", h, err)
	}
	return nil
}

// BridgePorts reports whether a bridge called name exists and the names of the links enslaved to
// it. A link of that name that is not a bridge is reported as absent: it is not Flannel's cni0.
func BridgePorts(name string) (exists bool, ports []string, err error) {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return false, nil, nil
	case err != nil:
		return false, nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return false, nil, nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return true, nil, fmt.Errorf("listing links: %w", err)
	}
	for _, p := range links {
		if p.Attrs().MasterIndex == l.Attrs().Index {
			ports = append(ports, p.Attrs().Name)
		}
	}
	return true, ports, nil
}

// DeleteEmptyBridge deletes the bridge called name when no link is enslaved to it (its address
// and routes go with it). It reports whether it deleted it, and the ports that keep it otherwise.
func DeleteEmptyBridge(name string) (deleted bool, ports []string, err error) {
	exists, ports, err := BridgePorts(name)
	if err != nil || !exists || len(ports) > 0 {
		return false, ports, err
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false, nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return false, nil, fmt.Errorf("deleting bridge %s: %w", name, err)
	}
	return true, nil, nil
}

// portInUse names, in an EADDRINUSE from bringing the VXLAN device up, what holds the port.
func portInUse(device string, err error) error {
	if !errors.Is(err, unix.EADDRINUSE) {
		return fmt.Errorf("setting %s up: %w", device, err)
	}
	holders, lerr := VXLANPortHolders(VXLANPort, device)
	if lerr != nil || len(holders) == 0 {
		return fmt.Errorf("setting %s up: UDP port %d is taken by another socket (no other vxlan device is up on it): %w",
			device, VXLANPort, err)
	}
	names := make([]string, len(holders))
	for i, h := range holders {
		names[i] = h.String()
	}
	return fmt.Errorf("setting %s up: UDP port %d is held by %s; stop what created it and delete it (ip link delete %s): %w",
		device, VXLANPort, strings.Join(names, ", "), holders[0].Name, err)
}

// LinkMAC is the hardware address of the link called name, nil when there is none.
func LinkMAC(name string) net.HardwareAddr {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	return l.Attrs().HardwareAddr
}
