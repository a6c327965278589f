package services

// What users replacing kube-proxy rely on beyond translation (docs/services.md, Replacing
// kube-proxy): half-closed TCP connections through a ClusterIP that outlive the close timeout (the
// Kubernetes e2e "Conntrack proxy implementation should not be vulnerable to the invalid conntrack
// state bug" and every HTTP client that shuts down its write side), and kube-proxy's metrics port
// answering /proxyMode (e2e "Networking should check kube-proxy urls").

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	halfClosePort = 9200
	// The backend answers a half-closed connection with a first chunk at once, then, after
	// halfCloseSilence without a packet either way (longer than the 10 s after which the datapath
	// used to forget a connection that had seen a FIN, as the e2e test's server waits), the other
	// chunks one every halfCloseGap, then closes: about 15 s in all.
	halfCloseChunks  = 5
	halfCloseSilence = 12 * time.Second
	halfCloseGap     = time.Second
	halfCloseChunk   = 1024
	halfCloseLength  = halfCloseSilence + (halfCloseChunks-2)*halfCloseGap
)

// serveAfterHalfClose serves on ip:halfClosePort in ns: it reads the request until the client's
// half-close (EOF), then sends halfCloseChunks chunks slowly (see halfCloseSilence) and closes. Each connection's outcome
// (nil, or the write or read error, e.g. a reset) is sent on results, except for connections that
// sent no request (waitFrontend's probes).
func serveAfterHalfClose(t *testing.T, ns lab.Netns, ip netip.Addr, results chan<- error) {
	t.Helper()
	var ln net.Listener
	if err := lab.InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(ip, halfClosePort).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if probe, err := answerAfterHalfClose(conn); !probe {
					results <- err
				}
			}()
		}
	}()
}

func answerAfterHalfClose(conn net.Conn) (probe bool, err error) {
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	n, err := io.Copy(io.Discard, conn)
	if err != nil {
		return false, fmt.Errorf("server reading the request: %w", err)
	}
	if n == 0 {
		return true, nil
	}
	chunk := make([]byte, halfCloseChunk)
	start := time.Now()
	for i := range halfCloseChunks {
		switch i {
		case 0:
		case 1:
			time.Sleep(halfCloseSilence)
		default:
			time.Sleep(halfCloseGap)
		}
		chunk[0] = byte(i)
		if _, err := conn.Write(chunk); err != nil {
			return false, fmt.Errorf("server writing chunk %d of %d, %v after the client's half-close: %w", i+1, halfCloseChunks, time.Since(start).Round(time.Millisecond), err)
		}
	}
	return false, nil
}

// halfClosedDownload connects from ns to dst, sends a request, shuts down its write side and reads
// the answer to the end. It returns how many bytes arrived and how long after the half-close.
func halfClosedDownload(ns lab.Netns, dst netip.AddrPort) (int, time.Duration, error) {
	conn, err := lab.DialTCP(ns, dst, 2*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	tcp := conn.(*net.TCPConn)
	if _, err := tcp.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return 0, 0, err
	}
	if err := tcp.CloseWrite(); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	_ = tcp.SetReadDeadline(start.Add(halfCloseLength + 10*time.Second))
	n, err := io.Copy(io.Discard, tcp)
	return int(n), time.Since(start), err
}

func TestKubeProxyReplacement(t *testing.T) {
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if _, err := l.StartControllerManager(ctx, lab.ControllerManagerOptions{}); err != nil {
		t.Fatal(err)
	}
	var nodes []*lab.Node
	for i := range 2 {
		n, err := l.AddNode(ctx, fmt.Sprintf("n%d", i+1), i+1, lab.NodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}

	t.Run("half-closed-connections-outlive-the-close-timeout", func(t *testing.T) {
		server, err := l.AddPod(ctx, nodes[1], "halfclose-server", lab.PodOptions{Labels: map[string]string{"app": "halfclose"}})
		if err != nil {
			t.Fatal(err)
		}
		results := make(chan error, 4)
		serveAfterHalfClose(t, server.Netns, server.IP, results)
		svc, err := l.CreateService(ctx, "halfclose", lab.ServiceOptions{
			Selector: map[string]string{"app": "halfclose"},
			Ports:    []corev1.ServicePort{{Name: "tcp", Port: 80, TargetPort: intstr.FromInt(halfClosePort), Protocol: corev1.ProtocolTCP}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitReadyEndpoints(ctx, "halfclose", 1, waitLimit); err != nil {
			t.Fatal(err)
		}
		dst := vip(svc, 80)
		// The backend is on another node for one client (its replies come back through the
		// tunnel) and on the client's own node for the other.
		clients := map[string]*lab.Node{"remote-backend": nodes[0], "local-backend": nodes[1]}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for name, node := range clients {
			client, err := l.AddPod(ctx, node, "halfclose-client-"+node.Name, lab.PodOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// Wait until the agent of the client's node serves the frontend.
			waitFrontend(t, client.Netns, dst)
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, took, err := halfClosedDownload(client.Netns, dst)
				want := halfCloseChunks * halfCloseChunk
				mu.Lock()
				defer mu.Unlock()
				if err != nil || n != want {
					errs = append(errs, fmt.Errorf("%s: client got %d of %d bytes in %v after its half-close: %v", name, n, want, took.Round(time.Millisecond), err))
					return
				}
				t.Logf("%s: %d bytes over %v of a half-closed connection through %v", name, n, took.Round(time.Millisecond), dst)
			}()
		}
		wg.Wait()
		for range clients {
			select {
			case err := <-results:
				errs = append(errs, err)
			case <-time.After(10 * time.Second):
				errs = append(errs, errors.New("a server connection did not finish"))
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("metrics-port-answers-proxy-mode", func(t *testing.T) {
		// kube-proxy's metrics port (--metrics-bind-address, 127.0.0.1:10249), as the e2e test
		// reaches it: from the node's own network namespace.
		for _, n := range nodes {
			addr := netip.MustParseAddrPort("127.0.0.1:10249")
			for path, want := range map[string]string{"/proxyMode": "edgeplane", "/healthz": "ok", "/metrics": "edgeplane_build_info"} {
				resp, err := getFrom(n.Netns, addr, path)
				if err != nil {
					t.Fatalf("%s: GET %s%s: %v", n.Name, addr, path, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), want) {
					t.Errorf("%s: GET %s%s: %d %q (%v), want 200 with %q", n.Name, addr, path, resp.StatusCode, firstLine(body), err, want)
				}
			}
		}
	})
}

// waitFrontend waits until a connection from ns to dst succeeds (the agents follow the
// EndpointSlice within milliseconds, but through a watch).
func waitFrontend(t *testing.T, ns lab.Netns, dst netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		conn, err := lab.DialTCP(ns, dst, time.Second)
		if err == nil {
			conn.Close() // no request: the server takes it for a probe
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection from %s to %v: %v", ns, dst, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
