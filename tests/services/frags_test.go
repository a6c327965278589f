package services

// UDP datagrams larger than the pod MTU through a ClusterIP (bpf/lib/frag.h): the client pod's
// kernel fragments them, only the first fragment carries the ports, and every fragment must reach
// the same backend, whose fragmented answer must come back from the frontend. Kubernetes' e2e spec
// "[sig-network] Networking Granular Checks: Services should be able to handle large requests:
// udp" found the gap.

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// udpEcho sends one datagram of size bytes from ns to dst (no DF: the kernel fragments it at the
// route's MTU) and waits for the same bytes back, retrying a few times (UDP may be lost while the
// agents converge). Returns an error when nothing whole came back.
func udpEcho(ns lab.Netns, dst netip.AddrPort, size int) error {
	c, err := lab.DialUDP(ns, dst, false)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i*13 + size)
	}
	buf := make([]byte, 65536)
	var last error
	for try := 0; try < 5; try++ {
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("sending %d bytes to %v: %w", size, dst, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err != nil {
			last = err
			continue
		}
		if !bytes.Equal(buf[:n], msg) {
			return fmt.Errorf("%d bytes to %v: echo of %d bytes differs", size, dst, n)
		}
		return nil
	}
	return fmt.Errorf("%d bytes to %v: no echo: %w", size, dst, last)
}

func TestServiceUDPFragments(t *testing.T) {
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if _, err := l.StartControllerManager(ctx, lab.ControllerManagerOptions{}); err != nil {
		t.Fatal(err)
	}
	var nodes []*lab.Node
	for i := 1; i <= 2; i++ {
		n, err := l.AddNode(ctx, fmt.Sprintf("n%d", i), i, lab.NodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	// The backend on n2, the client on n1: the fragments cross the overlay both ways.
	backend, err := l.AddPod(ctx, nodes[1], "echo", lab.PodOptions{Labels: map[string]string{"app": "echo"}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := lab.ServeUDPEcho(backend.Netns, netip.AddrPortFrom(backend.IP, echoPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	client, err := l.AddPod(ctx, nodes[0], "client", lab.PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := l.CreateService(ctx, "echo", lab.ServiceOptions{
		Selector: map[string]string{"app": "echo"},
		Ports:    []corev1.ServicePort{{Name: "echo", Port: 53, TargetPort: intstr.FromInt(echoPort), Protocol: corev1.ProtocolUDP}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitReadyEndpoints(ctx, "echo", 1, waitLimit); err != nil {
		t.Fatal(err)
	}

	// The pod IP first: fragments between pods never depended on the translation.
	if err := udpEcho(client.Netns, netip.AddrPortFrom(backend.IP, echoPort), 3000); err != nil {
		t.Fatalf("to the pod IP: %v", err)
	}
	frontend := vip(svc, 53)
	deadline := time.Now().Add(waitLimit)
	for _, size := range []int{1400, 3000, 2000, 8000} {
		for {
			err := udpEcho(client.Netns, frontend, size)
			if err == nil {
				t.Logf("%d bytes through %v: echoed whole", size, frontend)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("through the ClusterIP: %v", err)
			}
		}
	}
}
