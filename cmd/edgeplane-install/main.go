// Command edgeplane-install is the edgeplane DaemonSet's init container: it installs the
// edgeplane CNI plugin and the conflist on the node, atomically and idempotently. See pkg/install.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/edgeplane/edgeplane/pkg/install"
)

// version is set at link time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	c := install.Config{}
	flag.StringVar(&c.Plugin, "cni-plugin", "/usr/local/bin/edgeplane-cni", "the edgeplane-cni binary to install")
	flag.StringVar(&c.BinDir, "cni-bin-dir", install.DefaultBinDir, "the node's CNI bin directory (as mounted)")
	flag.StringVar(&c.ConfDir, "cni-conf-dir", install.DefaultConfDir, "the node's CNI conf directory (as mounted)")
	flag.StringVar(&c.ConflistName, "conflist-name", install.DefaultConflistName, "file name of the conflist in --cni-conf-dir")
	flag.StringVar(&c.RunDir, "run-dir", install.DefaultRunDir, "the agent's --run-dir, where the plugin reads node.json")
	flag.IntVar(&c.MTU, "mtu", 0, "pod MTU written into the conflist (0: the agent's, from node.json)")
	flag.StringVar(&c.MissingPluginsFrom, "install-missing-plugins-from", "", "directory of reference plugins (host-local, portmap, bandwidth) copied where the node has none")
	validate := flag.Bool("validate-flags", false, "parse and validate the flags, then exit (0: valid)")
	printVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *printVersion {
		fmt.Println("edgeplane-install", version)
		return
	}
	if flag.NArg() > 0 {
		fail(2, fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	if *validate {
		if err := c.Validate(); err != nil {
			fail(2, err)
		}
		return
	}
	res, err := install.Run(c)
	for _, p := range res.Changed {
		fmt.Println("installed", p)
	}
	for _, p := range res.Kept {
		fmt.Println("up to date", p)
	}
	if err != nil {
		fail(1, err)
	}
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "edgeplane-install:", err)
	os.Exit(code)
}
