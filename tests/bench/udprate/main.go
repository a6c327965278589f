// Command udprate sends small UDP datagrams at a fixed rate and counts what arrives, so that the
// benchmark can measure what a path costs per packet at a rate every path sustains (tests/bench
// FixedRateUDP reads the machine's CPU time around the sender and divides it by the datagrams
// received). A flood measured at the sender instead rewards the path that overruns its receiver:
// a saturated receiver is never asleep when a datagram arrives, so its sender skips the wakeup
// that every slower path pays (docs/benchmarks.md "Route mode").
//
// The sender paces: it sends the datagrams due in a batch at the start of each 1 ms tick, then
// sleeps until the next tick (clock_nanosleep to an absolute deadline), so the CPU it spends is
// the datagrams' own and not a busy-poll's (iperf3's paced UDP busy-polls its CPU). It runs on
// one locked OS thread with blocking system calls, as does the receiver's counting loop, so Go's
// scheduler does not spin between packets either. A TCP control connection on the same port
// starts the count ("start" / "ready") and brings it back once the sender is done ("done N" /
// "received M", after the receiver has seen N datagrams or none for 100 ms), so one sender run
// prints the whole sample:
//
//	udprate receiver -l ADDR:PORT
//	udprate sender -c ADDR:PORT -r PACKETS_PER_S -t SECONDS [-s BYTES] [-idle SECONDS]
//	    -> "sent=N received=M seconds=S ticks=T late_ticks=L sender_cpu_s=C
//	        cpu_busy_s=B0,B1,... cpu_window_s=W idle_busy_s=I0,I1,... idle_window_s=V"
//
// seconds is the time from the first tick to the end of the last batch; a tick is late when its
// batch ended after the next tick's deadline (the sender caught up in the next batches, at most
// four ticks' worth per tick, so it may take a few ticks more than the schedule);
// sender_cpu_s is the sending thread's own CPU time over the ticks.
//
// The sender also measures what the machine's CPUs spent: cpu_busy_s is each CPU's busy time
// over cpu_window_s, from just before the first tick to the receiver's count. Busy time is the
// window less the time the CPU was idle (/proc/stat's idle, iowait and steal), not the sum of
// /proc/stat's user, system and softirq: on a kernel with tick-based CPU accounting
// (CONFIG_TICK_CPU_ACCOUNTING) those are sampled at each timer tick, and a sender that wakes every
// 1 ms is in phase with a 250 or 1,000 Hz tick, so the samples see it always or never, by the
// luck of the phase; idle time is measured exactly on a tickless kernel (NO_HZ), at every idle
// entry and exit. With -idle, the sender also measures the same CPUs while it sends nothing,
// half of that time before the first tick and half after the count (the receiver waiting, the
// machine's other work going on): idle_busy_s over idle_window_s, the floor that the benchmark
// subtracts (tests/bench Sample.CPUPerPacket).
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// tick is the pacing interval: the sender sends what is due, then sleeps until the next one.
const tick = time.Millisecond

// receiveBuffer is the receiving socket's buffer: room for a few ticks' batches even when the
// receiver is late to run.
const receiveBuffer = 4 << 20

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: udprate receiver -l ADDR:PORT | udprate sender -c ADDR:PORT -r PACKETS_PER_S -t SECONDS [-s BYTES]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("l", "", "receiver: address to listen on (UDP and the TCP control)")
	connect := fs.String("c", "", "sender: receiver's address")
	rate := fs.Int("r", 30000, "sender: datagrams per second")
	seconds := fs.Float64("t", 4, "sender: duration")
	size := fs.Int("s", 64, "sender: UDP payload bytes")
	idle := fs.Float64("idle", 0, "sender: seconds without sending, half before and half after, to measure the machine's floor")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "receiver":
		err = receive(*listen)
	case "sender":
		var r report
		r, err = send(*connect, *rate, time.Duration(*seconds*float64(time.Second)), *size,
			time.Duration(*idle*float64(time.Second)))
		if err == nil {
			fmt.Println(r)
		}
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "udprate:", err)
		os.Exit(1)
	}
}

// sockaddr parses ADDR:PORT (IPv4).
func sockaddr(s string) (*unix.SockaddrInet4, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("address %q: want IPv4ADDR:PORT", s)
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, nil
}

// receiver counts the datagrams arriving on its UDP socket and answers control connections on
// the TCP port of the same number.
type receiver struct {
	fd    int
	ln    net.Listener
	count atomic.Uint64
	// stopping is set by Close before it shuts the socket down, which ends the blocked read.
	stopping atomic.Bool
	// failed holds the counting loop's error, if it stopped.
	failed chan error
}

