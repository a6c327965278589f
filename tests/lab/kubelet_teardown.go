package lab

// Tearing a kubelet node down (KubeletNode.Close): kubelet, its containers (runc), the shims and
// containerd, the sandbox namespaces, cgroups and mounts, and the host sysctls kubelet changed.

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Close stops kubelet, removes the containers (runc), stops the shims and containerd, deletes the
// sandbox namespaces containerd made and unmounts everything below the instance's dir. Idempotent.
func (k *KubeletNode) Close() {
	if k.closed {
		return
	}
	k.closed = true
	logf := k.lab.Logf
	if k.Kubelet != nil {
		k.Kubelet.Stop(10 * time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var netnsPaths []string
	if k.Containerd != nil {
		if done, _ := k.Containerd.Exited(); !done {
			netnsPaths = k.sandboxNetnsPaths(ctx)
		}
	}
	// Containers: runc keeps their state under our runc root (one dir per containerd namespace).
	var containerIDs []string
	if dirs, err := os.ReadDir(k.runcRoot); err == nil {
		for _, d := range dirs {
			root := filepath.Join(k.runcRoot, d.Name())
			ids, _ := os.ReadDir(root)
			for _, id := range ids {
				containerIDs = append(containerIDs, id.Name())
				if out, err := run(ctx, "nsenter", append(k.nsenter(), "--", "runc", "--root", root, "delete", "--force", id.Name())...); err != nil {
					logf("kubelet node %s: runc delete %s: %v: %s", k.Name, id.Name(), err, out)
				}
			}
		}
	}
	// Shims run in their own sessions: find ours by the containerd address on their command line.
	for _, pid := range k.shimPids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if k.Containerd != nil {
		k.Containerd.Stop(10 * time.Second)
	}
	for _, p := range netnsPaths {
		if !strings.HasPrefix(filepath.Base(p), "cni-") {
			continue
		}
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			logf("kubelet node %s: removing %s: %v", k.Name, p, err)
		}
	}
	// kubelet links container logs from the fixed /var/log/containers: drop links into our dir.
	if links, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, e := range links {
			p := filepath.Join("/var/log/containers", e.Name())
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, k.Dir+"/") {
				_ = os.Remove(p)
			}
		}
	}
	for key, v := range k.sysctls {
		if b, err := os.ReadFile("/proc/sys/" + key); err == nil && strings.TrimSpace(string(b)) != v {
			if err := os.WriteFile("/proc/sys/"+key, []byte(v), 0o644); err != nil {
				logf("kubelet node %s: restoring %s=%s: %v", k.Name, key, v, err)
			}
		}
	}
	for _, h := range cgroupHierarchies() {
		if k.CgroupRoot != "" {
			removeCgroupTree(filepath.Join(h, k.CgroupRoot))
		}
		for _, id := range containerIDs {
			removeCgroupTree(filepath.Join(h, "k8s.io", id))
		}
		_ = syscall.Rmdir(filepath.Join(h, "k8s.io")) // only if empty: another containerd may use it
	}
	for _, m := range mountsUnder(k.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			logf("kubelet node %s: unmounting %s: %v", k.Name, m, err)
		}
	}
}

func (k *KubeletNode) shimPids() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == k.Socket {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// cgroupHierarchies lists the host's cgroup (v1 and v2) mount points.
func cgroupHierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		i := strings.Index(line, " - ")
		if i < 0 {
			continue
		}
		fields, post := strings.Fields(line[:i]), strings.Fields(line[i+3:])
		if len(fields) < 5 || len(post) < 1 || (post[0] != "cgroup" && post[0] != "cgroup2") {
			continue
		}
		out = append(out, unescapeMount(fields[4]))
	}
	return out
}

// removeCgroupTree removes a cgroup and its children, deepest first (runc delete has emptied them).
func removeCgroupTree(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = syscall.Rmdir(dir)
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
