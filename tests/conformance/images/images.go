// Package images builds, without Docker or a registry, the container images e2e.test pulls for the
// [sig-network] specs, under the exact references Kubernetes' test/utils/image/manifest.go gives
// them, plus the CoreDNS image the lab cluster runs as its DNS.
//
// How: each image is an internal/ociimage Spec over host files: Go binaries built from their
// modules (agnhost and regression-issue-74839 from k8s.io/kubernetes at the cluster's version,
// CoreDNS from github.com/coredns/coredns, the lab's pause program) and Debian bookworm userlands
// unpacked from .debs by scripts/build-e2e-images.sh. agnhost and glibc-dns-testing share one
// userland layer (the same bytes give the same digest, so containerd stores it once). Build writes
// one docker-archive tarball per image into a directory named by the hash of every input, so an
// unchanged input set is never rebuilt.
//
// The images stand in for upstream ones: the programs are the upstream programs at the pinned
// versions; the userlands are Debian's (glibc) where upstream uses Alpine (musl), busybox is
// Debian's busybox-static, nginx is Debian's nginx-light, and distroless-iptables is Debian's
// iptables and conntrack. docs/conformance.md lists them.
package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/edgeplane/edgeplane/internal/ociimage"
)

// The references e2e.test v1.37.2 pulls (test/utils/image/manifest.go, default registries), and
// the lab's CoreDNS image.
const (
	Agnhost              = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	BusyBox              = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	GlibcDNSTesting      = "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1"
	Nginx                = "registry.k8s.io/e2e-test-images/nginx:1.27.0-2"
	RegressionIssue74839 = "registry.k8s.io/e2e-test-images/regression-issue-74839:1.5"
	DistrolessIptables   = "registry.k8s.io/build-image/distroless-iptables:v0.9.9"
	Pause                = "registry.k8s.io/pause:3.10.2"
	CoreDNS              = "localhost/edgeplane/coredns:v1.14.6"
)

// builderRevision is part of the cache key: bump it when an image's content changes without a
// change of its inputs.
const builderRevision = "2"

// Inputs are the host files the images are made of.
type Inputs struct {
	K8sVersion string // "v1.37.2": agnhost's VERSION in K8sSource must match Agnhost's tag
	K8sSource  string // the k8s.io/kubernetes module directory (agnhost's porter certificates, VERSION)
	K8sBin     string // directory with agnhost and regression-issue-74839
	CoreDNSBin string // the coredns binary
	PauseBin   string // the lab's pause program (tests/kubelet/pause)
	// Rootfs maps a userland name ("userland", "busybox", "iptables", "nginx") to the directory
	// its .debs were unpacked into.
	Rootfs map[string]string
}

// Tarball is one image archive and the references it carries.
type Tarball struct {
	Path string
	Refs []string
}