// receive counts the datagrams arriving on addr and answers the control connections, until an
// error.
func receive(addr string) error {
	rc, err := listen(addr)
	if err != nil {
		return err
	}
	defer rc.Close()
	return rc.serve()
}

// listen binds the UDP socket and the control listener on addr and starts counting.
func listen(addr string) (*receiver, error) {
	sa, err := sockaddr(addr)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating the UDP socket: %w", err)
	}
	// Beyond net.core.rmem_max as root (SO_RCVBUFFORCE), else up to it.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, receiveBuffer)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding UDP %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listening for the control connection: %w", err)
	}
	rc := &receiver{fd: fd, ln: ln, failed: make(chan error, 1)}
	go rc.countDatagrams()
	return rc, nil
}

// countDatagrams reads datagrams until the socket is shut down (Close), then closes it. One OS
// thread blocked in read between datagrams: the wakeup a datagram costs is the kernel's, as for
// any blocking receiver, without Go's scheduler spinning around it.
func (rc *receiver) countDatagrams() {
	defer unix.Close(rc.fd)
	runtime.LockOSThread()
	buf := make([]byte, 65536)
	for {
		_, err := unix.Read(rc.fd, buf)
		switch {
		case rc.stopping.Load():
			return
		case err == nil:
			rc.count.Add(1)
		case errors.Is(err, unix.EINTR):
		default:
			rc.failed <- fmt.Errorf("receiving: %w", err)
			return
		}
	}
}

// serve answers control connections one at a time, until the listener closes or counting fails.
func (rc *receiver) serve() error {
	for {
		c, err := rc.ln.Accept()
		if err != nil {
			return fmt.Errorf("accepting a control connection: %w", err)
		}
		select {
		case err := <-rc.failed:
			c.Close()
			return err
		default:
		}
		if err := control(c, &rc.count); err != nil {
			fmt.Fprintln(os.Stderr, "udprate: control connection:", err)
		}
	}
}

// Close stops the receiver (once: the counting loop closes the socket after the first).
func (rc *receiver) Close() {
	if rc.stopping.Swap(true) {
		return
	}
	rc.ln.Close()
	_ = unix.Shutdown(rc.fd, unix.SHUT_RDWR)
}

// control serves one sender: "start" records the count, "done N" waits for N more datagrams (or
// for 100 ms without one) and answers how many arrived since "start".
func control(c net.Conn, count *atomic.Uint64) error {
	defer c.Close()
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "start" {
		return fmt.Errorf("want start, got %q: %v", line, err)
	}
	base := count.Load()
	if _, err := fmt.Fprintln(c, "ready"); err != nil {
		return err
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("waiting for done: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "done" {
		return fmt.Errorf("want done N, got %q", line)
	}
	sent, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return fmt.Errorf("want done N, got %q", line)
	}
	// The last datagrams may still be on their way (a backlog, the counting thread not yet run).
	last, changed := count.Load(), time.Now()
	for last-base < sent && time.Since(changed) < 100*time.Millisecond {
		time.Sleep(time.Millisecond)
		if n := count.Load(); n != last {
			last, changed = n, time.Now()
		}
	}
	_, err = fmt.Fprintf(c, "received %d\n", last-base)
	return err
}

// report is one sender run.
type report struct {
	sent, received uint64
	elapsed        time.Duration
	ticks, late    int
	// senderCPU is the CPU time of the sending thread over the ticks (user + system, including
	// the softirq work the kernel charged to it): far below elapsed when it sleeps between ticks.
	senderCPU time.Duration
	// busy is what each CPU of the machine spent from just before the first tick to the
	// receiver's count; idle the same without traffic, around it (zero without -idle).
	busy, idle cpuBusy
}

func (r report) String() string {
	return fmt.Sprintf("sent=%d received=%d seconds=%.6f ticks=%d late_ticks=%d sender_cpu_s=%.6f "+
		"cpu_busy_s=%s cpu_window_s=%.6f idle_busy_s=%s idle_window_s=%.6f",
		r.sent, r.received, r.elapsed.Seconds(), r.ticks, r.late, r.senderCPU.Seconds(),
		r.busy.perCPUString(), r.busy.window.Seconds(), r.idle.perCPUString(), r.idle.window.Seconds())
}

