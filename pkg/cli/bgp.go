package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

// The bgp verb reads the report the agent's BGP speaker writes beside node.json (route mode,
// pkg/agent bgp.go); it is the one verb that reads no pin. Its JSON is the report as is
// (bgpstatus.Report).

func newBGPCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "bgp",
		Short: "Show this node's BGP speaker (route mode): sessions, advertised and received routes",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			r, err := bgpstatus.Read(e.runDir)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no BGP report %s: the agent has not run on this node since route mode came (or it was uninstalled)", bgpstatus.Path(e.runDir))
			}
			if err != nil {
				return err
			}
			return e.print(r, func(w io.Writer) { bgpTable(w, r, e.now()) })
		},
	}
}

func (e *env) now() time.Time {
	if e.opts.Now != nil {
		return e.opts.Now()
	}
	return time.Now()
}

func bgpTable(w io.Writer, r *bgpstatus.Report, now time.Time) {
	row(w, "node", r.Node+" (domain "+orDash(r.Domain)+")")
	row(w, "updated", r.Updated.UTC().Format(time.RFC3339)+" ("+roundAge(now.Sub(r.Updated))+" ago)")
	if r.Error != "" {
		row(w, "error", r.Error)
	}
	if !r.Speaking {
		row(w, "speaker", "not running (this node does not speak BGP: its domain is not in route mode, or the speaker selector leaves it out)")
		return
	}
	row(w, "speaker", fmt.Sprintf("router ID %s, AS %d, no listening port", r.RouterID, r.LocalASN))
	adv := make([]string, 0, len(r.Advertised))
	for _, a := range r.Advertised {
		adv = append(adv, a.Prefix.String()+" via "+nextHop(a.NextHop))
	}
	row(w, "advertised", orDash(strings.Join(adv, ", ")))
	if len(r.Peers) == 0 {
		row(w, "peers", "none")
		return
	}
	row(w)
	row(w, "PEER", "ASN", "STATE", "FOR", "HOLD", "ADVERTISED", "RECEIVED", "GRACEFUL-RESTART", "LAST ERROR")
	for _, p := range r.Peers {
		since := "-"
		if !p.Since.IsZero() {
			since = roundAge(now.Sub(p.Since))
		}
		hold := "-"
		if p.HoldTimeSeconds != 0 {
			hold = strconv.Itoa(int(p.HoldTimeSeconds)) + "s"
		}
		gr := "no"
		switch {
		case p.PeerRestarting:
			gr = "peer restarting"
		case p.GracefulRestart:
			gr = "yes"
		}
		row(w, p.Address, p.ASN, p.State, since, hold, p.Advertised, p.Received, gr, orDash(p.LastError))
	}
	var received int
	for _, p := range r.Peers {
		received += len(p.ReceivedRoutes)
	}
	if received == 0 {
		return
	}
	row(w)
	row(w, "RECEIVED FROM", "PREFIX", "NEXT HOP", "AS PATH", "STALE")
	for _, p := range r.Peers {
		for _, rt := range p.ReceivedRoutes {
			path := make([]string, 0, len(rt.ASPath))
			for _, as := range rt.ASPath {
				path = append(path, strconv.FormatUint(uint64(as), 10))
			}
			row(w, p.Address, rt.Prefix, nextHop(rt.NextHop), orDash(strings.Join(path, " ")), rt.Stale)
		}
	}
}

func nextHop(a netip.Addr) string {
	if !a.IsValid() {
		return "self"
	}
	return a.String()
}

// roundAge shows a duration to the second (to the minute past an hour).
func roundAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d >= time.Hour {
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}
