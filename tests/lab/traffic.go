package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Test traffic is made in-process: sockets are created inside a lab namespace (InNetns) and then
// used from ordinary goroutines. No external tool (ping, nc) is needed.

var pingID atomic.Uint32

func init() { pingID.Store(uint32(os.Getpid()) & 0xffff) }

// Ping sends one ICMP echo request from ns to dst and waits for the matching reply.
func Ping(ns Netns, dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	conn, err := openIn(ns, func() (*icmp.PacketConn, error) { return icmp.ListenPacket("ip4:icmp", "0.0.0.0") })
	if err != nil {
		return 0, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	defer conn.Close()
	id := int(pingID.Add(1) & 0xffff)
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("edgeplane-lab")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, fmt.Errorf("ping %s from %s: %w", dst, ns, err)
	}
	deadline := start.Add(timeout)
	_ = conn.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("ping %s from %s: no reply within %v", dst, ns, timeout)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && from.String() == dst.String() {
			return time.Since(start), nil
		}
	}
}

// WaitPing pings every 50 ms until a reply comes or timeout passes, and returns how long it took.
func WaitPing(ctx context.Context, ns Netns, dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	var last error
	for time.Since(start) < timeout {
		if _, err := Ping(ns, dst, 200*time.Millisecond); err == nil {
			return time.Since(start), nil
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("unreachable for %v: %w", timeout, last)
}

// Server is a lab echo server (TCP or UDP) running in a namespace.
type Server struct {
	Addr    netip.AddrPort
	closeFn func() error
	wg      sync.WaitGroup
}

// Close stops the server.
func (s *Server) Close() error {
	err := s.closeFn()
	s.wg.Wait()
	return err
}

// ServeTCPEcho listens on addr inside ns. For every line a client sends it answers
// "<line> <client address as the server sees it>\n".
func ServeTCPEcho(ns Netns, addr netip.AddrPort) (*Server, error) {
	return serveTCP(ns, addr, 30*time.Second, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := fmt.Fprintf(c, "%s %s\n", strings.TrimSuffix(line, "\n"), c.RemoteAddr()); err != nil {
				return
			}
		}
	})
}

// serveTCP listens on addr inside ns and runs handle for each connection, with a deadline, until
// the server is closed.
func serveTCP(ns Netns, addr netip.AddrPort, deadline time.Duration, handle func(net.Conn)) (*Server, error) {
	ln, err := openIn(ns, func() (net.Listener, error) { return net.Listen("tcp4", addr.String()) })
	if err != nil {
		return nil, fmt.Errorf("tcp listen %s in %s: %w", addr, ns, err)
	}
	s := &Server{Addr: netip.MustParseAddrPort(ln.Addr().String()), closeFn: ln.Close}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(deadline))
				handle(c)
			}()
		}
	}()
	return s, nil
}

