package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/events"
	"github.com/edgeplane/edgeplane/pkg/maps/nat"
)

// monitorEvent is one line of `monitor -o json` (schema in docs/cli.md).
type monitorEvent struct {
	Time       time.Time  `json:"time"`       // wall clock, converted from the event's CLOCK_MONOTONIC stamp
	Type       string     `json:"type"`       // "drop" | "trace"
	Reason     string     `json:"reason"`     // drop reason name; FORWARDED for trace
	ReasonCode uint8      `json:"reasonCode"` // bpf/lib/drop_reasons.h
	Verdict    string     `json:"verdict"`    // "drop" | "pass" | "redirect" | "action(<n>)"
	Direction  string     `json:"direction"`  // as in stats
	Ifindex    uint32     `json:"ifindex"`
	Interface  string     `json:"interface"` // "" when no such ifindex in this netns
	Len        uint32     `json:"len"`
	Tuple      *tupleInfo `json:"tuple"` // null: not IPv4 (or truncated)
	Inner      *tupleInfo `json:"inner"` // the IPv4 packet inside VXLAN; null otherwise
}

type tupleInfo struct {
	Proto    string `json:"proto"` // "tcp" | "udp" | "icmp" | "proto(<n>)"
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	SrcPort  uint16 `json:"srcPort"` // 0 unless TCP or UDP (and not a fragment)
	DstPort  uint16 `json:"dstPort"`
	Fragment bool   `json:"fragment"` // a non-first fragment: no ports
}

// Event types (--type).
const (
	typeDrop  = "drop"
	typeTrace = "trace"
	typeAll   = "all"
)

// monitorFilter is what --type, --reason, --ip and --port keep. The datapath emits every event of
// the subscribed types (and others' subscriptions), so all filtering happens here.
type monitorFilter struct {
	types   events.Flags
	reasons []dropreason.Reason // empty: any
	ip      ipFilter
	port    uint16 // 0: any
}

func (f *monitorFilter) match(ev events.Event) bool {
	switch ev.Type {
	case events.TypeDrop:
		if f.types&events.FlagDrops == 0 {
			return false
		}
	case events.TypeTrace:
		if f.types&events.FlagTrace == 0 {
			return false
		}
	}
	if len(f.reasons) > 0 && !slices.Contains(f.reasons, dropreason.Reason(ev.Reason)) {
		return false
	}
	var tuples []events.Tuple
	if ev.Flags&events.EventIPv4 != 0 {
		tuples = append(tuples, ev.Tuple)
	}
	if ev.Flags&events.EventInner != 0 {
		tuples = append(tuples, ev.Inner)
	}
	if f.ip.prefix.IsValid() && !slices.ContainsFunc(tuples, func(t events.Tuple) bool {
		return f.ip.addr(t.Saddr.Addr()) || f.ip.addr(t.Daddr.Addr())
	}) {
		return false
	}
	if f.port != 0 && !slices.ContainsFunc(tuples, func(t events.Tuple) bool {
		return t.HasPorts() && (t.Sport.Uint16() == f.port || t.Dport.Uint16() == f.port)
	}) {
		return false
	}
	return true
}

// parseReason accepts a reason name as the CLI prints it, in any case, with or without DROP_.
func parseReason(s string) (dropreason.Reason, error) {
	name := strings.TrimPrefix(strings.ToUpper(s), "DROP_")
	for r := dropreason.Reason(0); r < dropreason.Max; r++ {
		if r.String() == name {
			return r, nil
		}
	}
	var names []string
	for r := dropreason.Reason(1); r < dropreason.Max; r++ {
		if r != dropreason.ICMPSent {
			names = append(names, r.String())
		}
	}
	return 0, fmt.Errorf("unknown drop reason %q: one of %s", s, strings.Join(names, ", "))
}

