package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a long-running lab process (etcd, kube-apiserver, an agent) started in its own process
// group inside a namespace, with stdout and stderr appended to a log file.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	mu      sync.Mutex
	waitErr error
}

// startProcess runs bin with args inside ns through nsenter, so the process (and anything it
// forks) can be killed as a group.
func startProcess(name string, ns Netns, logPath string, bin string, args ...string) (*Process, error) {
	return startProcessIn(name, []string{"--net=" + ns.Path()}, logPath, bin, args...)
}

// startProcessIn is startProcess with nsenter's namespace flags given (--net=..., --mount=...).
func startProcessIn(name string, nsenterArgs []string, logPath string, bin string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log for %s: %w", name, err)
	}
	fmt.Fprintf(logf, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command("nsenter", append(append(nsenterArgs, "--", bin), args...)...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (nsenter execs the binary, so it is the binary's pid).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the whole process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling %s: %w", p.Name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process group and waits for the process to be reaped.
func (p *Process) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// Stop asks politely (SIGTERM), then kills after grace.
func (p *Process) Stop(grace time.Duration) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		_ = p.Signal(syscall.SIGKILL) // stragglers in the group
	case <-time.After(grace):
		p.Kill()
	}
}

// LogTail returns the last n lines of the process's log.
func (p *Process) LogTail(n int) string { return TailFile(p.LogPath, n) }

// LogGrep returns the lines of the process's log that contain any of substrs.
func (p *Process) LogGrep(substrs ...string) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.LogPath, err)
	}
	var found []string
	for _, line := range strings.Split(string(b), "\n") {
		if slices.ContainsFunc(substrs, func(s string) bool { return strings.Contains(line, s) }) {
			found = append(found, line)
		}
	}
	return strings.Join(found, "\n")
}

// TailFile returns the last n lines of a file (for logs in failure messages).
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
