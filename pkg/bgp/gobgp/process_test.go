package gobgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/bgp"
	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// processEnv makes the test binary the speaker process (cmd/edgeplane-bgp's main, on this
// package's Start), for TestProcess.
const processEnv = "EDGEPLANE_BGP_TEST_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(processEnv) == "1" {
		err := bgp.Serve(context.Background(), os.Stdin, os.Stdout, func(ctx context.Context, cfg bgp.Config) (bgp.Speaker, error) {
			sp, err := Start(ctx, cfg)
			if err != nil {
				return nil, err
			}
			return sp, nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startProcess starts the speaker process (this test binary) for a node, with its session
// changes sent to changes.
func startProcess(t *testing.T, node netip.Addr, asn uint32, changes chan<- bgp.SessionChange) *bgp.Process {
	t.Helper()
	p, err := bgp.StartProcess(t.Context(), os.Args[0], bgp.Config{RouterID: node, ASN: asn, ListenPort: -1,
		OnSessionChange: func(c bgp.SessionChange) { changes <- c }})
	if err != nil {
		t.Fatalf("starting the speaker process: %v", err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	return p
}

// waitChange waits for a session change of peer to state.
func waitChange(t *testing.T, changes <-chan bgp.SessionChange, peer netip.Addr, state bgpstatus.SessionState) bgp.SessionChange {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case c := <-changes:
			if c.Peer == peer && c.State == state {
				return c
			}
		case <-deadline:
			t.Fatalf("no session change of %s to %s within 20 s", peer, state)
		}
	}
}

// TestProcess drives a speaker in a process of its own as the agent does: advertisements, then
// the peer; its session changes and status come back over the pipe. Killed (as with the agent,
// kill -9), its sessions end without a NOTIFICATION: the gateway keeps the routes stale, the
// process reports the established session lost, and a new process takes over. Stop ends the
// last one with a NOTIFICATION: the gateway drops the routes.
func TestProcess(t *testing.T) {
	t.Setenv(processEnv, "1") // the processes inherit it
	l := newLab(t)
	setPeer(t, l.gateway, gatewayPeer(node1Addr, node1ASN, true))
	gr := bgp.GracefulRestart{Enabled: true, RestartTime: 30 * time.Second}

	changes := make(chan bgp.SessionChange, 64)
	first := startProcess(t, node1Addr, node1ASN, changes)
	if err := first.SetAdvertisements(map[netip.Prefix]netip.Addr{podCIDR1: {}, podCIDR3: node3IP}); err != nil {
		t.Fatal(err)
	}
	if err := first.SetPeers(t.Context(), []bgp.PeerConfig{l.nodePeer(node1Addr, gr)}); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001], 10.244.3.0/24 via 192.0.2.3 [65001]",
		"graceful restart negotiated", func(st bgpstatus.PeerStatus) bool { return st.GracefulRestart })
	waitChange(t, changes, gatewayAddr, bgpstatus.StateEstablished)
	if peers := first.Peers(); len(peers) != 1 || peers[0] != l.nodePeer(node1Addr, gr) {
		t.Errorf("Peers: %+v", peers)
	}
	if adv := first.Advertisements(); len(adv) != 2 || adv[podCIDR3] != node3IP {
		t.Errorf("Advertisements: %v", adv)
	}
	status, err := first.Snapshot(t.Context())
	if err != nil || len(status) != 1 || status[0].Address != gatewayAddr || status[0].State != bgpstatus.StateEstablished {
		t.Errorf("Snapshot: %+v, %v; want the gateway, established", status, err)
	}
	// An invalid request is refused before it reaches the process, as the in-process speaker does.
	if err := first.SetAdvertisements(map[netip.Prefix]netip.Addr{netip.MustParsePrefix("10.244.1.1/24"): {}}); !errors.Is(err, bgp.ErrInvalidConfig) {
		t.Errorf("advertising a prefix with host bits: %v, want ErrInvalidConfig", err)
	}

	if err := syscall.Kill(first.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	lost := waitChange(t, changes, gatewayAddr, bgpstatus.StateIdle)
	if !lost.Lost() {
		t.Errorf("session change after the process died: %+v, want a lost session", lost)
	}
	if err := first.Err(); !errors.Is(err, bgp.ErrStopped) {
		t.Errorf("Err of the killed process: %v, want ErrStopped", err)
	}
	if err := first.SetAdvertisements(nil); !errors.Is(err, bgp.ErrStopped) {
		t.Errorf("a killed process's SetAdvertisements: %v, want ErrStopped", err)
	}
	waitPeer(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001] stale, 10.244.3.0/24 via 192.0.2.3 [65001] stale",
		"the node restarting", func(st bgpstatus.PeerStatus) bool {
			return st.PeerRestarting && st.State != bgpstatus.StateEstablished
		})

	second := startProcess(t, node1Addr, node1ASN, changes)
	if err := second.SetAdvertisements(map[netip.Prefix]netip.Addr{podCIDR1: {}}); err != nil {
		t.Fatal(err)
	}
	if err := second.SetPeers(t.Context(), []bgp.PeerConfig{l.nodePeer(node1Addr, gr)}); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, l.gateway, node1Addr, "10.244.1.0/24 via 127.0.0.2 [65001]", "the node back, not restarting",
		func(st bgpstatus.PeerStatus) bool {
			return st.State == bgpstatus.StateEstablished && !st.PeerRestarting
		})

	if err := second.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, l.gateway, node1Addr, "", "the node not treated as restarting", func(st bgpstatus.PeerStatus) bool {
		return !st.PeerRestarting
	})
	if err := second.Err(); !errors.Is(err, bgp.ErrStopped) {
		t.Errorf("Err of the stopped process: %v, want ErrStopped", err)
	}
	if err := second.Stop(t.Context()); err != nil {
		t.Errorf("stopping a stopped process: %v", err)
	}
}

// The process outlives the thread that asked for it: Go ends a thread whose goroutine exits
// locked to it, and the kernel kills a process whose parent thread ends (Pdeathsig).
func TestProcessOutlivesItsStartersThread(t *testing.T) {
	t.Setenv(processEnv, "1")
	type result struct {
		p   *bgp.Process
		err error
	}
	started := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		p, err := bgp.StartProcess(t.Context(), os.Args[0], bgp.Config{RouterID: node1Addr, ASN: node1ASN, ListenPort: -1})
		started <- result{p, err}
	}()
	r := <-started
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.p.Stop(context.Background()) })
	time.Sleep(time.Second) // the starter's thread is gone by now
	if err := r.p.Err(); err != nil {
		t.Fatalf("the process ended with its starter's thread: %v", err)
	}
	if _, err := r.p.Snapshot(t.Context()); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
}
