package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/edgeplane/edgeplane/pkg/maps"
)

// checkRoot turns the usual reasons pins cannot be read into one actionable line.
func (e *env) checkRoot() error {
	dir := filepath.Join(e.root, maps.Dir)
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot read %s: permission denied: run as root (reading pinned BPF objects needs CAP_BPF or CAP_SYS_ADMIN)", dir)
	case err != nil || len(entries) == 0:
		return fmt.Errorf("no edgeplane maps under %s: is the agent running on this node? use --bpffs-root", e.root)
	}
	return nil
}

// pinError explains why the map called name could not be opened.
func (e *env) pinError(name string, err error) error {
	if rerr := e.checkRoot(); rerr != nil {
		return rerr
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("map %s is not pinned under %s: the agent on this node may be older than this edgeplanectl, or --bpffs-root is wrong", name, filepath.Join(e.root, maps.Dir))
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("opening map %s: permission denied: run as root (reading pinned BPF objects needs CAP_BPF or CAP_SYS_ADMIN)", name)
	}
	return err
}

// opener is the Open function of a pkg/maps package.
type opener[M any] func(root string) (M, error)

// open opens one typed map, explaining a failure.
func open[M any](e *env, name string, o opener[M]) (M, error) {
	m, err := o(e.root)
	if err != nil {
		return m, e.pinError(name, err)
	}
	return m, nil
}
