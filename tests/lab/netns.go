package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netnsDir is where `ip netns add` bind-mounts named namespaces.
const netnsDir = "/run/netns"

// Netns is a named network namespace created by the lab.
type Netns string

// Path is the namespace's bind mount, what CNI_NETNS and nsenter --net take.
func (n Netns) Path() string { return filepath.Join(netnsDir, string(n)) }

// Name is the name `ip netns` knows it by.
func (n Netns) Name() string { return string(n) }

func addNetns(ctx context.Context, name string) (Netns, error) {
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		return "", err
	}
	ns := Netns(name)
	if _, err := ns.IP(ctx, "link", "set", "lo", "up"); err != nil {
		deleteNetns(ns)
		return "", err
	}
	return ns, nil
}

// deleteNetns removes the namespace; its links go with it once no process holds it.
func deleteNetns(ns Netns) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := os.Stat(ns.Path()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_, err := run(ctx, "ip", "netns", "delete", ns.Name())
	return err
}

// IP runs iproute2 against the namespace (ip -n <ns> ...).
func (n Netns) IP(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"-n", n.Name()}, args...)...)
}

// Exec runs a command inside the namespace through nsenter(1), which, unlike `ip netns exec`, does
// not remount /sys. It returns combined output.
func (n Netns) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return run(ctx, "nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

// Sysctl writes a sysctl inside the namespace (key in dotted form, e.g. net.ipv4.ip_forward).
func (n Netns) Sysctl(key, value string) error {
	ns := n
	return InNetns(n, func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		f := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(f, []byte(value), 0o644); err != nil {
			return fmt.Errorf("setting %s=%s in %s: %w", key, value, ns, err)
		}
		return nil
	})
}

// LinkMTU is the MTU of the interface ifname inside the namespace.
func (n Netns) LinkMTU(ifname string) (int, error) {
	a, err := n.linkAttrs(ifname)
	return a.MTU, err
}

// LinkGSOIPv4 is the IPv4 GSO and GRO size of the interface ifname inside the namespace (65536
// unless raised for BIG TCP; 0 on a kernel without the attributes).
func (n Netns) LinkGSOIPv4(ifname string) (gso, gro int, err error) {
	a, err := n.linkAttrs(ifname)
	return int(a.GSOIPv4MaxSize), int(a.GROIPv4MaxSize), err
}

// LinkTxPackets is the count of packets the interface ifname inside the namespace transmitted.
func (n Netns) LinkTxPackets(ifname string) (uint64, error) {
	a, err := n.linkAttrs(ifname)
	if err != nil || a.Statistics == nil {
		return 0, err
	}
	return a.Statistics.TxPackets, nil
}

// Counter is one of the namespace's SNMP counters, as nstat names it without the group prefix:
// group is a line's prefix in /proc/net/snmp or /proc/net/netstat ("Tcp", "TcpExt", ...), e.g.
// ("Tcp", "RetransSegs"), the segments its sockets sent again, or ("TcpExt", "TCPSynRetrans").
// Counters only: the few signed fields (Tcp MaxConn, -1) do not parse.
func (n Netns) Counter(group, name string) (uint64, error) {
	var tables []byte
	// /proc/self/net is the namespace of the process's main thread; thread-self is this one's.
	err := InNetns(n, func() error {
		for _, file := range []string{"snmp", "netstat"} {
			b, err := os.ReadFile("/proc/thread-self/net/" + file)
			if err != nil {
				return err
			}
			tables = append(tables, b...)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("counters of %s: %w", n, err)
	}
	// Each group is two lines: its names, then its values, both after "<group>:".
	lines := strings.Split(string(tables), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != group+":" || len(values) != len(names) || values[0] != names[0] {
			continue
		}
		for j, field := range names[1:] {
			if field == name {
				v, err := strconv.ParseUint(values[j+1], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("counters of %s: %s %s: %w", n, group, name, err)
				}
				return v, nil
			}
		}
	}
	return 0, fmt.Errorf("counters of %s: no %s counter %s", n, group, name)
}

// linkAttrs reads the interface ifname inside the namespace.
func (n Netns) linkAttrs(ifname string) (netlink.LinkAttrs, error) {
	var attrs netlink.LinkAttrs
	err := InNetns(n, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("%s in %s: %w", ifname, n, err)
		}
		attrs = *l.Attrs()
		return nil
	})
	return attrs, err
}

// InNetns runs fn on an OS thread that has entered ns. Sockets fn creates stay in ns after fn
// returns, so they can be used from any goroutine.
func InNetns(ns Netns, fn func() error) error {
	target, err := netns.GetFromPath(ns.Path())
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering netns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime then discards it instead of reusing a thread
			// stuck in a lab namespace.
			errc <- errors.Join(ferr, fmt.Errorf("returning from netns %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// execInput is Exec with stdin read from input (iptables-restore).
func (n Netns) execInput(ctx context.Context, input, name string, args ...string) (string, error) {
	return runInput(ctx, input, "nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	return runInput(ctx, "", name, args...)
}

func runInput(ctx context.Context, input, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if input != "" {
		cmd.Stdin = strings.NewReader(input)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// openIn opens a socket (or anything) inside ns; it stays bound to ns after the thread leaves it.
func openIn[T any](ns Netns, open func() (T, error)) (T, error) {
	var v T
	err := InNetns(ns, func() error {
		var err error
		v, err = open()
		return err
	})
	return v, err
}
