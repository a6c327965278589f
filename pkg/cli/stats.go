package cli

import (
	"cmp"
	"io"
	"maps"
	"slices"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
)

// statInfo is one non-zero counter of metrics_map, summed over CPUs (JSON schema in docs/cli.md).
type statInfo struct {
	Direction  string `json:"direction"`  // pod-egress, overlay-in, overlay-out, node-in, node-out, node-xdp, pod-ingress
	Reason     string `json:"reason"`     // FORWARDED, ICMP_SENT or a drop reason (pkg/datapath)
	ReasonCode uint32 `json:"reasonCode"` // the number in bpf/lib/drop_reasons.h
	Drop       bool   `json:"drop"`       // false for FORWARDED and ICMP_SENT
	Packets    uint64 `json:"packets"`
	Bytes      uint64 `json:"bytes"`
}

func newStatsCommand(e *env) *cobra.Command {
	var dropsOnly bool
	cmd := &cobra.Command{
		Use:     "stats",
		Aliases: []string{"metrics", "drops"},
		Short:   "Show packet and byte counters by direction and reason",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			stats, err := e.listStats(dropsOnly)
			if err != nil {
				return err
			}
			return e.print(stats, func(w io.Writer) {
				row(w, "DIRECTION", "REASON", "PACKETS", "BYTES")
				for _, s := range stats {
					row(w, s.Direction, s.Reason, s.Packets, s.Bytes)
				}
			})
		},
	}
	cmd.Flags().BoolVar(&dropsOnly, "drops-only", false, "only drop reasons (not FORWARDED or ICMP_SENT)")
	return cmd
}

func (e *env) listStats(dropsOnly bool) ([]statInfo, error) {
	m, err := open(e, metricsmap.MapName, metricsmap.Open)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	totals, err := m.Totals()
	if err != nil {
		return nil, err
	}
	keys := slices.SortedFunc(maps.Keys(totals), func(a, b metricsmap.Key) int {
		return cmp.Or(cmp.Compare(a.Dir, b.Dir), cmp.Compare(a.Reason, b.Reason))
	})
	out := []statInfo{}
	for _, k := range keys {
		reason := dropreason.Reason(k.Reason)
		drop := reason != dropreason.Forwarded && reason != dropreason.ICMPSent
		if dropsOnly && !drop {
			continue
		}
		t := totals[k]
		out = append(out, statInfo{
			Direction: k.Dir.String(), Reason: reason.String(), ReasonCode: k.Reason, Drop: drop,
			Packets: t.Packets, Bytes: t.Bytes,
		})
	}
	return out, nil
}
