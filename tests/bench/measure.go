// Package bench compares edgeplane's datapath with a Flannel-like kernel path and the raw underlay,
// in the same lab and the same run. Each metric is measured in alternating rounds (ABBA over all
// targets) so that drift on a noisy shared VM hits every target alike; results are medians plus
// per-round ratios against the baseline, whose spread is reported with them. The same harness
// measures what the event stream (`edgeplanectl monitor`) costs that traffic.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Endpoint is where a benchmark's client or server runs: a network namespace (by name, under
// /run/netns) and the address the server listens on.
type Endpoint struct {
	NetNS string
	IP    string
}

// Path is one way of carrying packets between a client and a server: edgeplane cross-node,
// Flannel-like cross-node, raw underlay, ...
type Path struct {
	Name   string
	Client Endpoint
	Server Endpoint
	// Dial is the address the client connects to when it is not Server.IP: a Service's virtual
	// IP whose port maps to the server's same port.
	Dial string
}

// dialIP is the address the client of p connects to.
func (p Path) dialIP() string {
	if p.Dial != "" {
		return p.Dial
	}
	return p.Server.IP
}

// Sample is one measurement of one metric on one path.
type Sample struct {
	TPS   float64 `json:"tps,omitempty"`    // request/response transactions per second
	P50us float64 `json:"p50_us,omitempty"` // round-trip time percentiles
	P99us float64 `json:"p99_us,omitempty"`
	PPS   float64 `json:"pps,omitempty"` // packets per second received
	// Datagrams sent and received at a fixed rate (FixedRateUDP).
	Sent     uint64 `json:"sent,omitempty"`
	Received uint64 `json:"received,omitempty"`
	// The sending thread's own CPU time over a fixed-rate sample (getrusage, exact): the
	// datagrams' system calls and the softirq work the kernel ran in its context.
	SenderThreadS float64 `json:"sender_thread_s,omitempty"`
	Mbps          float64 `json:"mbps,omitempty"` // bulk throughput received
	DurationS     float64 `json:"duration_s,omitempty"`
	// CPU spent on the whole machine while the client ran (cpuUse): busy CPU-seconds, in total
	// and per CPU.
	CPU cpuUse `json:"cpu,omitempty"`
	// The machine's CPU without benchmark traffic around the sample (FixedRateUDP): the floor
	// that CPUPerPacket subtracts.
	Floor cpuUse `json:"floor,omitempty"`
	// What the event listeners on the nodes received during the sample (BenchmarkEventStream).
	Events     uint64 `json:"events,omitempty"`
	EventsLost uint64 `json:"events_lost,omitempty"`
	Raw        string `json:"-"`
}

// nsCmd runs a command inside a network namespace pinned to a CPU set ("" = any), via nsenter so
// that /sys is not remounted.
func nsCmd(ctx context.Context, netns, cpus string, name string, args ...string) *exec.Cmd {
	argv := []string{"--net=/run/netns/" + netns, "--"}
	if cpus != "" {
		argv = append(argv, "taskset", "-c", cpus)
	}
	argv = append(argv, name)
	argv = append(argv, args...)
	return exec.CommandContext(ctx, "nsenter", argv...)
}

// server starts a long-running server process that listens on port (proto "tcp" or "udp") and
// returns a stop function once the port is bound in netns: a fixed pause lost the race on a busy
// machine (the client's connection refused).
func server(netns, cpus, proto string, port int, name string, args ...string) (func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := nsCmd(ctx, netns, cpus, name, args...)
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("starting %s in %s: %w", name, netns, err)
	}
	stop := func() { cancel(); _ = cmd.Wait() }
	if err := waitBound(netns, proto, port, 10*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("%s in %s: %w", name, netns, err)
	}
	return stop, nil
}

