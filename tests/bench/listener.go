package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeplane/edgeplane/pkg/maps/events"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// listener is one `edgeplanectl monitor` process on one node. Its events go to /dev/null, so that
// what is measured is the datapath's emission and the reader's decoding and formatting, not a
// terminal; the summary it prints on exit says how many events it received.
type listener struct {
	node   *lab.Node
	flags  events.Flags
	cmd    *exec.Cmd
	sink   *os.File
	status chan string
	done   bool
}

// listenerCount is what one listener received: events shown (all of them: no filter but --type)
// and events the ring buffer had no room for while it ran.
type listenerCount struct {
	Shown, Lost uint64
}

var monitorSummary = regexp.MustCompile(`^(\d+) events shown, (\d+) lost$`)

// startListener runs `edgeplanectl monitor --type typ` in node's netns against its bpffs and
// waits for its "monitoring" line, which it prints once emission is on, then checks that the
// datapath now sees the flags.
func startListener(ctlBin string, node *lab.Node, typ string, flags events.Flags) (_ *listener, err error) {
	sink, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	l := &listener{node: node, flags: flags, sink: sink, status: make(chan string, 16)}
	defer func() {
		if err != nil {
			l.kill()
		}
	}()
	l.cmd = exec.Command("nsenter", "--net="+node.Netns.Path(), "--", ctlBin,
		"--bpffs-root", node.BPFFS, "--run-dir", node.RunDir, "monitor", "--type", typ)
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	l.cmd.Stdout = sink
	stderr, err := l.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting monitor on %s: %w", node.Name, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			l.status <- sc.Text()
		}
		close(l.status)
	}()
	select {
	case s, ok := <-l.status:
		if !ok || !strings.HasPrefix(s, "monitoring ") {
			return nil, fmt.Errorf("monitor on %s did not start: %q", node.Name, s)
		}
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("monitor on %s did not start within 5s", node.Name)
	}
	if c, err := events.ReadConfig(node.BPFFS); err != nil || c.Flags != flags {
		return nil, fmt.Errorf("monitor_cfg_map on %s while monitoring: %+v, %v; want flags %d", node.Name, c, err, flags)
	}
	return l, nil
}

// stop interrupts the monitor as Ctrl-C does, reads its summary, and checks that emission is
// off again, so that the next round without a listener really has none.
func (l *listener) stop() (listenerCount, error) {
	if l.done {
		return listenerCount{}, errors.New("listener already stopped")
	}
	if err := l.cmd.Process.Signal(syscall.SIGINT); err != nil {
		l.kill()
		return listenerCount{}, err
	}
	var lines []string
	for s := range l.status {
		lines = append(lines, s)
	}
	err := l.cmd.Wait()
	l.done = true
	l.sink.Close()
	if err != nil {
		return listenerCount{}, fmt.Errorf("monitor on %s after SIGINT: %w: %q", l.node.Name, err, lines)
	}
	var c listenerCount
	m := monitorSummary.FindStringSubmatch(lastLine(lines))
	if m == nil {
		return c, fmt.Errorf("monitor on %s printed no summary: %q", l.node.Name, lines)
	}
	c.Shown, _ = strconv.ParseUint(m[1], 10, 64)
	c.Lost, _ = strconv.ParseUint(m[2], 10, 64)
	if cfg, err := events.ReadConfig(l.node.BPFFS); err != nil || cfg.Flags != 0 {
		return c, fmt.Errorf("monitor_cfg_map on %s after the monitor exited: %+v, %v; want 0", l.node.Name, cfg, err)
	}
	return c, nil
}

// kill ends a listener that was not stopped (on failure).
func (l *listener) kill() {
	if l.cmd != nil && l.cmd.Process != nil && !l.done {
		_ = l.cmd.Process.Kill()
		_ = l.cmd.Wait()
		l.done = true
	}
	l.sink.Close()
}

func lastLine(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}
