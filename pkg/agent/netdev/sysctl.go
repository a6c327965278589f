package netdev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultProcSys is where sysctls live; net.* entries answer for the network namespace of the
// process that opens them, so a hostNetwork container may use the host's /proc/sys/net mounted
// elsewhere (runtimes mount the container's own /proc/sys read-only).
const DefaultProcSys = "/proc/sys"

// EnsureForwarding turns on IPv4 forwarding and makes reverse-path filtering tolerate the VXLAN
// device: decapsulated packets arrive there from remote pod addresses. The device gets rp_filter=0;
// since the kernel applies max(all, device), a strict (1) "all" is relaxed to loose (2). IPv6 is
// off on the device: the overlay is IPv4, and its link-local chatter would only be counted as
// UNSUPPORTED_L3 drops by overlay_egress.
func EnsureForwarding(procSys, vxlanDev string) error {
	if err := writeSysctl(procSys, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if err := writeSysctl(procSys, "net/ipv6/conf/"+vxlanDev+"/disable_ipv6", "1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := writeSysctl(procSys, "net/ipv4/conf/"+vxlanDev+"/rp_filter", "0"); err != nil {
		return err
	}
	all, err := readSysctl(procSys, "net/ipv4/conf/all/rp_filter")
	if err != nil {
		return err
	}
	if all == "1" {
		return writeSysctl(procSys, "net/ipv4/conf/all/rp_filter", "2")
	}
	return nil
}

// conntrackCloseWait is the kernel's CLOSE_WAIT timeout of netfilter connection tracking, in
// seconds; it exists while nf_conntrack is loaded, per network namespace.
const conntrackCloseWait = "net/netfilter/nf_conntrack_tcp_timeout_close_wait"

// EnsureConntrackCloseWait sets netfilter's CLOSE_WAIT timeout, as kube-proxy does with its
// --conntrack-tcp-timeout-close-wait: the host's own connections and what reaches pods through
// netfilter (hostPort, the host stack's forwarding of masqueraded pod traffic) are tracked there,
// and the kernel's 60 s would forget a connection half-closed by one side while the other side
// may still send. It reports false, without error, where nf_conntrack is not loaded (nothing is
// tracked; the next pass sets it once something loads it).
func EnsureConntrackCloseWait(procSys string, timeout time.Duration) (bool, error) {
	if timeout <= 0 {
		return false, nil
	}
	if _, err := os.Stat(filepath.Join(procSys, conntrackCloseWait)); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	seconds := int64((timeout + time.Second - 1) / time.Second)
	if err := writeSysctl(procSys, conntrackCloseWait, strconv.FormatInt(seconds, 10)); err != nil {
		return false, err
	}
	return true, nil
}

func readSysctl(procSys, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(procSys, name))
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(procSys, name, value string) error {
	if got, err := readSysctl(procSys, name); err == nil && got == value {
		return nil
	}
	if err := os.WriteFile(filepath.Join(procSys, name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", name, value, err)
	}
	return nil
}