// waitBound polls until a socket of proto ("tcp": listening, "udp": bound) is on port in netns.
func waitBound(netns, proto string, port int, timeout time.Duration) error {
	flag := "-t"
	if proto == "udp" {
		flag = "-u"
	}
	deadline := time.Now().Add(timeout)
	for {
		out, err := nsCmd(context.Background(), netns, "", "ss", "-Hln", flag, fmt.Sprintf("sport = :%d", port)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ss: %w: %s", err, out)
		}
		if len(strings.TrimSpace(string(out))) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing bound on %s port %d after %v", proto, port, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	sockperfValid = regexp.MustCompile(`\[Valid Duration\] RunTime=([0-9.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)`)
	sockperfPct   = regexp.MustCompile(`percentile (\d+\.\d+) =\s+([0-9.]+)`)
)

// RequestResponse runs sockperf ping-pong (UDP or TCP, 64-byte messages) with client and server
// pinned to the same CPU: on a 2-core VM cross-CPU figures measure wake-up noise, not the datapath.
func RequestResponse(p Path, tcp bool, seconds int, cpu string, port int) (Sample, error) {
	return RequestResponseCPUs(p, tcp, seconds, cpu, cpu, port)
}

// RequestResponseCPUs is RequestResponse with the client pinned to clientCPU and the server to
// serverCPU (taskset inside the namespaces): across CPUs, every transaction wakes the other CPU
// twice, as between the processes of two nodes.
func RequestResponseCPUs(p Path, tcp bool, seconds int, clientCPU, serverCPU string, port int) (Sample, error) {
	args := []string{"server", "-i", p.Server.IP, "-p", strconv.Itoa(port)}
	if tcp {
		args = append(args, "--tcp")
	}
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	stop, err := server(p.Server.NetNS, serverCPU, proto, port, "sockperf", args...)
	if err != nil {
		return Sample{}, err
	}
	defer stop()
	cargs := []string{"ping-pong", "-i", p.dialIP(), "-p", strconv.Itoa(port), "-m", "64", "-t", strconv.Itoa(seconds)}
	if tcp {
		cargs = append(cargs, "--tcp")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+20)*time.Second)
	defer cancel()
	out, err := nsCmd(ctx, p.Client.NetNS, clientCPU, "sockperf", cargs...).CombinedOutput()
	if err != nil {
		return Sample{}, fmt.Errorf("sockperf ping-pong on %s: %w: %s", p.Name, err, tail(out))
	}
	return parseSockperf(string(out))
}

func parseSockperf(out string) (Sample, error) {
	m := sockperfValid.FindStringSubmatch(out)
	if m == nil {
		return Sample{}, fmt.Errorf("sockperf output has no valid-duration line: %s", tail([]byte(out)))
	}
	secs, _ := strconv.ParseFloat(m[1], 64)
	recv, _ := strconv.ParseFloat(m[3], 64)
	if secs <= 0 || recv == 0 {
		return Sample{}, fmt.Errorf("sockperf received nothing: %s", tail([]byte(out)))
	}
	s := Sample{TPS: recv / secs, DurationS: secs, Raw: out}
	// sockperf reports one-way latency (RTT/2); we report round trips.
	for _, pm := range sockperfPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(pm[2], 64)
		switch pm[1] {
		case "50.000":
			s.P50us = 2 * v
		case "99.000":
			s.P99us = 2 * v
		}
	}
	return s, nil
}