// Build writes every image's tarball under cacheDir (once per input set) and returns them.
func Build(ctx context.Context, cacheDir string, in Inputs) ([]Tarball, error) {
	version, err := os.ReadFile(filepath.Join(in.K8sSource, "test/images/agnhost/VERSION"))
	if err != nil {
		return nil, fmt.Errorf("reading agnhost's version: %w", err)
	}
	if tag := Agnhost[strings.LastIndex(Agnhost, ":")+1:]; strings.TrimSpace(string(version)) != tag {
		return nil, fmt.Errorf("agnhost in %s is version %s, the images are built for %s", in.K8sSource, strings.TrimSpace(string(version)), tag)
	}
	specs, err := in.specs()
	if err != nil {
		return nil, err
	}
	key, err := in.cacheKey()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, "e2e-images-"+in.K8sVersion+"-"+key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the image cache: %w", err)
	}

	tarballs := make([]Tarball, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	limit := make(chan struct{}, 2) // a userland layer is built in memory: two at a time
	for i, s := range specs {
		tarballs[i] = Tarball{Path: filepath.Join(dir, s.name+".tar"), Refs: []string{s.ref}}
		if _, err := os.Stat(tarballs[i].Path); err == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			limit <- struct{}{}
			defer func() { <-limit }()
			if err := ctx.Err(); err != nil {
				errs[i] = err
				return
			}
			img, err := ociimage.Build(s.spec)
			if err != nil {
				errs[i] = fmt.Errorf("building %s: %w", s.ref, err)
				return
			}
			if err := ociimage.WriteArchive(tarballs[i].Path, tarballs[i].Refs, img); err != nil {
				errs[i] = fmt.Errorf("writing %s: %w", s.ref, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return tarballs, nil
}

type imageSpec struct {
	name, ref string
	spec      ociimage.Spec
}

func (in Inputs) rootfs(name string) (string, error) {
	dir, ok := in.Rootfs[name]
	if !ok || dir == "" {
		return "", fmt.Errorf("no %s root file system given", name)
	}
	return dir, nil
}

// etcFiles are the files dpkg's maintainer scripts would have written (they never run here):
// the accounts, the name-service order (files before DNS, as Debian's default nsswitch.conf) and
// /bin/sh.
func etcFiles(extraPasswd, extraGroup string) []ociimage.File {
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" + extraPasswd
	group := "root:x:0:\nnogroup:x:65534:\n" + extraGroup
	return []ociimage.File{
		{Path: "/etc/passwd", Data: []byte(passwd)},
		{Path: "/etc/group", Data: []byte(group)},
		{Path: "/etc/nsswitch.conf", Data: []byte("passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nservices: files\nprotocols: files\n")},
		{Path: "/bin/sh", Link: "dash"},
	}
}

const debianPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (in Inputs) specs() ([]imageSpec, error) {
	var roots = map[string]string{}
	for _, n := range []string{"userland", "busybox", "iptables", "nginx"} {
		dir, err := in.rootfs(n)
		if err != nil {
			return nil, err
		}
		roots[n] = dir
	}
	busyboxLinks, err := busyboxApplets(filepath.Join(roots["busybox"], "bin/busybox"))
	if err != nil {
		return nil, err
	}
	agnhost := filepath.Join(in.K8sBin, "agnhost")
	porter := filepath.Join(in.K8sSource, "test/images/agnhost/porter")
	userland := ociimage.Layer{Dir: roots["userland"], Files: append(etcFiles(
		"user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n",
		"user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"),
		// The alternatives the packages' postinst scripts would register.
		ociimage.File{Path: "/bin/nc", Link: "nc.openbsd"},
		ociimage.File{Path: "/usr/bin/awk", Link: "mawk"},
		ociimage.File{Path: "/usr/bin/which", Link: "which.debianutils"},
	)}
	linux := func(layers []ociimage.Layer, entrypoint, cmd []string) ociimage.Spec {
		return ociimage.Spec{OS: "linux", Arch: "amd64", Layers: layers, Entrypoint: entrypoint, Cmd: cmd, Env: []string{debianPath}}
	}
	return []imageSpec{
		{"agnhost", Agnhost, linux([]ociimage.Layer{userland, {Files: []ociimage.File{
			{Path: "/agnhost", Source: agnhost},
			{Path: "/agnhost-2", Link: "agnhost"},
			{Path: "/coredns", Source: in.CoreDNSBin},
			{Path: "/localhost.crt", Source: filepath.Join(porter, "localhost.crt")},
			{Path: "/localhost.key", Source: filepath.Join(porter, "localhost.key")},
			{Path: "/uploads/.keep", Data: []byte{}},
		}}}, []string{"/agnhost"}, []string{"pause"})},
		{"glibc-dns-testing", GlibcDNSTesting, linux([]ociimage.Layer{userland, {Files: []ociimage.File{
			{Path: "/coredns", Source: in.CoreDNSBin},
		}}}, nil, []string{"bash"})},
		{"busybox", BusyBox, linux([]ociimage.Layer{{Dir: roots["busybox"], Files: append(busyboxLinks,
			ociimage.File{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")},
			ociimage.File{Path: "/etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		)}}, nil, []string{"sh"})},
		{"nginx", Nginx, linux([]ociimage.Layer{{Dir: roots["nginx"], Files: append(etcFiles(
			"www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n", "www-data:x:33:\n"),
			ociimage.File{Path: "/etc/nginx/sites-enabled/default", Link: "/etc/nginx/sites-available/default"},
			ociimage.File{Path: "/var/log/nginx/access.log", Link: "/dev/stdout"},
			ociimage.File{Path: "/var/log/nginx/error.log", Link: "/dev/stderr"},
			ociimage.File{Path: "/var/lib/nginx/body/.keep", Data: []byte{}},
			ociimage.File{Path: "/run/.keep", Data: []byte{}},
		)}}, []string{"nginx", "-g", "daemon off;"}, nil)},
		{"regression-issue-74839", RegressionIssue74839, linux([]ociimage.Layer{{Files: []ociimage.File{
			{Path: "/regression-issue-74839", Source: filepath.Join(in.K8sBin, "regression-issue-74839")},
		}}}, []string{"/regression-issue-74839"}, nil)},
		{"distroless-iptables", DistrolessIptables, linux([]ociimage.Layer{{Dir: roots["iptables"], Files: append(append(etcFiles("", ""),
			ociimage.File{Path: "/usr/bin/which", Link: "which.debianutils"}), iptablesLinks()...)}}, nil, []string{"/bin/sh"})},
		{"pause", Pause, linux([]ociimage.Layer{{Files: []ociimage.File{
			{Path: "/pause", Source: in.PauseBin},
		}}}, []string{"/pause"}, nil)},
		{"coredns", CoreDNS, linux([]ociimage.Layer{{Files: []ociimage.File{
			{Path: "/coredns", Source: in.CoreDNSBin},
		}}}, []string{"/coredns"}, nil)},
	}, nil
}

// iptablesLinks are the alternatives Debian's postinst would point at the nft backend, as upstream
// distroless-iptables (which runs a wrapper choosing nft or legacy) resolves on current kernels.
func iptablesLinks() []ociimage.File {
	var files []ociimage.File
	for _, family := range []string{"iptables", "ip6tables"} {
		for _, suffix := range []string{"", "-save", "-restore"} {
			files = append(files, ociimage.File{Path: "/usr/sbin/" + family + suffix, Link: "xtables-nft-multi"})
		}
	}
	return files
}

// busyboxApplets are the symlinks `busybox --install` would make, read from the binary itself
// (Debian's busybox-static is static, so it runs on the build host).
func busyboxApplets(busybox string) ([]ociimage.File, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	var files []ociimage.File
	for _, p := range strings.Fields(string(out)) {
		if p == "bin/busybox" {
			continue
		}
		files = append(files, ociimage.File{Path: "/" + p, Link: "/bin/busybox"})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("busybox %s lists no applet", busybox)
	}
	return files, nil
}

// cacheKey hashes every input: the binaries' contents, the package lists the root file systems
// were unpacked from (scripts/build-e2e-images.sh writes <dir>.debs) and the builder's revision.
func (in Inputs) cacheKey() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "revision %s\nk8s %s\n", builderRevision, in.K8sVersion)
	files := []string{
		filepath.Join(in.K8sBin, "agnhost"), filepath.Join(in.K8sBin, "regression-issue-74839"),
		in.CoreDNSBin, in.PauseBin,
		filepath.Join(in.K8sSource, "test/images/agnhost/porter/localhost.crt"),
		filepath.Join(in.K8sSource, "test/images/agnhost/porter/localhost.key"),
	}
	names := make([]string, 0, len(in.Rootfs))
	for n := range in.Rootfs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		files = append(files, strings.TrimSuffix(in.Rootfs[n], "/")+".debs")
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return "", fmt.Errorf("hashing the image inputs: %w", err)
		}
		fmt.Fprintf(h, "%s\n", filepath.Base(f))
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return "", fmt.Errorf("hashing %s: %w", f, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}
