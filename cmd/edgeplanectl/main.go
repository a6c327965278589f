// Command edgeplanectl inspects this node's edgeplane datapath from its pinned BPF objects; it
// needs no running agent. See pkg/cli and docs/cli.md.
package main

import (
	"os"
	"runtime/debug"

	"github.com/edgeplane/edgeplane/pkg/cli"
)

// version is set at link time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, cli.Options{Version: version, Commit: vcsRevision()}))
}

func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}
