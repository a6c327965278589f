package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Capture reads every frame crossing one interface of a lab namespace (an AF_PACKET socket made
// inside it), e.g. a node's port on the switch, to check what goes over the wire.
type Capture struct {
	fd int
}

// StartCapture opens a capture on ifname inside ns.
func StartCapture(ns Netns, ifname string) (*Capture, error) {
	var c Capture
	err := InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("binding packet socket to %s: %w", ifname, err)
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("capturing on %s in %s: %w", ifname, ns, err)
	}
	return &c, nil
}

// Next returns the next frame, or an error once timeout passes without one.
func (c *Capture) Next(timeout time.Duration) ([]byte, error) {
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	n, _, err := unix.Recvfrom(c.fd, buf, 0)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// Drops is how many frames the kernel dropped since the last call because the capture's buffer
// was full (PACKET_STATISTICS): a reader that counts frames at high rates adds them to its count
// to know how many crossed.
func (c *Capture) Drops() (int, error) {
	st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0, fmt.Errorf("capture statistics: %w", err)
	}
	return int(st.Drops), nil
}

// Close ends the capture.
func (c *Capture) Close() error { return unix.Close(c.fd) }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// VXLANFrame is a decoded Ethernet/IPv4/UDP/VXLAN frame with its inner Ethernet/IPv4 headers.
type VXLANFrame struct {
	OuterSrc, OuterDst netip.Addr
	UDPDst             uint16
	Flags              uint8
	VNI                uint32
	InnerSrcMAC        net.HardwareAddr
	InnerDstMAC        net.HardwareAddr
	InnerSrc, InnerDst netip.Addr
	InnerProto         uint8
}

// ParseVXLAN decodes frame as VXLAN over IPv4/UDP on dstPort; ok is false for anything else.
func ParseVXLAN(frame []byte, dstPort uint16) (f VXLANFrame, ok bool) {
	if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP {
		return f, false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8+8+14+20 {
		return f, false
	}
	udp := ip[ihl:]
	if binary.BigEndian.Uint16(udp[2:4]) != dstPort {
		return f, false
	}
	vx := udp[8:]
	inner := vx[8:]
	if binary.BigEndian.Uint16(inner[12:14]) != unix.ETH_P_IP {
		return f, false
	}
	iip := inner[14:]
	f = VXLANFrame{
		OuterSrc:    netip.AddrFrom4([4]byte(ip[12:16])),
		OuterDst:    netip.AddrFrom4([4]byte(ip[16:20])),
		UDPDst:      dstPort,
		Flags:       vx[0],
		VNI:         uint32(vx[4])<<16 | uint32(vx[5])<<8 | uint32(vx[6]),
		InnerDstMAC: net.HardwareAddr(append([]byte(nil), inner[0:6]...)),
		InnerSrcMAC: net.HardwareAddr(append([]byte(nil), inner[6:12]...)),
		InnerSrc:    netip.AddrFrom4([4]byte(iip[12:16])),
		InnerDst:    netip.AddrFrom4([4]byte(iip[16:20])),
		InnerProto:  iip[9],
	}
	return f, true
}
