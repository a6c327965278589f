package main

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

var (
	blue   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	orange = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	green  = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	red    = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	purple = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	grey   = color.RGBA{R: 0x80, G: 0x80, B: 0x80, A: 0xff}
)

// whiskered is points with asymmetric error bars in X or Y (min-max around a median).
type whiskered struct {
	plotter.XYs
	plotter.XErrors
	plotter.YErrors
}

// ratioRow is one row of a ratio chart: edgeplane's paired ratios for one metric against each
// baseline.
type ratioRow struct {
	label string
	// vs the group's baseline (Flannel), vs the underlay, vs the veth floor (pods on plain veth
	// pairs, kernel routing only): median, min, max; zero when absent.
	base, underlay, floor [3]float64
}

// ratioRows collects, for one machine, edgeplane's ratios in the cross-node groups.
func ratioRows(m *machineResults) []ratioRow {
	var rows []ratioRow
	for _, g := range []string{"cross-node", "cross-node-clusterip"} {
		for _, r := range m.byGroup[g] {
			if r.Path != "edgeplane" || r.Ratio == 0 {
				continue
			}
			l := metricLabel(r.Metric, r.Unit)
			if g == "cross-node-clusterip" {
				l += " via ClusterIP"
			}
			if r.Better == "lower" {
				l += " (lower is better)"
			}
			rows = append(rows, ratioRow{label: l,
				base:     [3]float64{r.Ratio, r.RatioMin, r.RatioMax},
				underlay: [3]float64{r.UnderlayRatio, r.UnderlayRatioMin, r.UnderlayRatioMax},
				floor:    [3]float64{r.VethFloorRatio, r.VethFloorRatioMin, r.VethFloorRatioMax}})
		}
	}
	return rows
}

// RatioChart draws edgeplane's ratios per metric against Flannel and the underlay, medians with
// min-max whiskers, for one machine; nil when the machine has none.
func RatioChart(m *machineResults) ([]byte, error) {
	return ratioChart(ratioRows(m), fmt.Sprintf("edgeplane cross-node, paired ratios (median, min-max) - %s", m.machine.ID),
		"ratio (edgeplane / baseline); right of 1 is better unless marked lower is better", "vs Flannel")
}

