// Package demo checks `make demo` (tests/lab/cmd/demo): it runs the demo's scenario, lab.RunDemo,
// on a lab of its own and checks what a new user is shown: a Service answered by pods on two
// nodes, a pair of domains that cannot reach each other with every drop counted where it
// happened, and edgeplanectl commands that run as printed. Run it with `make test` (root).
package demo

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

func TestDemo(t *testing.T) {
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	var out bytes.Buffer
	d, err := lab.RunDemo(t.Context(), l, &out)
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the scenario took %v after the API server was up", d.Took.Round(time.Millisecond))

	t.Run("service-answers-from-two-nodes", func(t *testing.T) {
		if len(d.AnswerNodes) < 2 {
			t.Errorf("Service answered from nodes %v (pods %s), want at least two nodes", d.AnswerNodes, lab.FormatCounts(d.Answers))
		}
		total := 0
		for pod, n := range d.Answers {
			if !strings.HasPrefix(pod, "web-node") {
				t.Errorf("answer from %q, not one of the web pods", pod)
			}
			total += n
		}
		if total == 0 {
			t.Error("no answers counted")
		}
		if !strings.Contains(out.String(), d.Service.Spec.ClusterIP) {
			t.Errorf("the output does not show the ClusterIP %s", d.Service.Spec.ClusterIP)
		}
	})

	t.Run("unreachable-domain-pair-counted", func(t *testing.T) {
		var unreachable uint64
		for _, p := range d.Pings {
			if !p.OK() {
				t.Errorf("%s -> %s: reachable=%t, answer %+v, err %v", p.From.Name, p.To.Name, p.Reachable, p.Answer, p.Err)
			}
			if p.Reachable {
				continue
			}
			unreachable++
			if p.Answer.RTT > time.Second {
				t.Errorf("%s -> %s: unreachable after %v, want fast", p.From.Name, p.To.Name, p.Answer.RTT)
			}
			if p.Answer.From != p.From.Node.IP {
				t.Errorf("%s -> %s: host unreachable from %v, want the sender's node %v", p.From.Name, p.To.Name, p.Answer.From, p.From.Node.IP)
			}
		}
		if unreachable == 0 {
			t.Fatal("no unreachable pair in the matrix")
		}
		var counted uint64
		for node, n := range d.DomainDrops {
			counted += n
			// Every node has a pod pinging the other domain, so each counts its own drops.
			if n == 0 {
				t.Errorf("%s counted no DOMAIN_UNREACHABLE", node)
			}
		}
		if counted != unreachable {
			t.Errorf("DOMAIN_UNREACHABLE +%d over the nodes, want +%d (one per unreachable ping)", counted, unreachable)
		}
		if !strings.Contains(out.String(), "DOMAIN_UNREACHABLE") {
			t.Error("the output does not name DOMAIN_UNREACHABLE")
		}
	})

	t.Run("printed-commands-run", func(t *testing.T) {
		want := map[string]bool{"routes": false, "services": false, "stats": false, "monitor": false}
		for _, c := range d.Commands {
			if _, ok := want[c.What]; !ok {
				t.Errorf("unexpected command %q", c.What)
			}
			want[c.What] = true
			if !strings.Contains(out.String(), c.String()) {
				t.Errorf("%s: %q is not printed", c.What, c.String())
			}
			// What a user pastes: the printed line, run by a shell.
			if c.Live {
				checkMonitor(t, d, c)
				continue
			}
			stdout, err := paste(c)
			if err != nil {
				t.Error(err)
				continue
			}
			if c.What == "services" {
				// The agent writes the service name index once a second: a user pasting the line
				// sees the Service's name.
				for deadline := time.Now().Add(3 * time.Second); err == nil && serviceOf(stdout, d.Service.Spec.ClusterIP) != "default/"+lab.DemoService && time.Now().Before(deadline); {
					time.Sleep(200 * time.Millisecond)
					stdout, err = paste(c)
				}
				if err != nil {
					t.Error(err)
					continue
				}
			}
			if strings.TrimSpace(stdout) == "" {
				t.Errorf("%s printed nothing", c)
			}
			t.Logf("%s:\n%s", c.What, stdout)
			switch c.What {
			case "services":
				if got := serviceOf(stdout, d.Service.Spec.ClusterIP); got != "default/"+lab.DemoService {
					t.Errorf("services shows %s as owned by %q, want default/%s", d.Service.Spec.ClusterIP, got, lab.DemoService)
				}
			case "stats":
				if !strings.Contains(stdout, "DOMAIN_UNREACHABLE") {
					t.Error("stats does not show DOMAIN_UNREACHABLE")
				}
			case "routes":
				for _, n := range d.Nodes {
					if !strings.Contains(stdout, n.PodCIDR.String()) {
						t.Errorf("routes does not list %s's %s", n.Name, n.PodCIDR)
					}
				}
			}
		}
		for what, seen := range want {
			if !seen {
				t.Errorf("no %s command printed", what)
			}
		}
	})
}

// paste runs a printed command line as a user pasting it would (through a shell) and returns its
// output; it fails unless the command exits 0 with nothing on stderr.
func paste(c lab.DemoCommand) (string, error) {
	cmd := exec.Command("sh", "-c", c.String())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		return "", fmt.Errorf("%s: %v, stderr %q", c, err, stderr.String())
	}
	return stdout.String(), nil
}

// serviceOf is the SERVICE column of the services table's row whose frontend is on ip.
func serviceOf(table, ip string) string {
	lines := strings.Split(table, "\n")
	if len(lines) == 0 {
		return ""
	}
	col := slices.Index(strings.Fields(lines[0]), "SERVICE")
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if col >= 0 && len(f) > col && strings.HasPrefix(f[0], ip+":") {
			return f[col]
		}
	}
	return ""
}

// checkMonitor runs the printed monitor line, waits for it to start, pings the other domain from
// the client and expects the drop on its output, then interrupts it as Ctrl-C does and expects a
// clean exit.
func checkMonitor(t *testing.T, d *lab.Demo, c lab.DemoCommand) {
	t.Helper()
	// exec, not sh -c: the interrupt must reach edgeplanectl, not a shell in between.
	cmd := exec.Command(c.Argv[0], c.Argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	defer func() {
		if !done {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	lines, status := make(chan string, 64), make(chan string, 16)
	go scan(stdout, lines)
	go scan(stderr, status)
	select {
	case s := <-status:
		if !strings.HasPrefix(s, "monitoring ") {
			t.Fatalf("monitor: %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("monitor did not start within 5s")
	}
	var site *lab.Pod
	for _, p := range d.Web {
		if p.Node.Domain != d.Client.Node.Domain {
			site = p
		}
	}
	if _, err := lab.PingOrUnreachable(d.Client.Netns, site.IP, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(3 * time.Second)
	for found := false; !found; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("monitor exited")
			}
			found = strings.Contains(line, "DOMAIN_UNREACHABLE") && strings.Contains(line, site.IP.String())
			t.Logf("monitor: %s", line)
		case <-deadline:
			t.Fatalf("monitor showed no DOMAIN_UNREACHABLE drop to %s within 3s", site.IP)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	for range status {
	}
	done = true
	if err := cmd.Wait(); err != nil {
		t.Errorf("monitor after Ctrl-C: %v", err)
	}
}

func scan(r io.Reader, out chan<- string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out <- sc.Text()
	}
	close(out)
}
