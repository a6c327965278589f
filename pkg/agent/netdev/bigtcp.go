package netdev

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// BigTCPv4Size is the IPv4 GSO and GRO size of BIG TCP (Linux 6.3): TCP hands the devices
// packets of up to 192 KiB instead of 64 KiB, a third of the per-packet work on a bulk stream.
// Cilium's default too.
const BigTCPv4Size = 196608

// EnsureBigTCPv4 raises the IPv4 GSO and GRO sizes of the link with index to size, and returns
// the size in effect: size, or 0 with the reason when the link cannot take it. A NIC whose TSO
// takes less than size would get GSO packets the kernel has to segment in software before it
// (slower than no BIG TCP: 0.55-0.62x on the two-node hold, docs/benchmarks.md), and a kernel before
// 6.3 ignores the attributes (read back to tell).
func EnsureBigTCPv4(index, size int) (int, error) {
	link, err := netlink.LinkByIndex(index)
	if err != nil {
		return 0, fmt.Errorf("underlay interface %d: %w", index, err)
	}
	attrs := link.Attrs()
	if attrs.TSOMaxSize == 0 { // IFLA_TSO_MAX_SIZE came with Linux 5.18, BIG TCP for IPv4 with 6.3
		return 0, fmt.Errorf("%s: the kernel has no IPv4 BIG TCP (Linux 6.3)", attrs.Name)
	}
	if int(attrs.TSOMaxSize) < size {
		return 0, fmt.Errorf("%s takes TSO packets of at most %d bytes, not %d", attrs.Name, attrs.TSOMaxSize, size)
	}
	if int(attrs.GSOIPv4MaxSize) == size && int(attrs.GROIPv4MaxSize) == size {
		return size, nil
	}
	if err := SetGSOIPv4MaxSize(link, size); err != nil {
		return 0, err
	}
	return size, nil
}

// SetGSOIPv4MaxSize sets link's IPv4 GSO and GRO sizes (BIG TCP) and checks that the kernel
// took them: one before Linux 6.3 ignores the attributes. It works in the caller's network
// namespace.
func SetGSOIPv4MaxSize(link netlink.Link, size int) error {
	name := link.Attrs().Name
	if err := netlink.LinkSetGSOIPv4MaxSize(link, size); err != nil {
		return fmt.Errorf("setting gso_ipv4_max_size %d on %s: %w", size, name, err)
	}
	if err := netlink.LinkSetGROIPv4MaxSize(link, size); err != nil {
		return fmt.Errorf("setting gro_ipv4_max_size %d on %s: %w", size, name, err)
	}
	got, err := netlink.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return fmt.Errorf("reading %s back: %w", name, err)
	}
	if a := got.Attrs(); int(a.GSOIPv4MaxSize) != size || int(a.GROIPv4MaxSize) != size {
		return fmt.Errorf("%s kept gso_ipv4_max_size %d and gro_ipv4_max_size %d: the kernel has no IPv4 BIG TCP (Linux 6.3)",
			name, a.GSOIPv4MaxSize, a.GROIPv4MaxSize)
	}
	return nil
}
