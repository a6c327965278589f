package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"text/tabwriter"
)

// print writes data as indented JSON, or calls table with an aligned writer.
func (e *env) print(data any, table func(w io.Writer)) error {
	if e.output == outputJSON {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(data); err != nil {
			return fmt.Errorf("encoding json: %w", err)
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', 0)
	table(tw)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing table: %w", err)
	}
	return nil
}

// row writes one tab-separated table row.
func row(w io.Writer, cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(w, strings.Join(s, "\t"))
}

// orDash shows an empty cell as "-" so columns stay readable and parseable.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ifNames resolves interface indexes in the CLI's network namespace (where the agent and the
// CNI plugin created the devices), once per index.
type ifNames struct{ cache map[uint32]string }

func newIfNames() *ifNames { return &ifNames{cache: make(map[uint32]string)} }

// name returns the interface's name, or "" when no interface has that index here.
func (n *ifNames) name(ifindex uint32) string {
	if ifindex == 0 {
		return ""
	}
	if name, ok := n.cache[ifindex]; ok {
		return name
	}
	var name string
	if iface, err := net.InterfaceByIndex(int(ifindex)); err == nil {
		name = iface.Name
	}
	n.cache[ifindex] = name
	return name
}

// ipFilter is --ip: an address or a CIDR; the zero value matches everything.
type ipFilter struct{ prefix netip.Prefix }

func (f *ipFilter) String() string {
	if !f.prefix.IsValid() {
		return ""
	}
	return f.prefix.String()
}

func (f *ipFilter) Set(s string) error {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("%q is not an IPv4 address or CIDR", s)
		}
		f.prefix = p.Masked()
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Unmap().Is4() {
		return fmt.Errorf("%q is not an IPv4 address or CIDR", s)
	}
	f.prefix = netip.PrefixFrom(a.Unmap(), 32)
	return nil
}

func (f *ipFilter) Type() string { return "ip|cidr" }

// addr reports whether a matches the filter.
func (f *ipFilter) addr(a netip.Addr) bool { return !f.prefix.IsValid() || f.prefix.Contains(a) }

// overlaps reports whether p overlaps the filter (a route matches an address it covers).
func (f *ipFilter) overlaps(p netip.Prefix) bool { return !f.prefix.IsValid() || f.prefix.Overlaps(p) }

const ipFlagUsage = "only entries matching this IPv4 address or CIDR"

func ifindexByName(name string) (uint32, error) {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return uint32(iface.Index), nil
}