type iperfResult struct {
	End struct {
		Sum struct {
			Seconds     float64 `json:"seconds"`
			Packets     float64 `json:"packets"`
			LostPackets float64 `json:"lost_packets"`
			BitsPerSec  float64 `json:"bits_per_second"`
		} `json:"sum"`
		SumReceived struct {
			Seconds    float64 `json:"seconds"`
			BitsPerSec float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// SmallUDP sends 64-byte UDP datagrams as fast as iperf3 can and reports the packets per second the
// server received (client on clientCPU, server on serverCPU).
func SmallUDP(p Path, seconds int, clientCPU, serverCPU string, port int) (Sample, error) {
	r, _, err := iperf(p, seconds, clientCPU, serverCPU, port, "-u", "-l", "64", "-b", "0")
	if err != nil {
		return Sample{}, err
	}
	s := r.End.Sum
	if s.Seconds <= 0 {
		return Sample{}, fmt.Errorf("iperf3 udp on %s: no duration", p.Name)
	}
	return Sample{PPS: (s.Packets - s.LostPackets) / s.Seconds, DurationS: s.Seconds}, nil
}

// TCPStream runs one bulk TCP stream with the congestion control cc (iperf3 -C; "" = the
// machine's default) and reports the received rate, and the CPU the machine spent while it ran.
func TCPStream(p Path, seconds int, cc, clientCPU, serverCPU string, port int) (Sample, error) {
	return TCPStreams(p, 1, seconds, cc, clientCPU, serverCPU, port)
}

// TCPStreams runs n parallel bulk TCP streams (iperf3 -P) with the congestion control cc and
// reports their summed received rate and the CPU the machine spent while they ran.
func TCPStreams(p Path, n, seconds int, cc, clientCPU, serverCPU string, port int) (Sample, error) {
	var extra []string
	if n > 1 {
		extra = []string{"-P", strconv.Itoa(n)}
	}
	if cc != "" {
		extra = append(extra, "-C", cc)
	}
	r, cpu, err := iperf(p, seconds, clientCPU, serverCPU, port, extra...)
	if err != nil {
		return Sample{}, err
	}
	s := r.End.SumReceived
	return Sample{Mbps: s.BitsPerSec / 1e6, DurationS: s.Seconds, CPU: cpu}, nil
}

// Gbit is the data a stream sample moved, in gigabits.
func (s Sample) Gbit() float64 { return s.Mbps * s.DurationS / 1000 }

// CPUPerGbit is the CPU a sample cost per gigabit moved: busy CPU-seconds of the CPUs cpus (all
// of them when none is given) over the sample, divided by the gigabits received. 0 when nothing
// was measured.
func (s Sample) CPUPerGbit(cpus ...int) float64 {
	if s.Gbit() <= 0 || len(s.CPU.PerCPU) == 0 {
		return 0
	}
	return s.busy(cpus) / s.Gbit()
}

// busy is the sample's busy CPU-seconds on the CPUs cpus, all of them when none is given.
func (s Sample) busy(cpus []int) float64 {
	if len(cpus) == 0 {
		return s.CPU.Busy
	}
	var busy float64
	for _, c := range cpus {
		if c < len(s.CPU.PerCPU) {
			busy += s.CPU.PerCPU[c]
		}
	}
	return busy
}

// CPUPerPacket is the CPU a fixed-rate sample cost per datagram received, in microseconds: busy
// CPU-seconds of the CPUs cpus (all of them when none is given) over the sample, less what the
// same CPUs spent without traffic at the rate measured around it (Floor) over the sample's
// window, divided by the datagrams received. 0 when nothing was measured.
func (s Sample) CPUPerPacket(cpus ...int) float64 {
	if s.Received == 0 || len(s.CPU.PerCPU) == 0 {
		return 0
	}
	return (s.busy(cpus) - s.floorRate(cpus)*s.CPU.WindowS) * 1e6 / float64(s.Received)
}

// floorRate is the busy CPUs among cpus (all of them when none is given) without traffic
// (Sample.Floor), 0 when it was not measured.
func (s Sample) floorRate(cpus []int) float64 {
	if s.Floor.WindowS <= 0 {
		return 0
	}
	return Sample{CPU: s.Floor}.busy(cpus) / s.Floor.WindowS
}

// SenderThreadPerPacket is the sending thread's own CPU time per datagram received, in
// microseconds (0 when nothing was measured): exact and blind to the machine's other work, but
// only what ran in the sender's context, not the receiver's wakeups and reads nor softirq work
// the kernel deferred to ksoftirqd.
func (s Sample) SenderThreadPerPacket() float64 {
	if s.Received == 0 {
		return 0
	}
	return s.SenderThreadS * 1e6 / float64(s.Received)
}

// FloorCPUs is the machine's busy CPUs without traffic around a fixed-rate sample (whole
// machine), 0 when it was not measured.
func (s Sample) FloorCPUs() float64 { return s.floorRate(nil) }

// iperf runs an iperf3 server and client and returns the client's JSON report and the CPU the
// machine spent while the client ran.
func iperf(p Path, seconds int, clientCPU, serverCPU string, port int, extra ...string) (iperfResult, cpuUse, error) {
	var r iperfResult
	stop, err := server(p.Server.NetNS, serverCPU, "tcp", port, "iperf3", "-s", "-1", "-B", p.Server.IP, "-p", strconv.Itoa(port))
	if err != nil {
		return r, cpuUse{}, err
	}
	defer stop()
	args := append([]string{"-c", p.Server.IP, "-p", strconv.Itoa(port), "-t", strconv.Itoa(seconds), "-J"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+20)*time.Second)
	defer cancel()
	var out []byte
	cpu, err := measureCPU(func() (err error) {
		out, err = nsCmd(ctx, p.Client.NetNS, clientCPU, "iperf3", args...).Output()
		return err
	})
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return r, cpu, fmt.Errorf("iperf3 on %s: %v (%v): %s", p.Name, err, jerr, tail(out))
	}
	if r.Error != "" {
		return r, cpu, fmt.Errorf("iperf3 on %s: %s", p.Name, r.Error)
	}
	return r, cpu, err
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

// Median of a slice (not modified).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	c := append([]float64(nil), v...)
	sort.Float64s(c)
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

// ABBAOrder returns the order in which to visit paths in round r: forward on even rounds, reversed
// on odd ones, so that each path sees the same average position in time.
func ABBAOrder(n, r int) []int {
	idx := make([]int, n)
	for i := range idx {
		if r%2 == 0 {
			idx[i] = i
		} else {
			idx[i] = n - 1 - i
		}
	}
	return idx
}

var crrOut = regexp.MustCompile(`connections=(\d+) seconds=([0-9.]+) rate=([0-9.]+) p50_us=([0-9.]+) p99_us=([0-9.]+)`)

// ConnectRate runs the crr tool (tests/bench/crr, built to bin) for seconds: sequential TCP
// connections with one request and answer each, client and server pinned to the same CPU.
// Sample.TPS is connections per second.
func ConnectRate(bin string, p Path, seconds int, cpu string, port int) (Sample, error) {
	stop, err := server(p.Server.NetNS, cpu, "tcp", port, bin, "server", "-l", fmt.Sprintf("%s:%d", p.Server.IP, port))
	if err != nil {
		return Sample{}, err
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+20)*time.Second)
	defer cancel()
	out, err := nsCmd(ctx, p.Client.NetNS, cpu, bin, "client", "-c", fmt.Sprintf("%s:%d", p.dialIP(), port), "-t", strconv.Itoa(seconds)).CombinedOutput()
	if err != nil {
		return Sample{}, fmt.Errorf("crr on %s: %w: %s", p.Name, err, tail(out))
	}
	m := crrOut.FindStringSubmatch(string(out))
	if m == nil {
		return Sample{}, fmt.Errorf("crr on %s: unexpected output %q", p.Name, tail(out))
	}
	s := Sample{Raw: string(out)}
	s.DurationS, _ = strconv.ParseFloat(m[2], 64)
	s.TPS, _ = strconv.ParseFloat(m[3], 64)
	s.P50us, _ = strconv.ParseFloat(m[4], 64)
	s.P99us, _ = strconv.ParseFloat(m[5], 64)
	return s, nil
}

var (
	udprateOut = regexp.MustCompile(`sent=(\d+) received=(\d+) seconds=([0-9.]+) ticks=(\d+) late_ticks=(\d+) sender_cpu_s=([0-9.]+)`)
	udprateCPU = regexp.MustCompile(`cpu_busy_s=(\S+) cpu_window_s=([0-9.]+) idle_busy_s=(\S+) idle_window_s=([0-9.]+)`)
)

// maxFixedRateLoss is the share of datagrams a fixed-rate sample may lose: more, and the rate is
// not one the path sustains, so the CPU per packet would not be comparable.
const maxFixedRateLoss = 0.001

// FixedRateUDP runs the udprate tool (tests/bench/udprate, built to bin): 64-byte UDP datagrams at
// rate per second for seconds, paced in a batch per 1 ms tick by a sender that sleeps between
// ticks (on clientCPU), counted by a receiver (on serverCPU). The sender reads the machine's CPU
// time itself, from its first tick to the receiver's count (Sample.CPU), and, for idle seconds
// around that (half before, half after, the receiver waiting), without traffic (Sample.Floor):
// busy time there is the time the CPUs were not idle, exact on a tickless kernel where the sum
// of /proc/stat's user, system and softirq would be sampled in phase with the sender's ticks
// (tests/bench/udprate). A sample that lost more than 0.1% of its datagrams, or whose sender
// could not hold the rate, is an error: the rate is too high for that path.
func FixedRateUDP(bin string, p Path, seconds, idle, rate int, clientCPU, serverCPU string, port int) (Sample, error) {
	stop, err := server(p.Server.NetNS, serverCPU, "tcp", port, bin, "receiver", "-l", fmt.Sprintf("%s:%d", p.Server.IP, port))
	if err != nil {
		return Sample{}, err
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+idle+20)*time.Second)
	defer cancel()
	out, err := nsCmd(ctx, p.Client.NetNS, clientCPU, bin, "sender", "-c", fmt.Sprintf("%s:%d", p.dialIP(), port),
		"-r", strconv.Itoa(rate), "-t", strconv.Itoa(seconds), "-s", "64", "-idle", strconv.Itoa(idle)).CombinedOutput()
	if err != nil {
		return Sample{}, fmt.Errorf("udprate on %s: %w: %s", p.Name, err, tail(out))
	}
	s, err := parseUDPRate(string(out))
	if err != nil {
		return Sample{}, fmt.Errorf("udprate on %s: %w", p.Name, err)
	}
	return s, checkFixedRate(s, rate, p.Name)
}

// parseUDPRate reads the sender's report line.
func parseUDPRate(out string) (Sample, error) {
	m := udprateOut.FindStringSubmatch(out)
	if m == nil {
		return Sample{}, fmt.Errorf("unexpected output %q", tail([]byte(out)))
	}
	s := Sample{Raw: out}
	s.Sent, _ = strconv.ParseUint(m[1], 10, 64)
	s.Received, _ = strconv.ParseUint(m[2], 10, 64)
	s.DurationS, _ = strconv.ParseFloat(m[3], 64)
	s.SenderThreadS, _ = strconv.ParseFloat(m[6], 64)
	if s.DurationS > 0 {
		s.PPS = float64(s.Received) / s.DurationS
	}
	c := udprateCPU.FindStringSubmatch(out)
	if c == nil {
		return Sample{}, fmt.Errorf("no CPU figures in %q", tail([]byte(out)))
	}
	var err error
	if s.CPU, err = parseBusy(c[1], c[2]); err != nil {
		return Sample{}, err
	}
	if c[3] != "-" {
		if s.Floor, err = parseBusy(c[3], c[4]); err != nil {
			return Sample{}, err
		}
	}
	return s, nil
}

// parseBusy reads udprate's per-CPU busy seconds ("B0,B1,...") over a window of window seconds.
func parseBusy(perCPU, window string) (cpuUse, error) {
	var u cpuUse
	var err error
	if u.WindowS, err = strconv.ParseFloat(window, 64); err != nil {
		return cpuUse{}, fmt.Errorf("CPU window %q: %w", window, err)
	}
	for _, f := range strings.Split(perCPU, ",") {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return cpuUse{}, fmt.Errorf("busy CPU seconds %q: %w", perCPU, err)
		}
		u.PerCPU = append(u.PerCPU, v)
		u.Busy += v
	}
	return u, nil
}