// TCPEcho connects from ns to dst, sends one line and returns the client address the server saw.
func TCPEcho(ns Netns, dst netip.AddrPort, timeout time.Duration) (netip.AddrPort, error) {
	c, err := openIn(ns, func() (net.Conn, error) { return (&net.Dialer{Timeout: timeout}).Dial("tcp4", dst.String()) })
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("tcp connect %s from %s: %w", dst, ns, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	token := fmt.Sprintf("hello-%d", time.Now().UnixNano())
	if _, err := fmt.Fprintf(c, "%s\n", token); err != nil {
		return netip.AddrPort{}, fmt.Errorf("tcp send to %s from %s: %w", dst, ns, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("tcp echo from %s to %s: %w", ns, dst, err)
	}
	got, seen, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok || got != token {
		return netip.AddrPort{}, fmt.Errorf("tcp echo from %s to %s: answer %q", ns, dst, line)
	}
	return netip.ParseAddrPort(seen)
}

// ServeUDPEcho listens on addr inside ns and sends every datagram back to its sender.
func ServeUDPEcho(ns Netns, addr netip.AddrPort) (*Server, error) {
	pc, err := openIn(ns, func() (net.PacketConn, error) { return net.ListenPacket("udp4", addr.String()) })
	if err != nil {
		return nil, fmt.Errorf("udp listen %s in %s: %w", addr, ns, err)
	}
	s := &Server{Addr: netip.MustParseAddrPort(pc.LocalAddr().String()), closeFn: pc.Close}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 65536) // whole reassembled datagrams, not only MTU-sized ones
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return s, nil
}

// StreamStats is the outcome of a sequenced UDP echo stream.
type StreamStats struct {
	Sent, Received int
	Lost           []uint64 // sequence numbers that never came back
	MaxRTT         time.Duration
	Duration       time.Duration
}

func (s StreamStats) String() string {
	lost := fmt.Sprint(s.Lost)
	if len(s.Lost) > 20 {
		lost = fmt.Sprintf("%v ... (%d)", s.Lost[:20], len(s.Lost))
	}
	return fmt.Sprintf("sent %d, received %d, lost %d %s, max rtt %v, over %v", s.Sent, s.Received, len(s.Lost), lost, s.MaxRTT.Round(time.Microsecond), s.Duration.Round(time.Millisecond))
}

// UDPStream sends a datagram with a sequence number from ns to the echo server at dst every
// interval until ctx ends, then waits grace for stragglers and reports what never came back.
func UDPStream(ctx context.Context, ns Netns, dst netip.AddrPort, interval, grace time.Duration) (StreamStats, error) {
	c, err := openIn(ns, func() (net.Conn, error) { return net.Dial("udp4", dst.String()) })
	if err != nil {
		return StreamStats{}, fmt.Errorf("udp socket from %s: %w", ns, err)
	}
	defer c.Close()
	var (
		mu       sync.Mutex
		sentAt   = map[uint64]time.Time{}
		received = map[uint64]bool{}
		maxRTT   time.Duration
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return
				}
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ECONNREFUSED from an ICMP error: the send loop counts it as lost
			}
			if n < 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(buf[:8])
			mu.Lock()
			if t, ok := sentAt[seq]; ok && !received[seq] {
				received[seq] = true
				if rtt := time.Since(t); rtt > maxRTT {
					maxRTT = rtt
				}
			}
			mu.Unlock()
		}
	}()
	start := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var seq uint64
	payload := make([]byte, 64)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		seq++
		binary.BigEndian.PutUint64(payload, seq)
		mu.Lock()
		sentAt[seq] = time.Now()
		mu.Unlock()
		_, _ = c.Write(payload) // a failed send is a lost datagram
	}
	_ = c.SetReadDeadline(time.Now().Add(grace))
	<-readDone
	mu.Lock()
	defer mu.Unlock()
	st := StreamStats{Sent: int(seq), Received: len(received), MaxRTT: maxRTT, Duration: time.Since(start)}
	for i := uint64(1); i <= seq; i++ {
		if !received[i] {
			st.Lost = append(st.Lost, i)
		}
	}
	return st, nil
}

// PingSize sends one ICMP echo request carrying size bytes of data (ping -s size) from ns to dst
// with DF clear (ping -M dont), so a request longer than the path is fragmented rather than
// refused, and waits for the reply, whose data must come back unchanged.
func PingSize(ns Netns, dst netip.Addr, size int, timeout time.Duration) (time.Duration, error) {
	var conn *net.IPConn
	if err := InNetns(ns, func() error {
		var err error
		if conn, err = net.ListenIP("ip4:icmp", &net.IPAddr{IP: net.IPv4zero}); err != nil {
			return err
		}
		return setPMTUDisc(conn, false)
	}); err != nil {
		if conn != nil {
			conn.Close()
		}
		return 0, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	defer conn.Close()
	id := int(pingID.Add(1) & 0xffff)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i)
	}
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: data}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, fmt.Errorf("ping -s %d %s from %s: %w", size, dst, ns, err)
	}
	_ = conn.SetReadDeadline(start.Add(timeout))
	buf := make([]byte, size+1024)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("ping -s %d %s from %s: no reply within %v", size, dst, ns, timeout)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply || from.String() != dst.String() {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.ID != id {
			continue
		}
		if !bytes.Equal(e.Data, data) {
			return 0, fmt.Errorf("ping -s %d %s from %s: reply carries %d bytes of data, not the %d sent", size, dst, ns, len(e.Data), size)
		}
		return time.Since(start), nil
	}
}

