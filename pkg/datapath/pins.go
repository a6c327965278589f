package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/maps"
)

func removePin(pin string) error {
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing pin %s: %w", pin, err)
	}
	return nil
}

// Cleanup removes everything edgeplane pinned under root (uninstall, tests): links first, which
// detaches the programs from their interfaces, then programs and maps. The root directory itself
// is removed when it ends up empty, unless it is a mount point itself. A missing root is not an error.
func Cleanup(root string) error {
	var errs []error
	entries, err := os.ReadDir(filepath.Join(root, linksDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("listing links: %w", err))
	}
	for _, e := range entries {
		pin := filepath.Join(root, linksDir, e.Name())
		if name, dir, ok := podPin(e.Name()); ok && isProgramPin(pin) {
			if err := detachNetlinkTC(pin, name, dir); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if isProgramPin(pin) { // a NIC's or the device's netlink-TC attachment
			if err := detachNetlinkTCProgram(pin, 0, direction{}); err != nil {
				errs = append(errs, err)
			}
		}
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			if err := releaseLink(l, pin); err != nil {
				errs = append(errs, err)
			}
			l.Close()
			continue
		}
		if err := removePin(pin); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range []string{linksDir, progsDir, maps.Dir} {
		path := filepath.Join(root, dir)
		entries, err := os.ReadDir(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("listing %s: %w", path, err))
		}
		for _, e := range entries {
			if err := removePin(filepath.Join(path, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing %s: %w", path, err))
		}
	}
	if err := os.Remove(root); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EBUSY) {
		errs = append(errs, fmt.Errorf("removing %s: %w", root, err))
	}
	return errors.Join(errs...)
}

// podPin tells whether a pin under <root>/links is a pod attachment: its host veth and hook.
func podPin(pinName string) (string, direction, bool) {
	if name, ok := strings.CutPrefix(pinName, podLinkPrefix); ok {
		return name, ingress, true
	}
	if name, ok := strings.CutPrefix(pinName, podIngressLinkPrefix); ok {
		return name, egress, true
	}
	return "", direction{}, false
}

// tmpPin is where a pin is staged before being renamed over path. bpffs refuses names with a dot.
func tmpPin(path string) string {
	return filepath.Join(filepath.Dir(path), "tmp_"+filepath.Base(path))
}
