// Command mkimage writes image tarballs with internal/ociimage (no Docker, no registry) from host
// directory trees: the -layer trees are shared by every platform, then each -platform adds its
// own tree as the last layer.
//
//	mkimage -ref localhost/edgeplane/pause:lab -platform linux/amd64=rootfs -entrypoint '["/pause"]' -out pause.tar
//	mkimage -ref ghcr.io/edgeplane/edgeplane:v1 -layer common -platform linux/amd64=amd64 -platform linux/arm64=arm64 \
//	    -entrypoint '["/usr/local/bin/edgeplane-agent"]' -out edgeplane.tar -out-platform 'edgeplane-{arch}.tar'
//
// -out holds every platform (a docker-archive for one, an OCI archive with an index for several);
// -out-platform writes one docker-archive per platform, {os} and {arch} replaced.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/edgeplane/edgeplane/internal/ociimage"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// jsonList is a flag holding a JSON array of strings, like a Dockerfile's exec form.
type jsonList []string

func (l *jsonList) String() string { b, _ := json.Marshal(*l); return string(b) }
func (l *jsonList) Set(v string) error {
	return json.Unmarshal([]byte(v), (*[]string)(l))
}

func main() {
	var refs, layers, platforms, env, labels list
	var entrypoint, cmd jsonList
	flag.Var(&refs, "ref", "image reference (repeatable; at least one)")
	flag.Var(&layers, "layer", "host directory tree shared by every platform, put at / (repeatable, in order)")
	flag.Var(&platforms, "platform", "os/arch=DIR: a platform and its own tree, put at / (repeatable)")
	flag.Var(&env, "env", "KEY=VALUE in the image's environment (repeatable)")
	flag.Var(&labels, "label", "KEY=VALUE image label (repeatable)")
	flag.Var(&entrypoint, "entrypoint", `entrypoint as a JSON array, e.g. '["/pause"]'`)
	flag.Var(&cmd, "cmd", "command (arguments to the entrypoint) as a JSON array")
	user := flag.String("user", "", "user[:group] the image runs as (default root)")
	workdir := flag.String("workdir", "", "working directory")
	out := flag.String("out", "", "archive of every platform")
	outPlatform := flag.String("out-platform", "", "one docker-archive per platform: path with {os} and {arch}")
	flag.Parse()
	if len(refs) == 0 || len(platforms) == 0 || (*out == "" && *outPlatform == "") || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mkimage -ref REF -platform OS/ARCH=DIR [-layer DIR] [-entrypoint JSON] ... -out FILE | -out-platform PATTERN")
		os.Exit(2)
	}
	base := ociimage.Spec{Entrypoint: entrypoint, Cmd: cmd, Env: env, User: *user, WorkingDir: *workdir}
	if len(labels) > 0 {
		base.Labels = map[string]string{}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				fatal(fmt.Errorf("label %q: want KEY=VALUE", l))
			}
			base.Labels[k] = v
		}
	}
	for _, dir := range layers {
		base.Layers = append(base.Layers, ociimage.Layer{Dir: dir})
	}
	var imgs []v1.Image
	for _, p := range platforms {
		img, paths, err := build(base, p)
		if err != nil {
			fatal(err)
		}
		imgs = append(imgs, img)
		if *outPlatform != "" {
			path := strings.NewReplacer("{os}", paths[0], "{arch}", paths[1]).Replace(*outPlatform)
			if err := ociimage.WriteArchive(path, refs, img); err != nil {
				fatal(err)
			}
			fmt.Println(path)
		}
	}
	if *out != "" {
		if err := ociimage.WriteArchive(*out, refs, imgs...); err != nil {
			fatal(err)
		}
		fmt.Println(*out)
	}
}

// build makes the image of one "os/arch=DIR" platform on top of base's layers and returns it with
// its os and arch.
func build(base ociimage.Spec, platform string) (v1.Image, [2]string, error) {
	p, dir, ok := strings.Cut(platform, "=")
	osName, arch, ok2 := strings.Cut(p, "/")
	if !ok || !ok2 || dir == "" {
		return nil, [2]string{}, fmt.Errorf("platform %q: want OS/ARCH=DIR", platform)
	}
	s := base
	s.OS, s.Arch = osName, arch
	s.Layers = append(append([]ociimage.Layer(nil), base.Layers...), ociimage.Layer{Dir: dir})
	img, err := ociimage.Build(s)
	if err != nil {
		return nil, [2]string{}, fmt.Errorf("building %s: %w", p, err)
	}
	return img, [2]string{osName, arch}, nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mkimage:", err)
	os.Exit(1)
}
