package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

// What a start-up benchmark reads from outside the agent, without slowing it down: the klog lines
// it writes anyway (their timestamps are the agent's own clock, the host's), its memory from
// /proc, and the pinned service maps once it says it is done.

// UninstallAgent stops the node's agent and runs `edgeplane-agent --uninstall`: no pins, no
// device, no node.json. The next StartAgent is a first start on this node.
func (n *Node) UninstallAgent(ctx context.Context) error {
	n.stopAgent()
	if out, err := n.RunAgentOnce(ctx, "--uninstall"); err != nil {
		return fmt.Errorf("uninstalling edgeplane from %s: %w\n%s", n.Name, err, out)
	}
	return nil
}

// AgentMemory is the agent's memory as /proc/<pid>/status reports it, in bytes.
type AgentMemory struct {
	Peak int64 // VmHWM: the most resident memory so far
	RSS  int64 // VmRSS: resident now
	// RSS is Anon (heap, stacks) + File (the binary's pages read so far) + Shmem.
	Anon, File int64
}

// AgentMemory reads the running agent's resident memory.
func (n *Node) AgentMemory() (AgentMemory, error) {
	if n.Agent == nil {
		return AgentMemory{}, fmt.Errorf("no agent on %s", n.Name)
	}
	buf, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.Agent.Pid()))
	if err != nil {
		return AgentMemory{}, fmt.Errorf("agent memory on %s: %w", n.Name, err)
	}
	var m AgentMemory
	sc := bufio.NewScanner(bytes.NewReader(buf))
	for sc.Scan() {
		field, value, ok := strings.Cut(sc.Text(), ":")
		dst := map[string]*int64{"VmHWM": &m.Peak, "VmRSS": &m.RSS, "RssAnon": &m.Anon, "RssFile": &m.File}[field]
		if !ok || dst == nil {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return AgentMemory{}, fmt.Errorf("agent memory on %s: %s: %w", n.Name, sc.Text(), err)
		}
		*dst = kb << 10
	}
	if m.Peak == 0 {
		return AgentMemory{}, fmt.Errorf("agent memory on %s: no VmHWM in /proc/%d/status", n.Name, n.Agent.Pid())
	}
	return m, nil
}

// ClearAgentReferenced clears the accessed bits of the agent's pages (/proc/<pid>/clear_refs), so
// that AgentReferenced reports what the agent touched from now on.
func (n *Node) ClearAgentReferenced() error {
	if n.Agent == nil {
		return fmt.Errorf("no agent on %s", n.Name)
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", n.Agent.Pid()), []byte("1"), 0); err != nil {
		return fmt.Errorf("clearing the agent's referenced pages on %s: %w", n.Name, err)
	}
	return nil
}

// AgentReferenced is the agent's resident memory touched since ClearAgentReferenced (smaps'
// Referenced), in bytes: Exe of its executable's mappings (the code, the read-only data and the
// function tables, the data segment), Anon of its anonymous ones (heap, stacks, the runtime's).
// Exe beside AgentMemory.File is how much of the binary's resident pages the agent uses.
func (n *Node) AgentReferenced() (exe, anon int64, err error) {
	if n.Agent == nil {
		return 0, 0, fmt.Errorf("no agent on %s", n.Name)
	}
	pid := n.Agent.Pid()
	path, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("agent executable on %s: %w", n.Name, err)
	}
	buf, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("agent mappings on %s: %w", n.Name, err)
	}
	exe, anon, err = referenced(buf, path)
	if err != nil {
		return 0, 0, fmt.Errorf("agent mappings on %s: %w", n.Name, err)
	}
	return exe, anon, nil
}

