package ociimage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// privateContainerd starts a containerd whose root, state, sockets and plugin dirs all live in a
// temporary directory (CRI off, nothing shared with a host containerd or another test's), and
// returns a function running ctr against it in the k8s.io namespace, where kubelet's images live.
func privateContainerd(t *testing.T) func(args ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts a private containerd")
	}
	for _, b := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s: %v (run scripts/install-containerd.sh)", b, err)
		}
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.overlayfs"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "containerd.toml")
	must(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	must(t, err)
	defer log.Close()
	cmd := exec.Command("containerd", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	ctr := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := exec.Command("ctr", "--address", sock, "version").Run(); err == nil {
			return ctr
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd exited: %v: %s", err, b)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd not answering on %s: %s", sock, b)
		}
	}
}

// ctrImages parses `ctr images ls` into ref -> platforms.
func ctrImages(out string) map[string]string {
	images := map[string]string{}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 5 {
			continue
		}
		// REF TYPE DIGEST SIZE (two fields: "1.2 KiB") PLATFORMS LABELS
		images[f[0]] = f[len(f)-2]
	}
	return images
}

// ctrUnpacked parses `ctr images check` into ref -> "complete"/"incomplete" status and
// whether the image is unpacked for the host.
func ctrUnpacked(out string) map[string]string {
	status := map[string]string{}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 4 {
			continue
		}
		status[f[0]] = f[3] + " unpacked=" + f[len(f)-1]
	}
	return status
}

// TestContainerdImports imports both archive kinds into a private containerd 1.6 (Debian 12's,
// what the lab's nodes run) and checks the names, platforms and that the host's image unpacks.
func TestContainerdImports(t *testing.T) {
	ctr := privateContainerd(t)
	dir := t.TempDir()

	host, err := Build(testSpec(t, runtime.GOARCH))
	must(t, err)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	foreign, err := Build(testSpec(t, other))
	must(t, err)

	docker := filepath.Join(dir, "docker.tar")
	must(t, WriteArchive(docker, []string{"localhost/edgeplane/test:docker"}, host))
	ctr("images", "import", "--snapshotter", "native", docker)

	oci := filepath.Join(dir, "oci.tar")
	must(t, WriteArchive(oci, []string{"localhost/edgeplane/test:oci", "localhost/edgeplane/test:latest"}, host, foreign))
	ctr("images", "import", "--snapshotter", "native", oci)

	ls := ctr("images", "ls")
	t.Logf("ctr images ls:\n%s", ls)
	images := ctrImages(ls)
	platforms := []string{"linux/" + runtime.GOARCH, "linux/" + other}
	if platforms[0] > platforms[1] {
		platforms[0], platforms[1] = platforms[1], platforms[0]
	}
	want := map[string]string{
		"localhost/edgeplane/test:docker": "linux/" + runtime.GOARCH,
		"localhost/edgeplane/test:oci":    strings.Join(platforms, ","),
		"localhost/edgeplane/test:latest": strings.Join(platforms, ","),
	}
	for ref, p := range want {
		if images[ref] != p {
			t.Errorf("ctr images ls: %s has platforms %q, want %q (all: %v)", ref, images[ref], p, images)
		}
	}
	if len(images) != len(want) {
		t.Errorf("ctr images ls: %v, want exactly %v", images, want)
	}
	check := ctr("images", "check", "--snapshotter", "native")
	t.Logf("ctr images check:\n%s", check)
	status := ctrUnpacked(check)
	for ref := range want {
		if status[ref] != "complete unpacked=true" {
			t.Errorf("ctr images check: %s is %q, want complete and unpacked", ref, status[ref])
		}
	}
}
