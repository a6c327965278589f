// Command crr measures the TCP connect rate through a path, as netperf's TCP_CRR does: each
// transaction is connect, a 1-byte request, a 1-byte answer, close. The client closes with an
// RST (SO_LINGER 0) after the server has closed its side, so neither side parks its port in
// TIME_WAIT and a run of 100,000 connections does not exhaust the ephemeral ports. It is one
// sequential client: the rate is the inverse of the per-connection latency, which is what a
// Services dataplane adds to.
//
//	crr server -l ADDR:PORT
//	crr client -c ADDR:PORT -t SECONDS    -> prints "connections=N seconds=S rate=R p50_us=X p99_us=Y"
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crr server -l ADDR:PORT | crr client -c ADDR:PORT -t SECONDS")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("l", "", "server: address to listen on")
	connect := fs.String("c", "", "client: address to connect to")
	seconds := fs.Float64("t", 4, "client: duration")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(*listen)
	case "client":
		err = client(*connect, time.Duration(*seconds*float64(time.Second)))
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crr:", err)
		os.Exit(1)
	}
}

func serve(addr string) error {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			if _, err := c.Write(b); err != nil {
				return
			}
			// Wait for the client's RST (or FIN) so that this side does not close first.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Read(b)
		}()
	}
}

func client(addr string, d time.Duration) error {
	dst, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return err
	}
	var lat []time.Duration
	start := time.Now()
	end := start.Add(d)
	b := []byte{'x'}
	for time.Now().Before(end) {
		t0 := time.Now()
		c, err := net.DialTCP("tcp4", nil, dst)
		if err != nil {
			return fmt.Errorf("connection %d: %w", len(lat)+1, err)
		}
		if _, err := c.Write(b); err != nil {
			c.Close()
			return fmt.Errorf("connection %d: write: %w", len(lat)+1, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(c, b); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			c.Close()
			return fmt.Errorf("connection %d: read: %w", len(lat)+1, err)
		}
		_ = c.SetLinger(0)
		c.Close()
		lat = append(lat, time.Since(t0))
	}
	secs := time.Since(start).Seconds()
	if len(lat) == 0 {
		return errors.New("no connection completed")
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	fmt.Printf("connections=%d seconds=%.3f rate=%.1f p50_us=%.1f p99_us=%.1f\n", len(lat), secs, float64(len(lat))/secs, pct(0.5), pct(0.99))
	return nil
}