func newMonitorCommand(e *env) *cobra.Command {
	var typ string
	var reasons []string
	var f monitorFilter
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Stream drop and trace events from the datapath until interrupted",
		Long: "monitor turns on event emission in the datapath (monitor_cfg_map), prints each event from the\n" +
			"ring buffer events_map as it arrives, and turns emission off again when it exits (Ctrl-C or\n" +
			"SIGTERM) unless another monitor still runs. Drops are cheap to watch; --type trace emits an\n" +
			"event for every forwarded packet and costs the datapath accordingly.",
		Args: noArgs,
		PreRunE: func(*cobra.Command, []string) error {
			switch typ {
			case typeDrop:
				f.types = events.FlagDrops
			case typeTrace:
				f.types = events.FlagTrace
			case typeAll:
				f.types = events.FlagDrops | events.FlagTrace
			default:
				return usagef("invalid --type %q: use drop, trace or all", typ)
			}
			for _, s := range reasons {
				r, err := parseReason(s)
				if err != nil {
					return usagef("%v", err)
				}
				f.reasons = append(f.reasons, r)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return e.monitor(ctx, &f, cmd.ErrOrStderr())
		},
	}
	flags := cmd.Flags()
	flags.StringVar(&typ, "type", typeDrop, "events to show: drop, trace (forwarded packets) or all")
	flags.StringSliceVar(&reasons, "reason", nil, "only these drop reasons (names as in stats, e.g. NO_ROUTE; repeatable)")
	flags.Var(&f.ip, "ip", "only events with this IPv4 address or CIDR as source or destination (outer or inner)")
	flags.Uint16Var(&f.port, "port", 0, "only TCP/UDP events with this source or destination port (outer or inner)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions([]string{typeDrop, typeTrace, typeAll}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// monitorPoll is how often the reader looks at the ring buffer without being woken: the datapath
// wakes it only for bursts (bpf/lib/events.h), so this bounds a lone event's latency, and how long
// an interrupt waits.
const monitorPoll = 100 * time.Millisecond

// monitor subscribes, streams matching events to e.out until ctx ends, and unsubscribes. Status
// lines (started, events lost, summary) go to status, so stdout carries only events.
func (e *env) monitor(ctx context.Context, f *monitorFilter, status io.Writer) error {
	reader, err := open(e, events.MapName, events.OpenReader)
	if err != nil {
		return err
	}
	defer reader.Close()
	sub, err := open(e, events.ConfigMapName, func(root string) (*events.Subscription, error) {
		return events.Subscribe(root, f.types)
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	lostAtStart, err := reader.Lost()
	if err != nil {
		return err
	}
	clock := newMonoClock()
	fmt.Fprintf(status, "monitoring %s events under %s (Ctrl-C to stop)\n", typeName(f.types), e.root)

	var shown, lost uint64
	for ctx.Err() == nil {
		reader.SetDeadline(time.Now().Add(monitorPoll))
		ev, err := reader.Read()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			n, err := reader.Lost()
			if err != nil {
				return err
			}
			if n-lostAtStart > lost {
				fmt.Fprintf(status, "%d events lost: the ring buffer was full\n", n-lostAtStart-lost)
				lost = n - lostAtStart
			}
			continue
		case err != nil:
			return fmt.Errorf("reading events: %w", err)
		}
		if !f.match(ev) {
			continue
		}
		if err := e.printEvent(e.eventInfo(ev, clock.wall(ev.TsNs))); err != nil {
			return err
		}
		shown++
	}
	fmt.Fprintf(status, "%d events shown, %d lost\n", shown, lost)
	return nil
}

func typeName(f events.Flags) string {
	switch f {
	case events.FlagDrops:
		return typeDrop
	case events.FlagTrace:
		return typeTrace
	}
	return "drop and trace"
}

// monoClock converts CLOCK_MONOTONIC stamps (bpf_ktime_get_ns) to wall-clock time.
type monoClock struct{ offset time.Duration }

func newMonoClock() monoClock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoClock{offset: time.Duration(time.Now().UnixNano() - ts.Nano())}
}

func (c monoClock) wall(ns uint64) time.Time { return time.Unix(0, int64(ns)+int64(c.offset)) }

func (e *env) eventInfo(ev events.Event, at time.Time) monitorEvent {
	reason := dropreason.Reason(ev.Reason)
	info := monitorEvent{
		Time: at, Type: ev.Type.String(), Reason: reason.String(), ReasonCode: ev.Reason,
		Verdict: verdictName(ev.Verdict), Direction: ev.Direction().String(),
		Ifindex: ev.Ifindex, Interface: e.ifNames.name(ev.Ifindex), Len: ev.Len,
	}
	if ev.Flags&events.EventIPv4 != 0 {
		info.Tuple = newTupleInfo(ev.Tuple, ev.Flags&events.EventFragment != 0)
	}
	if ev.Flags&events.EventInner != 0 {
		info.Inner = newTupleInfo(ev.Inner, ev.Flags&events.EventInnerFragment != 0)
	}
	return info
}

func newTupleInfo(t events.Tuple, fragment bool) *tupleInfo {
	info := &tupleInfo{Proto: nat.Proto(t.Proto).String(), Src: t.Saddr.String(), Dst: t.Daddr.String(), Fragment: fragment}
	if t.HasPorts() && !fragment {
		info.SrcPort, info.DstPort = t.Sport.Uint16(), t.Dport.Uint16()
	}
	return info
}

// TC actions (linux/pkt_cls.h).
func verdictName(v int32) string {
	switch v {
	case 0:
		return "pass"
	case 2:
		return "drop"
	case 7:
		return "redirect"
	}
	return fmt.Sprintf("action(%d)", v)
}

// printEvent writes one event as a JSON line or a text line, e.g.
//
//	12:00:01.123456 DROP NO_ROUTE pod-egress veth1a(ifindex 7) 10.244.1.2:5353 -> 10.244.9.9:53 udp len 74
func (e *env) printEvent(ev monitorEvent) error {
	if e.output == outputJSON {
		enc := json.NewEncoder(e.out)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(ev); err != nil {
			return fmt.Errorf("writing event: %w", err)
		}
		return nil
	}
	if _, err := io.WriteString(e.out, formatEvent(ev)+"\n"); err != nil {
		return fmt.Errorf("writing event: %w", err)
	}
	return nil
}

func formatEvent(ev monitorEvent) string {
	var b strings.Builder
	b.WriteString(ev.Time.Format("15:04:05.000000"))
	if ev.Type == typeTrace {
		fmt.Fprintf(&b, " TRACE %s", strings.ToUpper(ev.Verdict))
	} else {
		fmt.Fprintf(&b, " %s %s", strings.ToUpper(ev.Type), ev.Reason)
	}
	fmt.Fprintf(&b, " %s ", ev.Direction)
	if ev.Interface != "" {
		fmt.Fprintf(&b, "%s(ifindex %d)", ev.Interface, ev.Ifindex)
	} else {
		fmt.Fprintf(&b, "ifindex %d", ev.Ifindex)
	}
	switch {
	case ev.Tuple == nil:
		b.WriteString(" non-ipv4")
	default:
		b.WriteString(" " + formatTuple(ev.Tuple))
		if ev.Inner != nil {
			b.WriteString(" [" + formatTuple(ev.Inner) + "]")
		}
	}
	fmt.Fprintf(&b, " len %d", ev.Len)
	return b.String()
}

func formatTuple(t *tupleInfo) string {
	s := fmt.Sprintf("%s -> %s %s", t.Src, t.Dst, t.Proto)
	if t.SrcPort != 0 || t.DstPort != 0 {
		s = fmt.Sprintf("%s -> %s %s", hostPort(t.Src, t.SrcPort), hostPort(t.Dst, t.DstPort), t.Proto)
	}
	if t.Fragment {
		s += " fragment"
	}
	return s
}
