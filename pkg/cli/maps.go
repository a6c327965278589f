package cli

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/maps"
)

// mapInfo is one pinned map (JSON schema in docs/cli.md).
type mapInfo struct {
	Name        string   `json:"name"`
	Pin         string   `json:"pin"`
	Type        string   `json:"type"`
	Flags       uint32   `json:"flags"`
	KeySize     uint32   `json:"keySize"`
	ValueSize   uint32   `json:"valueSize"`
	MaxEntries  uint32   `json:"maxEntries"`
	Entries     *int     `json:"entries"`     // null for arrays: every slot always exists
	FillPercent *float64 `json:"fillPercent"` // entries / maxEntries * 100, two decimals; null with entries
	ID          uint32   `json:"id"`
}

func newMapsCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "maps",
		Short: "List the pinned maps with their type, sizes and how full they are",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			infos, err := e.listMaps()
			if err != nil {
				return err
			}
			return e.print(infos, func(w io.Writer) {
				row(w, "NAME", "TYPE", "KEY", "VALUE", "MAX", "ENTRIES", "FILL", "ID")
				for _, m := range infos {
					entries, fill := "-", "-"
					if m.Entries != nil {
						entries, fill = fmt.Sprint(*m.Entries), fillCell(*m.FillPercent)
					}
					row(w, m.Name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, entries, fill, m.ID)
				}
			})
		},
	}
}

func (e *env) listMaps() ([]mapInfo, error) {
	if err := e.checkRoot(); err != nil {
		return nil, err
	}
	dir := filepath.Join(e.root, maps.Dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	infos := []mapInfo{}
	for _, de := range entries {
		info, err := readMap(filepath.Join(dir, de.Name()))
		if err != nil {
			return nil, err
		}
		info.Name, info.Pin = de.Name(), filepath.Join(maps.Dir, de.Name())
		infos = append(infos, info)
	}
	slices.SortFunc(infos, func(a, b mapInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, nil
}

// fillCell keeps a few entries in a big map from reading as empty.
func fillCell(percent float64) string {
	if percent > 0 && percent < 0.1 {
		return "<0.1%"
	}
	return fmt.Sprintf("%.1f%%", percent)
}

func readMap(pin string) (mapInfo, error) {
	m, err := ebpf.LoadPinnedMap(pin, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return mapInfo{}, fmt.Errorf("opening %s: %w", pin, err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return mapInfo{}, fmt.Errorf("reading info of %s: %w", pin, err)
	}
	out := mapInfo{
		Type: mapTypeName(info.Type), Flags: info.Flags,
		KeySize: info.KeySize, ValueSize: info.ValueSize, MaxEntries: info.MaxEntries,
	}
	if id, ok := info.ID(); ok {
		out.ID = uint32(id)
	}
	if maps.Countable(info.Type) { // arrays always hold every slot; a ring buffer has no keys
		n, err := maps.CountKeys(m)
		if err != nil {
			return mapInfo{}, fmt.Errorf("counting entries of %s: %w", pin, err)
		}
		fill := 0.0
		if info.MaxEntries > 0 {
			fill = math.Round(float64(n)*100*100/float64(info.MaxEntries)) / 100
		}
		out.Entries, out.FillPercent = &n, &fill
	}
	return out, nil
}

// mapTypeName spells map types as bpftool does.
func mapTypeName(t ebpf.MapType) string {
	switch t {
	case ebpf.Hash:
		return "hash"
	case ebpf.Array:
		return "array"
	case ebpf.PerCPUHash:
		return "percpu_hash"
	case ebpf.PerCPUArray:
		return "percpu_array"
	case ebpf.LRUHash:
		return "lru_hash"
	case ebpf.LRUCPUHash:
		return "lru_percpu_hash"
	case ebpf.LPMTrie:
		return "lpm_trie"
	case ebpf.RingBuf:
		return "ringbuf"
	}
	return strings.ToLower(t.String())
}