// checkFixedRate refuses a sample that is not at the fixed rate: more than maxFixedRateLoss lost,
// or sent over a time more than 5% (+50 ms) longer than the schedule: the sender fell behind for
// good, its CPU saturated, not descheduled once by the machine (which its next batch catches up).
func checkFixedRate(s Sample, rate int, path string) error {
	if s.Sent == 0 || s.Received > s.Sent {
		return fmt.Errorf("udprate on %s: %d datagrams sent, %d received", path, s.Sent, s.Received)
	}
	if lost := s.Sent - s.Received; float64(lost) > maxFixedRateLoss*float64(s.Sent) {
		return fmt.Errorf("%s lost %d of %d datagrams (%.2f%%) at %d pkt/s, more than %.1f%%: "+
			"the rate is too high for this path (BENCH_UDP_RATE)", path, lost, s.Sent,
			100*float64(lost)/float64(s.Sent), rate, 100*maxFixedRateLoss)
	}
	if scheduled := float64(s.Sent) / float64(rate); s.DurationS > 1.05*scheduled+0.05 {
		return fmt.Errorf("%s: the sender took %.3f s for %d datagrams at %d pkt/s (%.3f s): "+
			"it cannot hold the rate (BENCH_UDP_RATE)", path, s.DurationS, s.Sent, rate, scheduled)
	}
	return nil
}