// setPMTUDisc sets IP_MTU_DISCOVER on c: df sends with DF and never fragments locally
// (IP_PMTUDISC_DO, a send longer than the known path MTU fails with EMSGSIZE); !df sends without
// DF and fragments (IP_PMTUDISC_DONT).
func setPMTUDisc(c syscall.Conn, df bool) error {
	mode := unix.IP_PMTUDISC_DONT
	if df {
		mode = unix.IP_PMTUDISC_DO
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, mode)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setting IP_MTU_DISCOVER: %w", serr)
	}
	return nil
}

// ListenUDP opens a UDP socket bound to addr inside ns.
func ListenUDP(ns Netns, addr netip.AddrPort) (*net.UDPConn, error) {
	c, err := openIn(ns, func() (*net.UDPConn, error) { return net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr)) })
	if err != nil {
		return nil, fmt.Errorf("udp listen %s in %s: %w", addr, ns, err)
	}
	return c, nil
}

// DialUDP opens a UDP socket inside ns connected to dst (so ICMP errors about what it sends are
// reported on it: ECONNREFUSED, EMSGSIZE). df chooses DF and no local fragmentation, or no DF and
// fragmentation (see setPMTUDisc).
func DialUDP(ns Netns, dst netip.AddrPort, df bool) (*net.UDPConn, error) {
	var c *net.UDPConn
	if err := InNetns(ns, func() error {
		var err error
		if c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst)); err != nil {
			return err
		}
		return setPMTUDisc(c, df)
	}); err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("udp socket from %s to %s: %w", ns, dst, err)
	}
	return c, nil
}

// PathMTU is what the kernel of ns knows of the path MTU of the connected socket c (IP_MTU: the
// route's MTU, or a PMTU learned from "fragmentation needed").
func PathMTU(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var mtu int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		mtu, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU)
	}); err != nil {
		return 0, err
	}
	return mtu, serr
}

// ServeTCPSink listens on addr inside ns. It reads each connection to its end (the client's
// half-close) and answers with the number of bytes it got, as a decimal line.
func ServeTCPSink(ns Netns, addr netip.AddrPort) (*Server, error) {
	return serveTCP(ns, addr, time.Minute, func(c net.Conn) {
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d\n", n)
	})
}

// TCPSend connects from ns to a ServeTCPSink at dst, sends size bytes, half-closes and checks
// that the sink counted all of them. It returns how long the transfer took.
func TCPSend(ns Netns, dst netip.AddrPort, size int, timeout time.Duration) (time.Duration, error) {
	c, err := openIn(ns, func() (net.Conn, error) { return (&net.Dialer{Timeout: timeout}).Dial("tcp4", dst.String()) })
	if err != nil {
		return 0, fmt.Errorf("tcp connect %s from %s: %w", dst, ns, err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetDeadline(start.Add(timeout))
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for sent := 0; sent < size; {
		k := min(len(chunk), size-sent)
		n, err := c.Write(chunk[:k])
		sent += n
		if err != nil {
			return 0, fmt.Errorf("tcp send to %s from %s: %d of %d bytes sent after %v: %w", dst, ns, sent, size, time.Since(start).Round(time.Millisecond), err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, fmt.Errorf("tcp half-close to %s from %s: %w", dst, ns, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("tcp send to %s from %s: no byte count from the sink after %v: %w", dst, ns, time.Since(start).Round(time.Millisecond), err)
	}
	if got := strings.TrimSpace(line); got != fmt.Sprint(size) {
		return 0, fmt.Errorf("tcp send to %s from %s: the sink got %s bytes, want %d", dst, ns, got, size)
	}
	return time.Since(start), nil
}

// DialTCP opens a TCP connection from ns to dst that the caller keeps (a long-lived flow).
func DialTCP(ns Netns, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	c, err := openIn(ns, func() (net.Conn, error) { return (&net.Dialer{Timeout: timeout}).Dial("tcp4", dst.String()) })
	if err != nil {
		return nil, fmt.Errorf("tcp connect %s from %s: %w", dst, ns, err)
	}
	return c, nil
}