// send paces rate datagrams of size bytes per second to addr for d, and asks the receiver how
// many arrived; with idle > 0 it also measures the machine without traffic for idle/2 before
// and idle/2 after.
func send(addr string, rate int, d time.Duration, size int, idle time.Duration) (report, error) {
	var r report
	if rate <= 0 || d < tick || size < 8 || idle < 0 {
		return r, fmt.Errorf("want a rate > 0, a duration >= %v, a size >= 8 bytes and no negative idle time", tick)
	}
	sa, err := sockaddr(addr)
	if err != nil {
		return r, err
	}
	ctl, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return r, fmt.Errorf("control connection: %w", err)
	}
	defer ctl.Close()
	_ = ctl.SetDeadline(time.Now().Add(d + 30*time.Second))
	ctlr := bufio.NewReader(ctl)
	if _, err := fmt.Fprintln(ctl, "start"); err != nil {
		return r, fmt.Errorf("control connection: %w", err)
	}
	if line, err := ctlr.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		return r, fmt.Errorf("control connection: want ready, got %q: %v", line, err)
	}

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return r, fmt.Errorf("creating the UDP socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil {
		return r, fmt.Errorf("connecting UDP to %s: %w", addr, err)
	}
	payload := make([]byte, size)

	if idle > 0 {
		if r.idle, err = measureIdle(idle / 2); err != nil {
			return r, err
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	total := uint64(int64(rate) * int64(d/tick) * int64(tick) / int64(time.Second))
	busyBefore, err := readCPUTimes()
	if err != nil {
		return r, err
	}
	cpuBefore := threadCPU()
	start := monotonic()
	for k := 0; r.sent < total; k++ {
		if err := sleepUntil(start + int64(k)*int64(tick)); err != nil {
			return r, err
		}
		r.ticks++
		due := dueBy(rate, k, r.sent, total)
		for r.sent < due {
			binary.BigEndian.PutUint64(payload, r.sent)
			_, err := unix.Write(fd, payload)
			switch {
			case err == nil, errors.Is(err, unix.ENOBUFS):
				// A datagram the stack refused to queue is sent and lost: the count says so.
				r.sent++
			case errors.Is(err, unix.EINTR):
			default:
				return r, fmt.Errorf("sending datagram %d: %w", r.sent+1, err)
			}
		}
		if monotonic() > start+int64(k+1)*int64(tick) {
			r.late++
		}
	}
	r.elapsed = time.Duration(monotonic() - start)
	r.senderCPU = threadCPU() - cpuBefore
	runtime.UnlockOSThread()

	if _, err := fmt.Fprintf(ctl, "done %d\n", r.sent); err != nil {
		return r, fmt.Errorf("control connection: %w", err)
	}
	line, err := ctlr.ReadString('\n')
	if err != nil {
		return r, fmt.Errorf("control connection: waiting for the count: %w", err)
	}
	if _, err := fmt.Sscanf(line, "received %d", &r.received); err != nil {
		return r, fmt.Errorf("control connection: want received N, got %q", line)
	}
	busyAfter, err := readCPUTimes()
	if err != nil {
		return r, err
	}
	r.busy = busyBetween(busyBefore, busyAfter)
	if idle > 0 {
		after, err := measureIdle(idle - idle/2)
		if err != nil {
			return r, err
		}
		r.idle = r.idle.plus(after)
	}
	return r, nil
}

// measureIdle is what the machine's CPUs spend while this program sleeps for d.
func measureIdle(d time.Duration) (cpuBusy, error) {
	before, err := readCPUTimes()
	if err != nil {
		return cpuBusy{}, err
	}
	time.Sleep(d)
	after, err := readCPUTimes()
	if err != nil {
		return cpuBusy{}, err
	}
	return busyBetween(before, after), nil
}

// catchUp is how many ticks' worth of datagrams one tick may send at most: after a hiccup (the
// sender descheduled) it catches up over the next ticks rather than in one burst, which on a
// veth path would overflow the sending CPU's backlog (net.core.netdev_max_backlog) and lose
// datagrams the path would carry at the rate.
const catchUp = 4

// dueBy is how many datagrams must have been sent by the end of tick k (from 0) at rate per
// second, sent having been sent and total being the whole sample: everything due by then (rate
// x (k+1) ticks, so the total is exact), but at most catchUp ticks' worth more than sent.
func dueBy(rate, k int, sent, total uint64) uint64 {
	due := min(uint64(int64(rate)*int64(k+1)*int64(tick)/int64(time.Second)), total)
	perTick := (uint64(rate)*uint64(tick) + uint64(time.Second) - 1) / uint64(time.Second)
	return min(due, sent+catchUp*perTick)
}

// threadCPU is the calling thread's CPU time, user and system.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// monotonic is CLOCK_MONOTONIC in nanoseconds.
func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// sleepUntil sleeps until CLOCK_MONOTONIC reaches ns (at once if it has).
func sleepUntil(ns int64) error {
	ts := unix.NsecToTimespec(ns)
	for {
		err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("sleeping until the next tick: %w", err)
		}
	}
}
