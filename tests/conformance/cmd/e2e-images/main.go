// Command e2e-images writes the e2e test images (package images) as tarballs and prints their
// paths, one a line; scripts/build-e2e-images.sh gathers its inputs and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/edgeplane/edgeplane/tests/conformance/images"
)

type rootfsFlag map[string]string

func (r rootfsFlag) String() string { return fmt.Sprint(map[string]string(r)) }
func (r rootfsFlag) Set(v string) error {
	name, dir, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want name=dir, got %q", v)
	}
	r[name] = dir
	return nil
}

func main() {
	in := images.Inputs{Rootfs: rootfsFlag{}}
	cache := flag.String("cache", "/var/cache/edgeplane", "cache directory")
	flag.StringVar(&in.K8sVersion, "k8s-version", "v1.37.2", "Kubernetes version")
	flag.StringVar(&in.K8sSource, "k8s-src", "", "the k8s.io/kubernetes module directory")
	flag.StringVar(&in.K8sBin, "k8s-bin", "", "directory holding agnhost and regression-issue-74839")
	flag.StringVar(&in.CoreDNSBin, "coredns", "", "the coredns binary")
	flag.StringVar(&in.PauseBin, "pause", "", "the pause binary")
	flag.Var(rootfsFlag(in.Rootfs), "rootfs", "name=dir of an unpacked Debian userland (repeat)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tarballs, err := images.Build(ctx, *cache, in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e-images:", err)
		os.Exit(1)
	}
	for _, t := range tarballs {
		fmt.Println(t.Path)
	}
}
