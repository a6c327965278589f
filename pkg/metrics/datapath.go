package metrics

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/pkg/metrics/promtext"
)

// AttachPod is the attach_point label of the pod attachments' count.
const AttachPod = "pod"

// directions are the direction label values, the C enum metric_dir's names in lower case.
var directions = map[metricsmap.Dir]string{
	metricsmap.DirPodEgress:  "pod_egress",
	metricsmap.DirOverlayIn:  "overlay_in",
	metricsmap.DirOverlayOut: "overlay_out",
	metricsmap.DirNodeIn:     "node_in",
	metricsmap.DirNodeOut:    "node_out",
	metricsmap.DirNodeXDP:    "node_xdp",
	metricsmap.DirPodIngress: "pod_ingress",
}

func direction(d metricsmap.Dir) string {
	if s, ok := directions[d]; ok {
		return s
	}
	return strings.ReplaceAll(d.String(), "-", "_") // dir(7): a newer datapath's direction
}

// isDrop tells whether a reason counts a dropped packet; FORWARDED and ICMP_SENT do not.
func isDrop(r dropreason.Reason) bool {
	return r != dropreason.Forwarded && r != dropreason.ICMPSent
}

// DatapathCollector reads the pinned maps and links under a bpffs root at every scrape. Before
// the agent has loaded the datapath there is nothing pinned and it reports nothing.
type DatapathCollector struct {
	root                            string
	packets, bytes, drops           *promtext.Desc
	entries, capacity, attachedDesc *promtext.Desc
	unreachable, noneReachable      *promtext.Desc
}

// NewDatapathCollector collects from the pins under root.
func NewDatapathCollector(root string) *DatapathCollector {
	return &DatapathCollector{
		root:          root,
		packets:       desc(DatapathPackets),
		bytes:         desc(DatapathBytes),
		drops:         desc(DatapathDrops),
		entries:       desc(MapEntries),
		capacity:      desc(MapCapacity),
		attachedDesc:  desc(ProgramsAttached),
		unreachable:   desc(ServiceUnreachable),
		noneReachable: desc(ServiceNoneReachable),
	}
}

// Descs are the families the collector reports.
func (c *DatapathCollector) Descs() []*promtext.Desc {
	return []*promtext.Desc{c.packets, c.bytes, c.drops, c.entries, c.capacity, c.attachedDesc, c.unreachable, c.noneReachable}
}

// Collect implements promtext.Collector.
func (c *DatapathCollector) Collect(s *promtext.Scrape) {
	if _, err := os.Stat(filepath.Join(c.root, maps.Dir)); errors.Is(err, os.ErrNotExist) {
		return // not loaded yet
	}
	for _, collect := range []func(*promtext.Scrape) error{c.collectCounters, c.collectMaps, c.collectAttachments, c.collectServices} {
		if err := collect(s); err != nil {
			s.Fail(err)
		}
	}
}

// collectServices sums what the service reconciler wrote into lb_svc_map about backends left out
// as unreachable (lb_svc's unreachable), and counts the frontends left with none.
func (c *DatapathCollector) collectServices(s *promtext.Scrape) error {
	m, err := lb.OpenSvcReadOnly(c.root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer m.Close()
	var unreachable, noneReachable int
	err = m.IterateBatch(func(_ lb.SvcKey, v lb.Svc) bool {
		unreachable += int(v.Unreachable)
		if v.Unreachable > 0 && v.Count == 0 {
			noneReachable++
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("reading %s: %w", lb.SvcMapName, err)
	}
	s.Add(c.unreachable, float64(unreachable))
	s.Add(c.noneReachable, float64(noneReachable))
	return nil
}

// collectCounters reports every (direction, known reason) pair, zero included, so that a drop's
// first occurrence is a counter increase rather than a new series; counters under a reason this
// binary does not know (a newer datapath) are reported as UNKNOWN_<n> once they are non-zero.
func (c *DatapathCollector) collectCounters(s *promtext.Scrape) error {
	m, err := metricsmap.Open(c.root)
	if err != nil {
		return err
	}
	defer m.Close()
	totals, err := m.Totals()
	if err != nil {
		return err
	}
	for d := range directions {
		for r := dropreason.Forwarded; r < dropreason.Max; r++ {
			k := metricsmap.Key{Dir: d, Reason: uint32(r)}
			if _, ok := totals[k]; !ok {
				totals[k] = metricsmap.Metric{}
			}
		}
	}
	for k, v := range totals {
		dir, reason := direction(k.Dir), dropreason.Reason(k.Reason)
		s.Add(c.packets, float64(v.Packets), dir, reason.String())
		s.Add(c.bytes, float64(v.Bytes), dir, reason.String())
		if isDrop(reason) {
			s.Add(c.drops, float64(v.Packets), dir, reason.String())
		}
	}
	return nil
}

// collectMaps reports the capacity of every pinned map and the entries of those that have a
// countable set of entries (hash, LRU, LPM; not arrays or ring buffers).
func (c *DatapathCollector) collectMaps(s *promtext.Scrape) error {
	dir := filepath.Join(c.root, maps.Dir)
	pins, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	var errs []error
	for _, pin := range pins {
		if strings.HasPrefix(pin.Name(), "tmp_") { // a pin being replaced (pkg/datapath)
			continue
		}
		errs = append(errs, c.collectMap(s, pin.Name()))
	}
	return errors.Join(errs...)
}

func (c *DatapathCollector) collectMap(s *promtext.Scrape, name string) error {
	m, err := maps.OpenPinnedReadOnly(c.root, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil // replaced or removed under the listing
	}
	if err != nil {
		return err
	}
	defer m.Close()
	s.Add(c.capacity, float64(m.MaxEntries()), name)
	if !maps.Countable(m.Type()) {
		return nil
	}
	n, err := maps.CountKeys(m)
	if err != nil {
		return fmt.Errorf("counting entries of %s: %w", name, err)
	}
	s.Add(c.entries, float64(n), name)
	return nil
}

func (c *DatapathCollector) collectAttachments(s *promtext.Scrape) error {
	a, err := datapath.ReadAttachments(c.root)
	for _, p := range slices.Concat(datapath.AttachPoints, datapath.OptionalAttachPoints) {
		s.Add(c.attachedDesc, boolValue(a.Attached[p]), attachPointLabel(p))
	}
	s.Add(c.attachedDesc, float64(a.PodLinks), AttachPod)
	return err
}

// attachPointLabel spells a link pin name (underlay-ingress) as a label value (underlay_ingress).
func attachPointLabel(p datapath.AttachPoint) string { return strings.ReplaceAll(string(p), "-", "_") }
