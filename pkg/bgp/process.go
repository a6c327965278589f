package bgp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// ProcessName is the speaker process's executable, installed next to edgeplane-agent (the image's
// /usr/local/bin, make build's bin/).
const ProcessName = "edgeplane-bgp"

// ProcessPath is where the agent finds the speaker process: next to its own executable.
func ProcessPath() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding %s: %w", ProcessName, err)
	}
	return filepath.Join(filepath.Dir(self), ProcessName), nil
}

// callTimeout bounds a call that takes no context (SetAdvertisements): the speaker answers in
// milliseconds, so one that does not is stuck and is ended.
const callTimeout = 30 * time.Second

// Process is a speaker running in a process of its own (cmd/edgeplane-bgp, which runs GoBGP,
// pkg/bgp/gobgp): the agent links none of GoBGP, so a node that does not speak BGP (every node
// outside route mode) pays nothing for it (~8 MiB of the agent's resident memory, GoBGP's and
// gRPC's code and start-up state), and a fault in GoBGP ends a process the agent starts again
// instead of the agent.
//
// The agent writes one JSON request a line to the process's stdin and reads one JSON message a
// line from its stdout: the reply to the request, or a session change. The process dies with
// the agent (SIGKILL as its parent dies, and the end of its input), without a NOTIFICATION, as
// the agent's own crash would: graceful-restart peers keep the routes while the pinned datapath
// forwards. Stop and StopForRestart end it on purpose.
//
// Methods are safe for concurrent use; calls are answered one at a time, in order.
type Process struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	enc  *json.Encoder
	onSC func(SessionChange)

	callMu  sync.Mutex // one call at a time: replies come in order
	replies chan reply

	mu         sync.Mutex
	peers      []PeerConfig                // the speaker's, as of the last reply
	advertised map[netip.Prefix]netip.Addr // the same
	sessions   map[netip.Addr]SessionChange
	stopping   bool
	err        error         // why the process ended, wrapping ErrStopped
	done       chan struct{} // closed once it ended and err is set
}

var _ Speaker = (*Process)(nil)

// StartProcess starts the speaker process at path with cfg (Config.Logger is not used: the
// process logs to the agent's stderr) and waits until its speaker runs. cfg.OnSessionChange, when
// set, is called from one goroutine, in order; when the process ends unexpectedly it is called
// once for each established session, which ended with it.
func StartProcess(ctx context.Context, path string, cfg Config) (*Process, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cmd := exec.Command(path)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the BGP speaker process: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the BGP speaker process: %w", err)
	}
	p := &Process{
		cmd: cmd, in: in, enc: json.NewEncoder(in), onSC: cfg.OnSessionChange,
		replies:  make(chan reply, 1),
		sessions: map[netip.Addr]SessionChange{},
		done:     make(chan struct{}),
	}
	// Pdeathsig fires when the thread that started the process ends, not the agent: Go ends a
	// thread whose goroutine exits locked to it (pkg/agent's Flannel bridge check does), so the
	// process is started from a thread locked for as long as it runs.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			<-p.done
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting the BGP speaker process: %w", err)
	}
	go p.read(out)
	start := startConfig{RouterID: cfg.RouterID, ASN: cfg.ASN, ListenPort: cfg.ListenPort, ListenAddresses: cfg.ListenAddresses}
	if _, err := p.call(ctx, request{Op: opStart, Start: &start}); err != nil {
		p.kill()
		<-p.done
		return nil, err
	}
	return p, nil
}

