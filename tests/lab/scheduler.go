package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// StartScheduler starts kube-scheduler (scripts/build-k8s.sh kube-scheduler) in the API namespace,
// authenticated as system:kube-scheduler with a certificate from the lab CA (its bootstrap RBAC
// role), no leader election, nothing served. It logs to <lab dir>/scheduler/ and is stopped at
// Close; the process is also l.API.Scheduler. The lab's other modes bind Pods themselves
// (spec.nodeName) and run no scheduler.
func (l *Lab) StartScheduler(ctx context.Context) (*Process, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if p := l.API.Scheduler; p != nil {
		if done, _ := p.Exited(); !done {
			return nil, errors.New("kube-scheduler is already running")
		}
	}
	bin := filepath.Join(l.cfg.K8sBin, "kube-scheduler")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("kube-scheduler: %w (run scripts/build-k8s.sh kube-scheduler)", err)
	}
	dir := filepath.Join(l.Dir, "scheduler")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := l.API.writeComponentKubeconfig(kubeconfig, l.API.URL, "system:kube-scheduler"); err != nil {
		return nil, err
	}
	p, err := startProcess("kube-scheduler", l.API.Netns, filepath.Join(dir, "kube-scheduler.log"), bin,
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--v=2",
	)
	if err != nil {
		return nil, err
	}
	l.API.Scheduler = p
	l.onClose(func() { p.Stop(5 * time.Second) })
	select {
	case <-p.Done():
		return nil, fmt.Errorf("kube-scheduler exited; log tail:\n%s", p.LogTail(40))
	case <-time.After(time.Second):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p, nil
}
