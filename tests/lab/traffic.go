package lab

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Test traffic is made in-process: sockets are created inside a lab namespace (InNetns) and then
// used from ordinary goroutines. No external tool (ping, nc) is needed.

var pingID atomic.Uint32

func init() { pingID.Store(uint32(os.Getpid()) & 0xffff) }

// Ping sends one ICMP echo request from ns to dst and waits for the matching reply.
func Ping(ns Netns, dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	var conn *icmp.PacketConn
	if err := InNetns(ns, func() error {
		var err error
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
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
	var ln net.Listener
	if err := InNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr.String())
		return err
	}); err != nil {
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
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
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
			}()
		}
	}()
	return s, nil
}

// TCPEcho connects from ns to dst, sends one line and returns the client address the server saw.
func TCPEcho(ns Netns, dst netip.AddrPort, timeout time.Duration) (netip.AddrPort, error) {
	var c net.Conn
	if err := InNetns(ns, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: timeout}).Dial("tcp4", dst.String())
		return err
	}); err != nil {
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
	var pc net.PacketConn
	if err := InNetns(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr.String())
		return err
	}); err != nil {
		return nil, fmt.Errorf("udp listen %s in %s: %w", addr, ns, err)
	}
	s := &Server{Addr: netip.MustParseAddrPort(pc.LocalAddr().String()), closeFn: pc.Close}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 2048)
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
	var c net.Conn
	if err := InNetns(ns, func() error {
		var err error
		c, err = net.Dial("udp4", dst.String())
		return err
	}); err != nil {
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
