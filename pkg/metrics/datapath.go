package metrics

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
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
	packets, bytes, drops           *prometheus.Desc
	entries, capacity, attachedDesc *prometheus.Desc
	unreachable, noneReachable      *prometheus.Desc
}

// NewDatapathCollector collects from the pins under root.
func NewDatapathCollector(root string) *DatapathCollector {
	desc := func(name string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help(name), labels, nil)
	}
	return &DatapathCollector{
		root:          root,
		packets:       desc(DatapathPackets, "direction", "reason"),
		bytes:         desc(DatapathBytes, "direction", "reason"),
		drops:         desc(DatapathDrops, "direction", "reason"),
		entries:       desc(MapEntries, "map"),
		capacity:      desc(MapCapacity, "map"),
		attachedDesc:  desc(ProgramsAttached, "attach_point"),
		unreachable:   desc(ServiceUnreachable),
		noneReachable: desc(ServiceNoneReachable),
	}
}

// Describe implements prometheus.Collector.
func (c *DatapathCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.bytes, c.drops, c.entries, c.capacity, c.attachedDesc, c.unreachable, c.noneReachable} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *DatapathCollector) Collect(ch chan<- prometheus.Metric) {
	if _, err := os.Stat(filepath.Join(c.root, maps.Dir)); errors.Is(err, os.ErrNotExist) {
		return // not loaded yet
	}
	if err := c.collectCounters(ch); err != nil {
		ch <- prometheus.NewInvalidMetric(c.packets, err)
	}
	if err := c.collectMaps(ch); err != nil {
		ch <- prometheus.NewInvalidMetric(c.entries, err)
	}
	if err := c.collectAttachments(ch); err != nil {
		ch <- prometheus.NewInvalidMetric(c.attachedDesc, err)
	}
	if err := c.collectServices(ch); err != nil {
		ch <- prometheus.NewInvalidMetric(c.unreachable, err)
	}
}

// collectServices sums what the service reconciler wrote into lb_svc_map about backends left out
// as unreachable (lb_svc's unreachable), and counts the frontends left with none.
func (c *DatapathCollector) collectServices(ch chan<- prometheus.Metric) error {
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
	ch <- prometheus.MustNewConstMetric(c.unreachable, prometheus.GaugeValue, float64(unreachable))
	ch <- prometheus.MustNewConstMetric(c.noneReachable, prometheus.GaugeValue, float64(noneReachable))
	return nil
}

// collectCounters reports every (direction, known reason) pair, zero included, so that a drop's
// first occurrence is a counter increase rather than a new series; counters under a reason this
// binary does not know (a newer datapath) are reported as UNKNOWN_<n> once they are non-zero.
func (c *DatapathCollector) collectCounters(ch chan<- prometheus.Metric) error {
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
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(v.Packets), dir, reason.String())
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(v.Bytes), dir, reason.String())
		if isDrop(reason) {
			ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(v.Packets), dir, reason.String())
		}
	}
	return nil
}

// collectMaps reports the capacity of every pinned map and the entries of those that have a
// countable set of entries (hash, LRU, LPM; not arrays or ring buffers).
func (c *DatapathCollector) collectMaps(ch chan<- prometheus.Metric) error {
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
		errs = append(errs, c.collectMap(ch, pin.Name()))
	}
	return errors.Join(errs...)
}

func (c *DatapathCollector) collectMap(ch chan<- prometheus.Metric, name string) error {
	m, err := maps.OpenPinnedReadOnly(c.root, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil // replaced or removed under the listing
	}
	if err != nil {
		return err
	}
	defer m.Close()
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(m.MaxEntries()), name)
	if !maps.Countable(m.Type()) {
		return nil
	}
	n, err := maps.CountKeys(m)
	if err != nil {
		return fmt.Errorf("counting entries of %s: %w", name, err)
	}
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(n), name)
	return nil
}

func (c *DatapathCollector) collectAttachments(ch chan<- prometheus.Metric) error {
	a, err := datapath.ReadAttachments(c.root)
	for _, p := range slices.Concat(datapath.AttachPoints, datapath.OptionalAttachPoints) {
		ch <- prometheus.MustNewConstMetric(c.attachedDesc, prometheus.GaugeValue, boolValue(a.Attached[p]), attachPointLabel(p))
	}
	ch <- prometheus.MustNewConstMetric(c.attachedDesc, prometheus.GaugeValue, float64(a.PodLinks), AttachPod)
	return err
}

// attachPointLabel spells a link pin name (underlay-ingress) as a label value (underlay_ingress).
func attachPointLabel(p datapath.AttachPoint) string { return strings.ReplaceAll(string(p), "-", "_") }
