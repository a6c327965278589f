package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/spf13/cobra"
)

// Pin directories next to maps/ (pkg/datapath's layout, docs/architecture.md).
const (
	progsDir = "progs"
	linksDir = "links"
)

// progInfo is one pin under progs/ or links/ (JSON schema in docs/cli.md).
type progInfo struct {
	Pin string `json:"pin"`
	// Kind: "program" (a program pinned for others to attach), "tcx" (a pinned tcx link), "xdp"
	// (a pinned XDP link) or "tc" (a program pinned as the record of a netlink-TC attachment,
	// kernels without tcx).
	Kind      string      `json:"kind"`
	Attach    string      `json:"attach"` // "ingress" or "egress"; "" for programs
	Ifindex   uint32      `json:"ifindex"`
	Interface string      `json:"interface"` // "" when the ifindex is gone from this netns
	LinkID    uint32      `json:"linkID"`    // 0 unless kind is "tcx" or "xdp"
	Program   programInfo `json:"program"`
}

type programInfo struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Tag  string `json:"tag"`
	ID   uint32 `json:"id"`
}

func newProgsCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "progs",
		Short: "List pinned programs and links: where each program is attached",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			infos, err := e.listProgs()
			if err != nil {
				return err
			}
			return e.print(infos, func(w io.Writer) {
				row(w, "PIN", "KIND", "ATTACH", "IFINDEX", "INTERFACE", "PROGRAM", "TYPE", "PROG-ID", "TAG", "LINK-ID")
				for _, p := range infos {
					ifindex, linkID := "-", "-"
					if p.Ifindex != 0 {
						ifindex = fmt.Sprint(p.Ifindex)
					}
					if p.LinkID != 0 {
						linkID = fmt.Sprint(p.LinkID)
					}
					row(w, p.Pin, p.Kind, orDash(p.Attach), ifindex, orDash(p.Interface),
						p.Program.Name, p.Program.Type, p.Program.ID, p.Program.Tag, linkID)
				}
			})
		},
	}
}

func (e *env) listProgs() ([]progInfo, error) {
	if err := e.checkRoot(); err != nil {
		return nil, err
	}
	infos := []progInfo{}
	for _, dir := range []string{progsDir, linksDir} {
		entries, err := os.ReadDir(filepath.Join(e.root, dir))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", filepath.Join(e.root, dir), err)
		}
		for _, de := range entries {
			info, err := e.readPin(dir, de.Name())
			if err != nil {
				return nil, err
			}
			infos = append(infos, info)
		}
	}
	slices.SortStableFunc(infos, func(a, b progInfo) int { return strings.Compare(a.Pin, b.Pin) })
	return infos, nil
}

// readPin describes one pin: a link (tcx) or a program, which under links/ records a netlink-TC
// attachment that the pin's name describes.
func (e *env) readPin(dir, name string) (progInfo, error) {
	rel := filepath.Join(dir, name)
	path := filepath.Join(e.root, rel)
	out := progInfo{Pin: rel}
	if dir == linksDir {
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			defer l.Close()
			return e.describeLink(out, l)
		}
	}
	prog, err := ebpf.LoadPinnedProgram(path, nil)
	if err != nil {
		return out, fmt.Errorf("opening %s: %w", path, err)
	}
	defer prog.Close()
	if out.Program, err = describeProgram(prog); err != nil {
		return out, fmt.Errorf("reading %s: %w", path, err)
	}
	out.Kind = "program"
	if dir == linksDir {
		out.Kind = "tc"
		out.Attach, out.Ifindex = e.tcTarget(name)
		out.Interface = e.ifNames.name(out.Ifindex)
	}
	return out, nil
}

func (e *env) describeLink(out progInfo, l link.Link) (progInfo, error) {
	info, err := l.Info()
	if err != nil {
		return out, fmt.Errorf("reading link %s: %w", out.Pin, err)
	}
	out.LinkID = uint32(info.ID)
	out.Kind = fmt.Sprintf("link-type-%d", info.Type)
	switch {
	case info.TCX() != nil:
		out.Kind = "tcx"
		out.Ifindex = info.TCX().Ifindex
		out.Attach = attachDirection(ebpf.AttachType(info.TCX().AttachType))
	case info.XDP() != nil:
		out.Kind = "xdp"
		out.Ifindex = info.XDP().Ifindex
		out.Attach = "ingress"
	}
	out.Interface = e.ifNames.name(out.Ifindex)
	prog, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return out, fmt.Errorf("opening program %d of link %s: %w", info.Program, out.Pin, err)
	}
	defer prog.Close()
	if out.Program, err = describeProgram(prog); err != nil {
		return out, fmt.Errorf("reading program of link %s: %w", out.Pin, err)
	}
	return out, nil
}

func attachDirection(t ebpf.AttachType) string {
	switch t {
	case ebpf.AttachTCXIngress:
		return "ingress"
	case ebpf.AttachTCXEgress:
		return "egress"
	}
	return strings.ToLower(t.String())
}

// tcTarget derives where a netlink-TC attachment is from its pin's name: pod-<veth> on the veth's
// ingress; underlay-* and overlay-* on the devices node_cfg_map names.
func (e *env) tcTarget(name string) (string, uint32) {
	attach := "ingress"
	if strings.HasSuffix(name, "-egress") {
		attach = "egress"
	}
	if veth, ok := strings.CutPrefix(name, "pod-"); ok {
		if ifindex, err := ifindexByName(veth); err == nil {
			return attach, ifindex
		}
		return attach, 0
	}
	cfg, err := e.readNodeCfg()
	if err != nil {
		return attach, 0
	}
	if strings.HasPrefix(name, "underlay-") {
		return attach, cfg.UnderlayIfindex
	}
	return attach, cfg.VxlanIfindex
}

func describeProgram(p *ebpf.Program) (programInfo, error) {
	info, err := p.Info()
	if err != nil {
		return programInfo{}, err
	}
	out := programInfo{Name: info.Name, Type: progTypeName(info.Type), Tag: info.Tag}
	if id, ok := info.ID(); ok {
		out.ID = uint32(id)
	}
	return out, nil
}

// progTypeName spells program types as bpftool does.
func progTypeName(t ebpf.ProgramType) string {
	switch t {
	case ebpf.SchedCLS:
		return "sched_cls"
	case ebpf.XDP:
		return "xdp"
	}
	return strings.ToLower(t.String())
}
