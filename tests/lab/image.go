package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/edgeplane/edgeplane/internal/ociimage"
)

// EdgeplaneImageRef is the reference BuildEdgeplaneImage gives the image.
const EdgeplaneImageRef = "localhost/edgeplane/edgeplane:lab"

// BuildEdgeplaneImage builds edgeplane's image for the host's architecture, laid out as the
// Dockerfile lays it out (the four commands in /usr/local/bin, the reference plugins host-local,
// portmap and bandwidth from cfg.CNIPluginsBin in /usr/local/lib/edgeplane/cni-plugins), and writes
// it as a docker-archive tarball named EdgeplaneImageRef at out. The commands are built static
// (CGO_ENABLED=0) from the checkout at repoRoot into a directory beside out: the lab's
// EDGEPLANE_BIN is built for the host and may link libc, which the image does not have. For a run
// without `make image`'s tarball (EDGEPLANE_IMAGE).
func BuildEdgeplaneImage(ctx context.Context, cfg Config, repoRoot, out string) error {
	bin := out + ".bin"
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	build := []string{"go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin + "/", "./cmd/..."}
	if out, err := runInDir(ctx, repoRoot, []string{"CGO_ENABLED=0"}, build...); err != nil {
		return fmt.Errorf("building edgeplane's commands: %w: %s", err, out)
	}
	var files []ociimage.File
	for _, c := range []string{"edgeplane-agent", "edgeplane-bgp", "edgeplane-cni", "edgeplane-install", "edgeplanectl"} {
		files = append(files, ociimage.File{Path: "/usr/local/bin/" + c, Source: filepath.Join(bin, c)})
	}
	for _, p := range []string{"host-local", "portmap", "bandwidth"} {
		files = append(files, ociimage.File{Path: "/usr/local/lib/edgeplane/cni-plugins/" + p, Source: filepath.Join(cfg.CNIPluginsBin, p)})
	}
	img, err := ociimage.Build(ociimage.Spec{
		OS: "linux", Arch: runtime.GOARCH,
		Layers:     []ociimage.Layer{{Files: files}},
		Entrypoint: []string{"/usr/local/bin/edgeplane-agent"},
	})
	if err != nil {
		return fmt.Errorf("building edgeplane's image: %w", err)
	}
	return ociimage.WriteArchive(out, []string{EdgeplaneImageRef}, img)
}

// runInDir runs a command in dir with env added to the process's, returning combined output.
func runInDir(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	return string(b), err
}