// referenced sums smaps' Referenced over the mappings of the file exe and over the anonymous ones
// (no file, or the kernel's [heap], [stack], [anon:...]; not [vdso], [vvar] and the like).
func referenced(smaps []byte, exe string) (exeBytes, anonBytes int64, err error) {
	var dst *int64
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			// A mapping's header: range perms offset dev inode [path].
			name := strings.Join(fields[5:], " ")
			switch {
			case name == exe:
				dst = &exeBytes
			case name == "" || name == "[heap]" || name == "[stack]" || strings.HasPrefix(name, "[anon:"):
				dst = &anonBytes
			default:
				dst = nil
			}
			continue
		}
		if len(fields) != 3 || fields[0] != "Referenced:" || fields[2] != "kB" || dst == nil {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("smaps line %q: %w", sc.Text(), err)
		}
		*dst += kb << 10
	}
	return exeBytes, anonBytes, sc.Err()
}

// LogLine is one klog line of an agent.
type LogLine struct {
	Time time.Time // the agent's stamp
	Text string
}

// klogHeader is klog's "I1123 02:20:44.555836   18614 file.go:43] " prefix.
var klogHeader = regexp.MustCompile(`^[IWEF](\d{4} \d{2}:\d{2}:\d{2}\.\d{6})\s+\d+ [^ ]+\] `)

// ParseKlogTime reads the stamp of a klog line, which has no year: it is taken from now (a line
// that would be more than a day ahead is from last year).
func ParseKlogTime(line string, now time.Time) (time.Time, bool) {
	m := klogHeader.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("2006 0102 15:04:05.000000", fmt.Sprintf("%d %s", now.Year(), m[1]), time.Local)
	if err != nil {
		return time.Time{}, false
	}
	if t.After(now.Add(24 * time.Hour)) {
		t = t.AddDate(-1, 0, 0)
	}
	return t, true
}

// WaitAgentLog waits for the current agent's log to have a line containing marker, reading only
// what was appended since the last look (every 20 ms), and returns it with the lines before it.
// It fails early, with the log tail, when the agent exits.
func (n *Node) WaitAgentLog(ctx context.Context, marker string, timeout time.Duration) (LogLine, []LogLine, error) {
	if n.Agent == nil {
		return LogLine{}, nil, fmt.Errorf("no agent on %s", n.Name)
	}
	f, err := os.Open(n.Agent.LogPath)
	if err != nil {
		return LogLine{}, nil, err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		before  []LogLine
		partial []byte
		chunk   = make([]byte, 64<<10)
	)
	for {
		for {
			k, err := f.Read(chunk)
			partial = append(partial, chunk[:k]...)
			if err == io.EOF || k == 0 {
				break
			}
			if err != nil {
				return LogLine{}, nil, err
			}
		}
		for {
			i := bytes.IndexByte(partial, '\n')
			if i < 0 {
				break
			}
			text := string(partial[:i])
			partial = partial[i+1:]
			t, ok := ParseKlogTime(text, time.Now())
			if !ok {
				continue
			}
			line := LogLine{Time: t, Text: text}
			if strings.Contains(text, marker) {
				return line, before, nil
			}
			before = append(before, line)
		}
		if done, err := n.Agent.Exited(); done {
			return LogLine{}, nil, fmt.Errorf("agent on %s exited (%v) before logging %q; log tail:\n%s", n.Name, err, marker, n.Agent.LogTail(40))
		}
		select {
		case <-ctx.Done():
			return LogLine{}, nil, fmt.Errorf("agent on %s did not log %q within %v; log tail:\n%s", n.Name, marker, timeout, n.Agent.LogTail(40))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ServiceMaps reads lb_svc_map and lb_backend_map of the node as they are pinned.
func (n *Node) ServiceMaps() (map[lb.SvcKey]lb.Svc, map[lb.BackendKey]lb.Backend, error) {
	svc, err := lb.OpenSvcReadOnly(n.BPFFS)
	if err != nil {
		return nil, nil, err
	}
	defer svc.Close()
	backend, err := lb.OpenBackendReadOnly(n.BPFFS)
	if err != nil {
		return nil, nil, err
	}
	defer backend.Close()
	frontends, err := svc.List()
	if err != nil {
		return nil, nil, err
	}
	slots, err := backend.List()
	if err != nil {
		return nil, nil, err
	}
	return frontends, slots, nil
}

// StopAgent stops the node's agent with SIGTERM, leaving every pin in place for the next start.
func (n *Node) StopAgent() { n.stopAgent() }