// read handles the process's messages until its stdout ends, then reaps it.
func (p *Process) read(out io.Reader) {
	dec := json.NewDecoder(out)
	var readErr error
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = fmt.Errorf("reading its messages: %w", err)
				p.kill()
			}
			break
		}
		switch {
		case m.Reply != nil:
			p.replies <- *m.Reply
		case m.Session != nil:
			p.mu.Lock()
			p.sessions[m.Session.Peer] = *m.Session
			p.mu.Unlock()
			if p.onSC != nil {
				p.onSC(*m.Session)
			}
		}
	}
	waitErr := p.cmd.Wait()
	p.mu.Lock()
	stopping := p.stopping
	switch {
	case readErr != nil:
		p.err = fmt.Errorf("%w: the speaker process failed: %w", ErrStopped, readErr)
	case waitErr != nil && !stopping:
		p.err = fmt.Errorf("%w: the speaker process ended: %w", ErrStopped, waitErr)
	case !stopping:
		p.err = fmt.Errorf("%w: the speaker process ended", ErrStopped)
	default:
		p.err = ErrStopped
	}
	var lost []SessionChange
	if !stopping {
		for _, c := range p.sessions {
			if c.State == bgpstatus.StateEstablished {
				lost = append(lost, SessionChange{Peer: c.Peer, ASN: c.ASN, State: bgpstatus.StateIdle,
					Previous: bgpstatus.StateEstablished, Reason: "the BGP speaker process ended"})
			}
		}
	}
	close(p.done)
	p.mu.Unlock()
	if p.onSC != nil {
		for _, c := range lost {
			p.onSC(c)
		}
	}
}

func (p *Process) kill() {
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
	}
}

// call sends req and waits for its reply. A process that does not answer before ctx ends is
// killed: a stuck speaker is ended and started again rather than waited for.
func (p *Process) call(ctx context.Context, req request) (*reply, error) {
	p.callMu.Lock()
	defer p.callMu.Unlock()
	select {
	case <-p.done:
		return nil, p.Err()
	default:
	}
	if err := p.enc.Encode(req); err != nil {
		p.kill()
		<-p.done
		return nil, p.Err()
	}
	select {
	case r := <-p.replies:
		p.mu.Lock()
		p.peers, p.advertised = r.Peers, r.Advertised
		p.mu.Unlock()
		return &r, r.err()
	case <-p.done:
		return nil, p.Err()
	case <-ctx.Done():
		p.kill()
		<-p.done
		return nil, fmt.Errorf("the BGP speaker process did not answer %s: %w", req.Op, ctx.Err())
	}
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Err is nil while the process runs; once it ended, why (wrapping ErrStopped).
func (p *Process) Err() error {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	default:
		return nil
	}
}

// SetAdvertisements is Speaker's, in the process.
func (p *Process) SetAdvertisements(want map[netip.Prefix]netip.Addr) error {
	for prefix, nextHop := range want {
		if err := ValidatePrefix(prefix, nextHop); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := p.call(ctx, request{Op: opSetAdvertisements, Advertisements: want})
	return err
}

// Advertisements are the speaker's, as of the last call.
func (p *Process) Advertisements() map[netip.Prefix]netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.advertised)
}

// SetPeers is Speaker's, in the process.
func (p *Process) SetPeers(ctx context.Context, want []PeerConfig) error {
	for i := range want {
		if err := want[i].Validate(); err != nil {
			return err
		}
	}
	_, err := p.call(ctx, request{Op: opSetPeers, Peers: want})
	return err
}

// Peers are the speaker's, as of the last call, by address.
func (p *Process) Peers() []PeerConfig {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]PeerConfig(nil), p.peers...)
}

// Snapshot is Speaker's, from the process.
func (p *Process) Snapshot(ctx context.Context) ([]bgpstatus.PeerStatus, error) {
	r, err := p.call(ctx, request{Op: opSnapshot})
	if err != nil {
		return nil, err
	}
	return r.Status, nil
}

// Stop ends every session with a NOTIFICATION (peers withdraw our routes) and ends the process.
func (p *Process) Stop(ctx context.Context) error { return p.stop(ctx, opStop) }

// StopForRestart closes every session without a NOTIFICATION (graceful-restart peers keep our
// routes) and ends the process.
func (p *Process) StopForRestart(ctx context.Context) error { return p.stop(ctx, opStopForRestart) }

func (p *Process) stop(ctx context.Context, op string) error {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	_, err := p.call(ctx, request{Op: op})
	if errors.Is(err, ErrStopped) {
		err = nil // already ended or stopped: nothing left to stop
	}
	p.in.Close() // the process ends at the end of its input, if the reply did not end it
	select {
	case <-p.done:
	case <-ctx.Done():
		p.kill()
		<-p.done
	}
	return err
}
