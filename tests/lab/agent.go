package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func (n *Node) agentBinary() string {
	if n.AgentBinary != "" {
		return n.AgentBinary
	}
	return filepath.Join(n.lab.cfg.EdgeplaneBin, "edgeplane-agent")
}

// RunAgentOnce runs the node's edgeplane-agent binary to completion in the node namespace with the
// harness's flags plus args (e.g. "--uninstall"), and returns its combined output.
func (n *Node) RunAgentOnce(ctx context.Context, args ...string) (string, error) {
	return n.Netns.Exec(ctx, n.agentBinary(), append(n.AgentArgs(), args...)...)
}

// PinnedLink is a link pinned under a node's bpffs: the kernel's IDs of the link and of the
// program it runs.
type PinnedLink struct {
	ID      link.ID
	Program ebpf.ProgramID
}

// PinnedLinks reads every link pinned under links/ of the node's bpffs, by pin name
// (underlay-ingress, overlay-egress, pod-<host veth>, ...).
func (n *Node) PinnedLinks() (map[string]PinnedLink, error) {
	dir := filepath.Join(n.BPFFS, "links")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("links of %s: %w", n.Name, err)
	}
	out := make(map[string]PinnedLink, len(entries))
	for _, e := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			return nil, fmt.Errorf("link %s of %s: %w", e.Name(), n.Name, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("link %s of %s: %w", e.Name(), n.Name, err)
		}
		out[e.Name()] = PinnedLink{ID: info.ID, Program: info.Program}
	}
	return out, nil
}

// PinnedMapIDs reads the kernel ID of every map pinned under maps/ of the node's bpffs, by name.
func (n *Node) PinnedMapIDs() (map[string]ebpf.MapID, error) {
	dir := filepath.Join(n.BPFFS, "maps")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("maps of %s: %w", n.Name, err)
	}
	out := make(map[string]ebpf.MapID, len(entries))
	for _, e := range entries {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("map %s of %s: %w", e.Name(), n.Name, err)
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			return nil, fmt.Errorf("map %s of %s: %w", e.Name(), n.Name, err)
		}
		id, ok := info.ID()
		if !ok {
			return nil, errors.New("the kernel reports no map IDs")
		}
		out[e.Name()] = id
	}
	return out, nil
}

// BPFFSEntries lists every file and directory under the node's bpffs root, relative to it, but
// for maps.debug and progs.debug, which the kernel's bpf_preload puts in every bpffs instance.
func (n *Node) BPFFSEntries() ([]string, error) {
	var out []string
	err := filepath.WalkDir(n.BPFFS, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name := d.Name(); filepath.Dir(path) == n.BPFFS && (name == "maps.debug" || name == "progs.debug") {
			return nil
		}
		if path != n.BPFFS {
			out = append(out, strings.TrimPrefix(path, n.BPFFS+"/"))
		}
		return nil
	})
	return out, err
}

// TCXPrograms lists the programs attached through tcx (either direction) to ifname in ns.
func (ns Netns) TCXPrograms(ifname string) ([]ebpf.ProgramID, error) {
	var out []ebpf.ProgramID
	err := InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("%s in %s: %w", ifname, ns, err)
		}
		for _, attach := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifi.Index, Attach: attach})
			if err != nil {
				return fmt.Errorf("querying tcx %v programs of %s in %s: %w", attach, ifname, ns, err)
			}
			for _, p := range res.Programs {
				out = append(out, p.ID)
			}
		}
		return nil
	})
	return out, err
}
