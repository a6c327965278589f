package netdev

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// procSys is where sysctls live; per network namespace for net.*.
const procSys = "/proc/sys"

// EnsureForwarding turns on IPv4 forwarding and makes reverse-path filtering tolerate the VXLAN
// device: decapsulated packets arrive there from remote pod addresses. The device gets rp_filter=0;
// since the kernel applies max(all, device), a strict (1) "all" is relaxed to loose (2).
func EnsureForwarding(vxlanDev string) error {
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if err := writeSysctl("net/ipv4/conf/"+vxlanDev+"/rp_filter", "0"); err != nil {
		return err
	}
	all, err := readSysctl("net/ipv4/conf/all/rp_filter")
	if err != nil {
		return err
	}
	if all == "1" {
		return writeSysctl("net/ipv4/conf/all/rp_filter", "2")
	}
	return nil
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(procSys, name))
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(name, value string) error {
	if got, err := readSysctl(name); err == nil && got == value {
		return nil
	}
	if err := os.WriteFile(filepath.Join(procSys, name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", name, value, err)
	}
	return nil
}