// routeRows collects, for one machine, route mode's ratios (path edgeplane-route): against
// edgeplane's VXLAN and the underlay on one L2 segment, and against the underlay through the
// gateway.
func routeRows(m *machineResults) []ratioRow {
	var rows []ratioRow
	for _, g := range []string{"route-mode", "route-mode-gateway"} {
		for _, r := range m.byGroup[g] {
			if r.Path != "edgeplane-route" || r.UnderlayRatio == 0 && r.Ratio == 0 {
				continue
			}
			row := ratioRow{label: metricLabel(r.Metric, r.Unit),
				underlay: [3]float64{r.UnderlayRatio, r.UnderlayRatioMin, r.UnderlayRatioMax},
				floor:    [3]float64{r.VethFloorRatio, r.VethFloorRatioMin, r.VethFloorRatioMax}}
			if r.Baseline == "edgeplane" {
				row.base = [3]float64{r.Ratio, r.RatioMin, r.RatioMax}
			}
			if g == "route-mode-gateway" {
				row.label += " across the gateway"
			}
			if r.Better == "lower" {
				row.label += " (lower is better)"
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// RouteChart draws route mode's ratios per metric against edgeplane's VXLAN and the underlay,
// medians with min-max whiskers, for one machine; nil when the machine has no route-mode results.
func RouteChart(m *machineResults) ([]byte, error) {
	return ratioChart(routeRows(m), fmt.Sprintf("edgeplane route mode, paired ratios (median, min-max) - %s", m.machine.ID),
		"ratio (edgeplane-route / baseline); right of 1 is better unless marked lower is better", "vs edgeplane VXLAN")
}

// ratioChart draws rows' ratios against their group's baseline (named baseName in the legend)
// the underlay and, where measured, the veth floor; nil without rows.
func ratioChart(rows []ratioRow, title, xLabel, baseName string) ([]byte, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	slices.Reverse(rows) // NominalY puts the first name at the bottom
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r.label
	}
	p.NominalY(names...)
	p.Add(plotter.NewGrid())
	one, err := plotter.NewLine(plotter.XYs{{X: 1, Y: -0.5}, {X: 1, Y: float64(len(rows)) - 0.5}})
	if err != nil {
		return nil, fmt.Errorf("drawing the 1x line: %w", err)
	}
	one.Color, one.Dashes = grey, []vg.Length{vg.Points(3), vg.Points(3)}
	p.Add(one)
	for _, s := range []struct {
		name  string
		pick  func(ratioRow) [3]float64
		shift float64
		c     color.Color
		shape draw.GlyphDrawer
	}{
		{baseName, func(r ratioRow) [3]float64 { return r.base }, 0.12, blue, draw.CircleGlyph{}},
		{"vs underlay", func(r ratioRow) [3]float64 { return r.underlay }, -0.12, orange, draw.TriangleGlyph{}},
		{"vs veth floor", func(r ratioRow) [3]float64 { return r.floor }, 0, green, draw.SquareGlyph{}},
	} {
		var w whiskered
		for i, r := range rows {
			v := s.pick(r)
			if v[0] == 0 {
				continue
			}
			lo, hi := v[1], v[2]
			if lo == 0 && hi == 0 {
				lo, hi = v[0], v[0]
			}
			w.XYs = append(w.XYs, plotter.XY{X: v[0], Y: float64(i) + s.shift})
			w.XErrors = append(w.XErrors, struct{ Low, High float64 }{v[0] - lo, hi - v[0]})
		}
		if len(w.XYs) == 0 {
			continue
		}
		bars, err := plotter.NewXErrorBars(w)
		if err != nil {
			return nil, fmt.Errorf("drawing whiskers: %w", err)
		}
		bars.Color = s.c
		pts, err := plotter.NewScatter(w.XYs)
		if err != nil {
			return nil, fmt.Errorf("drawing points: %w", err)
		}
		pts.GlyphStyle = draw.GlyphStyle{Color: s.c, Radius: vg.Points(3), Shape: s.shape}
		p.Add(bars, pts)
		p.Legend.Add(s.name, pts)
	}
	// Room on the right for the legend, and 1x always in view.
	p.X.Min, p.X.Max = min(p.X.Min, 0.9), max(p.X.Max, 1.1)
	p.X.Max += 0.3 * (p.X.Max - p.X.Min)
	p.Legend.Top = true
	// A margin on the left: the tick labels' measured width falls a little short of the drawn one.
	return render(func(c draw.Canvas) { p.Draw(draw.Crop(c, 3*vg.Millimeter, 0, 0, 0)) }, 8*vg.Inch, vg.Length(1.2+0.32*float64(len(rows)))*vg.Inch)
}

// servicesPanels are the Services metrics drawn against the number of Services.
var servicesPanels = []struct {
	part, metric, title string
	logY                bool
}{
	{"clusterip", "tcp_rr", "ClusterIP TCP RR (trans/s)", false},
	{"clusterip", "connect_rate", "ClusterIP connect rate (conn/s)", false},
	{"nodeport-drop", "pps", "Isolated NodePort drop (pkt/s, one CPU)", true},
	{"nodeport-forward", "pps", "NodePort forward to a local pod (pkt/s)", false},
}

// ServicesChart draws the Services benchmark of one machine: each path's median (min-max
// whiskers) against the number of Services programmed, one panel per metric; nil without data.
func ServicesChart(m *machineResults) ([]byte, error) {
	type pt struct {
		n           int
		med, lo, hi float64
	}
	var plots []*plot.Plot
	for _, panel := range servicesPanels {
		series := map[string][]pt{}
		var paths []string
		for _, g := range m.groups {
			sm := stepGroup.FindStringSubmatch(g)
			if sm == nil || strings.TrimPrefix(g, sm[0]) != panel.part {
				continue
			}
			n, _ := strconv.Atoi(sm[1])
			for _, r := range m.byGroup[g] {
				if r.Metric != panel.metric || r.Median <= 0 {
					continue
				}
				lo, hi := r.Median, r.Median
				if len(r.Samples) > 0 {
					lo, hi = slices.Min(r.Samples), slices.Max(r.Samples)
				}
				if !slices.Contains(paths, r.Path) {
					paths = append(paths, r.Path)
				}
				series[r.Path] = append(series[r.Path], pt{n, r.Median, lo, hi})
			}
		}
		if len(paths) == 0 {
			continue
		}
		p := plot.New()
		p.Title.Text = panel.title
		p.X.Label.Text = "Services programmed"
		p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
		if panel.logY {
			p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
		}
		p.Add(plotter.NewGrid())
		colors := []color.Color{blue, orange, green, red, purple}
		for i, path := range paths {
			pts := series[path]
			slices.SortFunc(pts, func(a, b pt) int { return a.n - b.n })
			var w whiskered
			for _, q := range pts {
				w.XYs = append(w.XYs, plotter.XY{X: float64(q.n), Y: q.med})
				w.YErrors = append(w.YErrors, struct{ Low, High float64 }{q.med - q.lo, q.hi - q.med})
			}
			line, points, err := plotter.NewLinePoints(w.XYs)
			if err != nil {
				return nil, fmt.Errorf("drawing %s: %w", path, err)
			}
			c := colors[i%len(colors)]
			line.Color, points.Color = c, c
			if strings.HasPrefix(path, "kube-proxy") {
				line.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
			}
			bars, err := plotter.NewYErrorBars(w)
			if err != nil {
				return nil, fmt.Errorf("drawing whiskers of %s: %w", path, err)
			}
			bars.Color = c
			p.Add(line, points, bars)
			p.Legend.Add(path, line, points)
		}
		// Log axes need a positive range, also around a single step or a flat line; then room at
		// the top for the legend.
		p.X.Min, p.X.Max = p.X.Min/2, p.X.Max*2
		if panel.logY {
			p.Y.Min, p.Y.Max = p.Y.Min/2, p.Y.Max*2
			p.Y.Max *= math.Pow(p.Y.Max/p.Y.Min, 0.15*float64(len(paths)))
		} else {
			p.Y.Min = 0
			p.Y.Max *= 1 + 0.12*float64(len(paths))
		}
		p.Legend.Top, p.Legend.Left = true, true
		plots = append(plots, p)
	}
	if len(plots) == 0 {
		return nil, nil
	}
	cols := 2
	rowsN := (len(plots) + cols - 1) / cols
	tiles := draw.Tiles{Rows: rowsN, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 8, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2}
	title := fmt.Sprintf("Services against kube-proxy (iptables), medians with min-max - %s", m.machine.ID)
	return render(func(c draw.Canvas) {
		f := plot.DefaultFont
		f.Size = vg.Points(13)
		c.FillText(draw.TextStyle{Color: color.Black, Font: f, Handler: plot.DefaultTextHandler,
			XAlign: draw.XCenter, YAlign: draw.YTop}, vg.Point{X: c.Center().X, Y: c.Max.Y - vg.Millimeter}, title)
		for i, p := range plots {
			p.Draw(tiles.At(c, i%cols, i/cols))
		}
	}, 10*vg.Inch, vg.Length(3.6*float64(rowsN))*vg.Inch+vg.Millimeter*8)
}

// render draws onto an SVG canvas of w x h and returns the document.
func render(drawFn func(draw.Canvas), w, h vg.Length) ([]byte, error) {
	c := vgsvg.New(w, h)
	drawFn(draw.New(c))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("writing SVG: %w", err)
	}
	return buf.Bytes(), nil
}
