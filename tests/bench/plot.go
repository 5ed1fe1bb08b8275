package main

// The figures, drawn with gonum.org/v1/plot. The small helpers first
// (chart, lineChart, barChart), for every mode of the driver,
// then the latency-over-time figure of the upgrade runs.

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	imgdraw "image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Sizes of a single chart and of the latency figure.
const (
	chartW      = 11 * vg.Inch
	chartH      = 5 * vg.Inch
	latencyW    = 14 * vg.Inch
	latencyRowH = 2.6 * vg.Inch
	legendH     = 1.3 * vg.Inch
	pngDPI      = 110
)

// chart is a figure's frame: its title and its axis labels, units
// included ("latency (ms)").
type chart struct {
	Title string
	X, Y  string
	// LogX and LogY put an axis on a log scale (the values must be
	// positive), from a power of ten to a power of ten.
	LogX, LogY bool
	// YMin and YMax bound the y axis when YMax > YMin.
	YMin, YMax float64
	// XStep, when not 0, labels the x axis at every multiple of it (1
	// for counts such as the upgrade's number).
	XStep float64
}

// series is one named line of a line chart.
type series struct {
	Name string
	XY   plotter.XYs
}

// barSeries is one named set of bars of a bar chart: a value per group,
// written above its bar (Labels, when given, instead of the values; ""
// for none).
type barSeries struct {
	Name   string
	Values []float64
	Labels []string
}

// newPlot is an empty plot in c's frame, with a grid and the legend at the
// top left.
func newPlot(c chart) *plot.Plot {
	p := plot.New()
	p.Title.Text = c.Title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = c.X
	p.Y.Label.Text = c.Y
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(11)
		a.Tick.Label.Font.Size = vg.Points(10)
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Add(plotter.NewGrid())
	if c.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = decadeTicks{}
	}
	p.Y.Tick.Marker = niceTicks{}
	if c.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = decadeTicks{}
	}
	if c.XStep > 0 {
		p.X.Tick.Marker = stepTicks(c.XStep)
	}
	return p
}

// fitAxes sets the axes' bounds once the data is added: c's y bounds if
// it has them, and whole decades on log axes, so that each has labels.
func fitAxes(p *plot.Plot, c chart) {
	decades := func(a *plot.Axis) {
		if a.Min > 0 && a.Max > 0 {
			a.Min = math.Pow(10, math.Floor(math.Log10(a.Min)))
			a.Max = math.Pow(10, math.Ceil(math.Log10(a.Max)))
		}
	}
	if c.LogX {
		decades(&p.X)
	}
	switch {
	case c.YMax > c.YMin:
		p.Y.Min, p.Y.Max = c.YMin, c.YMax
	case c.LogY:
		decades(&p.Y)
	}
}

// lineChart writes a line with its points marked for each series to path:
// an SVG or a PNG, by path's extension.
func lineChart(path string, c chart, lines []series) error {
	return lineCharts(path, []panel{{Chart: c, Lines: lines}})
}

// panel is one plot of a figure of several: its frame and its lines.
type panel struct {
	Chart chart
	Lines []series
}

// lineCharts writes the panels one under the other, each the size of a
// chart, aligned, to path (SVG or PNG by its extension).
func lineCharts(path string, panels []panel) error {
	var plots []*plot.Plot
	for _, pn := range panels {
		p := newPlot(pn.Chart)
		for j, s := range pn.Lines {
			l, pts, err := plotter.NewLinePoints(s.XY)
			if err != nil {
				return fmt.Errorf("%s: series %q: %w", path, s.Name, err)
			}
			l.Color = plotutil.Color(j)
			l.Width = vg.Points(1.5)
			pts.Color = plotutil.Color(j)
			pts.Shape = plotutil.Shape(j)
			p.Add(l, pts)
			p.Legend.Add(s.Name, l, pts)
		}
		fitAxes(p, pn.Chart)
		plots = append(plots, p)
	}
	return drawColumn(path, plots)
}

// drawColumn draws plots one under the other, aligned, each the size of a
// chart, with each plot's legend to the right of it rather than over the
// data, and writes the figure to path.
func drawColumn(path string, plots []*plot.Plot) error {
	if len(plots) == 0 {
		return fmt.Errorf("%s: no plots", path)
	}
	c, err := newCanvas(path, chartW, chartH*vg.Length(len(plots)))
	if err != nil {
		return err
	}
	dc := draw.New(c)
	legends := make([]plot.Legend, len(plots))
	var legendW vg.Length
	for i, p := range plots {
		legends[i] = p.Legend
		legendW = max(legendW, legends[i].Rectangle(dc).Size().X)
		p.Legend = plot.NewLegend() // drawn beside the plot instead
	}
	const gap = 10
	area := draw.Crop(dc, 0, -(legendW + gap*2), 0, 0)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Points(14), PadTop: vg.Points(4),
		PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(gap)}
	for i, cv := range plot.Align(column(plots), tiles, area) {
		plots[i].Draw(cv[0])
		box := dc
		box.Rectangle = vg.Rectangle{Min: vg.Point{X: area.Max.X + gap, Y: cv[0].Min.Y},
			Max: vg.Point{X: dc.Max.X, Y: cv[0].Max.Y}}
		legends[i].Top, legends[i].Left = true, true
		legends[i].Draw(box)
	}
	return writeCanvas(path, c)
}

func column(plots []*plot.Plot) [][]*plot.Plot {
	out := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		out[i] = []*plot.Plot{p}
	}
	return out
}

// barChart writes grouped bars to path: a group per name of groups on the
// x axis, a bar per series in each group.
func barChart(path string, c chart, groups []string, bars []barSeries) error {
	p := newPlot(c)
	w := vg.Points(min(60, 360/float64(max(1, len(groups)*len(bars)))))
	for i, b := range bars {
		if len(b.Values) != len(groups) {
			return fmt.Errorf("%s: series %q has %d values for %d groups", path, b.Name, len(b.Values), len(groups))
		}
		bc, err := plotter.NewBarChart(plotter.Values(b.Values), w)
		if err != nil {
			return fmt.Errorf("%s: series %q: %w", path, b.Name, err)
		}
		bc.Color = plotutil.Color(i)
		bc.LineStyle.Width = 0
		bc.Offset = w * vg.Length(float64(i)-float64(len(bars)-1)/2)
		labels, err := barLabels(b, bc.Offset)
		if err != nil {
			return fmt.Errorf("%s: series %q: %w", path, b.Name, err)
		}
		p.Add(bc, labels)
		p.Legend.Add(b.Name, bc)
	}
	p.NominalX(groups...)
	// Room for the outer bars of the first and last groups.
	p.X.Min, p.X.Max = -0.5, float64(len(groups))-0.5
	p.Y.Min = 0
	p.Y.Max = max(1, maxValue(bars)*1.15) // room for the labels
	fitAxes(p, c)
	return drawColumn(path, []*plot.Plot{p})
}

// barLabels writes each value of b above its bar, small and turned a
// quarter, so that a bar too short to see still reads.
func barLabels(b barSeries, offset vg.Length) (*plotter.Labels, error) {
	xyl := plotter.XYLabels{XYs: make(plotter.XYs, len(b.Values)), Labels: make([]string, len(b.Values))}
	for i, v := range b.Values {
		xyl.XYs[i] = plotter.XY{X: float64(i), Y: v}
		switch {
		case b.Labels != nil:
			xyl.Labels[i] = b.Labels[i]
		case v == math.Trunc(v):
			xyl.Labels[i] = strconv.FormatFloat(v, 'f', 0, 64)
		default:
			xyl.Labels[i] = strconv.FormatFloat(v, 'g', 3, 64)
		}
	}
	l, err := plotter.NewLabels(xyl)
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].Font.Size = vg.Points(8)
		l.TextStyle[i].Rotation = math.Pi / 2
		l.TextStyle[i].XAlign = draw.XLeft
		l.TextStyle[i].YAlign = draw.YCenter
	}
	l.Offset = vg.Point{X: offset, Y: vg.Points(3)}
	return l, nil
}

func maxValue(bars []barSeries) float64 {
	m := 0.0
	for _, b := range bars {
		for _, v := range b.Values {
			m = max(m, v)
		}
	}
	return m
}

// decadeTicks labels each power of ten of a log axis ("0.01", "1",
// "1000") and marks 2 to 9 times each without a label.
type decadeTicks struct{}

func (decadeTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		dec := math.Pow(10, e)
		for m := 1.0; m < 10; m++ {
			v := m * dec
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 {
				t.Label = strconv.FormatFloat(dec, 'f', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// niceTicks labels a linear axis at about five round steps (1, 2 or 5
// times a power of ten), without trailing decimals.
type niceTicks struct{}

func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	raw := (hi - lo) / 5
	if !(raw > 0) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'f', -1, 64)}}
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if raw <= m*mag {
			step = m * mag
			break
		}
	}
	return stepTicks(step).Ticks(lo, hi)
}

// stepTicks labels every step of a linear axis from 0.
type stepTicks float64

func (s stepTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	step := float64(s)
	for k := math.Ceil(lo / step); k*step <= hi+step*1e-9; k++ {
		v := k * step
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', 12, 64)})
	}
	return ticks
}

// newCanvas is a canvas of w x h for path's format.
func newCanvas(path string, w, h vg.Length) (vg.CanvasWriterTo, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".svg":
		return vgsvg.New(w, h), nil
	case ".png":
		return vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(pngDPI),
			vgimg.UseBackgroundColor(color.White))}, nil
	default:
		return nil, fmt.Errorf("%s: a figure is .svg or .png, not %q", path, ext)
	}
}

func writeCanvas(path string, c vg.CanvasWriterTo) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("figure: %w", err)
	}
	if p, ok := c.(vgimg.PngCanvas); ok {
		err = writeSmallPNG(f, p.Image())
	} else {
		_, err = c.WriteTo(f)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// writeSmallPNG encodes img in 256 colours at the best compression:
// thousands of antialiased, half-transparent dots make a true-colour PNG
// of a megabyte or more, which a repository carries for every committed
// run. The palette is the figures' own colours blended over white and
// over the window's shade (which is what overlapping dots and
// antialiased edges make), with greys for the text.
func writeSmallPNG(w io.Writer, img image.Image) error {
	pal := image.NewPaletted(img.Bounds(), figurePalette())
	imgdraw.Draw(pal, img.Bounds(), img, img.Bounds().Min, imgdraw.Src)
	return (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(w, pal)
}

func figurePalette() color.Palette {
	mix := func(a, b color.NRGBA, t float64) color.Color {
		m := func(x, y uint8) uint8 { return uint8(float64(x)*(1-t) + float64(y)*t + 0.5) }
		return color.NRGBA{m(a.R, b.R), m(a.G, b.G), m(a.B, b.B), 255}
	}
	white, black := color.NRGBA{255, 255, 255, 255}, color.NRGBA{0, 0, 0, 255}
	shade := mix(white, color.NRGBA{windowFill.R, windowFill.G, windowFill.B, 255}, float64(windowFill.A)/255).(color.NRGBA)
	var pal color.Palette
	const steps = 16
	for i := range 24 {
		pal = append(pal, mix(white, black, float64(i)/23))
	}
	for i := 1; i <= steps; i++ {
		pal = append(pal, mix(white, shade, float64(i)/steps), mix(shade, black, float64(i)/steps))
	}
	for _, c := range []color.NRGBA{dotBlue, failRed, trigRed, serveGreen} {
		c.A = 255
		for i := 1; i <= steps; i++ {
			pal = append(pal, mix(white, c, float64(i)/steps), mix(shade, c, float64(i)/steps))
		}
	}
	return pal
}

// Colours of the latency figure.
var (
	windowFill = color.NRGBA{255, 220, 120, 150}
	dotBlue    = color.NRGBA{30, 90, 200, 70}
	failRed    = color.NRGBA{220, 20, 20, 255}
	trigRed    = color.NRGBA{230, 60, 60, 255}
	serveGreen = color.NRGBA{0, 150, 60, 255}
)

// writePlot draws one panel per run, one under the other: the latency of
// every request over the run's time, on a log scale shared by all panels,
// with the upgrade windows shaded and the triggers marked; the legend is
// under the panels. path's extension picks PNG or SVG.
func writePlot(path string, runs []*runData) error {
	yLo, yHi, err := latencyRange(runs)
	if err != nil {
		return err
	}
	h := vg.Length(len(runs))*latencyRowH + legendH
	c, err := newCanvas(path, latencyW, h)
	if err != nil {
		return err
	}
	dc := draw.New(c)
	panels := make([][]*plot.Plot, len(runs))
	var legend plot.Legend
	for i, d := range runs {
		p, l, err := latencyPanel(d, yLo, yHi)
		if err != nil {
			return err
		}
		panels[i] = []*plot.Plot{p}
		legend = l
	}
	top := draw.Crop(dc, 0, 0, legendH, 0)
	tiles := draw.Tiles{Rows: len(runs), Cols: 1, PadY: vg.Points(6), PadTop: vg.Points(4),
		PadLeft: vg.Points(4), PadRight: vg.Points(12)}
	for i, cv := range plot.Align(panels, tiles, top) {
		panels[i][0].Draw(cv[0])
	}
	legend.Draw(draw.Crop(dc, vg.Points(60), 0, vg.Points(8), -(h - legendH)))
	return writeCanvas(path, c)
}

// latencyRange is the latency axis, in ms, that all panels share, so that
// they compare at a glance: whole decades from at most 0.1 ms (at least
// 0.01 ms) to at least 100 ms (at most 10 s).
func latencyRange(runs []*runData) (lo, hi float64, err error) {
	minMS, maxMS := math.Inf(1), 0.0
	for _, d := range runs {
		for _, s := range d.report.Samples {
			if ms := float64(s.Latency) / 1e6; ms > 0 {
				minMS, maxMS = min(minMS, ms), max(maxMS, ms)
			}
		}
	}
	if maxMS == 0 {
		return 0, 0, fmt.Errorf("plot: no samples")
	}
	lo = min(max(math.Floor(math.Log10(minMS)), -2), -1)
	hi = min(max(math.Ceil(math.Log10(maxMS)), 2), 4)
	return math.Pow(10, lo), math.Pow(10, hi), nil
}

// latencyPanel is d's panel and the legend of what it draws.
func latencyPanel(d *runData, yLo, yHi float64) (*plot.Plot, plot.Legend, error) {
	p := newPlot(chart{Title: panelTitle(d), X: "time since the load started (s)", Y: "latency (ms)",
		LogY: true, YMin: yLo, YMax: yHi})
	legend := plot.NewLegend()
	legend.Left, legend.Top = true, true
	legend.TextStyle.Font.Size = vg.Points(11)
	p.X.Min = 0
	p.X.Max = max(math.Ceil(runSeconds(d)), 1)
	p.X.Tick.Marker = stepTicks(1)
	if p.X.Max > 20 {
		p.X.Tick.Marker = stepTicks(5)
	}

	clamp := func(lat time.Duration) float64 { return min(max(float64(lat)/1e6, yLo), yHi) }
	at := func(t time.Time) float64 { return t.Sub(d.loadStart).Seconds() }
	var ok, failed plotter.XYs
	for _, s := range d.report.Samples {
		pt := plotter.XY{X: at(s.Start), Y: clamp(s.Latency)}
		if s.Failed {
			failed = append(failed, pt)
		} else {
			ok = append(ok, pt)
		}
	}

	windows, err := windowPolygons(d, yLo, yHi)
	if err != nil {
		return nil, legend, err
	}
	dots, err := scatter(ok, dotBlue, draw.CircleGlyph{}, 1)
	if err != nil {
		return nil, legend, err
	}
	p99, err := p99Line(d, clamp)
	if err != nil {
		return nil, legend, err
	}
	fails, err := scatter(failed, failRed, draw.BoxGlyph{}, 2.5)
	if err != nil {
		return nil, legend, err
	}
	triggers, serving, err := upgradeMarks(d, yLo, yHi)
	if err != nil {
		return nil, legend, err
	}
	p.Add(windows)
	addSome(p, dots, p99, fails)
	for _, t := range triggers {
		p.Add(t)
	}
	addSome(p, serving)
	p.Y.Min, p.Y.Max = yLo, yHi

	legend.Add("request (start, latency)", legendDot(dotBlue, draw.CircleGlyph{}, 3))
	legend.Add("failed request", legendDot(failRed, draw.BoxGlyph{}, 3))
	legend.Add("p99 of the requests started in each 100 ms", p99Style(nil))
	legend.Add("upgrade trigger (SIGHUP, or SIGTERM for the restart)", triggerLine(nil))
	legend.Add("first reply from the new pid", legendDot(serveGreen, draw.TriangleGlyph{}, 3))
	legend.Add("upgrade window: trigger to old pid gone (or to new pid serving, if later)", windows)
	return p, legend, nil
}

// runSeconds is the time from the load's start to the end of its last
// request.
func runSeconds(d *runData) float64 {
	var end time.Duration
	for _, s := range d.report.Samples {
		end = max(end, s.Start.Add(s.Latency).Sub(d.loadStart))
	}
	return end.Seconds()
}

// addSome adds the plotters that are not nil: a scatter or a line with no
// point is nil (gonum refuses empty data).
func addSome(p *plot.Plot, ps ...plot.Plotter) {
	for _, x := range ps {
		switch v := x.(type) {
		case *plotter.Scatter:
			if v == nil {
				continue
			}
		case *plotter.Line:
			if v == nil {
				continue
			}
		}
		p.Add(x)
	}
}

// scatter draws xy with the glyph; nil if xy is empty.
func scatter(xy plotter.XYs, c color.Color, shape draw.GlyphDrawer, radius float64) (*plotter.Scatter, error) {
	if len(xy) == 0 {
		return nil, nil
	}
	s, err := plotter.NewScatter(xy)
	if err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	s.GlyphStyle = draw.GlyphStyle{Color: c, Shape: shape, Radius: vg.Points(radius)}
	return s, nil
}

// legendDot is a legend thumbnail larger than the dots it stands for.
func legendDot(c color.Color, shape draw.GlyphDrawer, radius float64) plot.Thumbnailer {
	s := &plotter.Scatter{GlyphStyle: draw.GlyphStyle{Color: c, Shape: shape, Radius: vg.Points(radius)}}
	if nc, ok := c.(color.NRGBA); ok {
		nc.A = 255
		s.GlyphStyle.Color = nc
	}
	return s
}

// windowPolygons shades each upgrade's window, from the trigger to the old
// pid gone or to the new pid serving, whichever is later.
func windowPolygons(d *runData, yLo, yHi float64) (*plotter.Polygon, error) {
	var rings []plotter.XYer
	for _, e := range d.events {
		x0, x1 := e.At.Seconds(), (e.At + max(e.Gone, e.Serving)).Seconds()
		rings = append(rings, plotter.XYs{{X: x0, Y: yLo}, {X: x1, Y: yLo}, {X: x1, Y: yHi}, {X: x0, Y: yHi}})
	}
	if len(rings) == 0 {
		rings = append(rings, plotter.XYs{{X: 0, Y: yLo}, {X: 0, Y: yLo}, {X: 0, Y: yLo}})
	}
	pg, err := plotter.NewPolygon(rings...)
	if err != nil {
		return nil, fmt.Errorf("plot: windows: %w", err)
	}
	pg.Color = windowFill
	pg.LineStyle.Width = 0
	return pg, nil
}

func triggerLine(xy plotter.XYs) *plotter.Line {
	l := &plotter.Line{XYs: xy}
	l.LineStyle = draw.LineStyle{Color: trigRed, Width: vg.Points(1)}
	return l
}

// upgradeMarks are a vertical line at each trigger and a triangle at the
// top for each new pid's first reply.
func upgradeMarks(d *runData, yLo, yHi float64) ([]*plotter.Line, *plotter.Scatter, error) {
	var lines []*plotter.Line
	var serving plotter.XYs
	top := yHi / 1.6 // under the top edge, on the log axis
	for _, e := range d.events {
		x := e.At.Seconds()
		lines = append(lines, triggerLine(plotter.XYs{{X: x, Y: yLo}, {X: x, Y: yHi}}))
		serving = append(serving, plotter.XY{X: (e.At + e.Serving).Seconds(), Y: top})
	}
	s, err := scatter(serving, serveGreen, draw.TriangleGlyph{}, 3)
	return lines, s, err
}

// p99Line is the p99 latency of the successful requests started in each
// 100 ms bucket.
func p99Line(d *runData, clamp func(time.Duration) float64) (*plotter.Line, error) {
	const bucket = 100 * time.Millisecond
	var (
		pts  plotter.XYs
		cur  = time.Duration(-1)
		lats []time.Duration
	)
	flush := func() {
		if len(lats) == 0 {
			return
		}
		slices.Sort(lats)
		pts = append(pts, plotter.XY{X: (cur*bucket + bucket/2).Seconds(), Y: clamp(quantile(lats, 0.99))})
		lats = lats[:0]
	}
	for _, s := range d.report.Samples {
		if s.Failed {
			continue
		}
		if b := s.Start.Sub(d.loadStart) / bucket; b != cur {
			flush()
			cur = b
		}
		lats = append(lats, s.Latency)
	}
	flush()
	if len(pts) == 0 {
		return nil, nil
	}
	return p99Style(pts), nil
}

// p99Style is the p99 line through xy.
func p99Style(xy plotter.XYs) *plotter.Line {
	l := &plotter.Line{XYs: xy}
	l.LineStyle = draw.LineStyle{Color: color.Black, Width: vg.Points(1.5)}
	return l
}

func panelTitle(d *runData) string {
	name := d.spec.Name
	switch {
	case d.spec.Restart:
		name = "plain restart (baton-demo: SIGTERM, then start)"
	case d.spec.Name == "tableflip":
		name = "tableflip baseline (tests/tfbaseline)"
	case d.spec.Name == "baton":
		name = "baton-demo"
	case d.spec.Name == "baton-min":
		name = "baton-min (tests/tfbaseline on baton's upgrader)"
	case d.spec.Name == "baton-state", d.spec.Name == "baton-nokv":
		name = "baton-demo " + strings.Join(d.spec.Args, " ")
	}
	var serving []time.Duration
	for _, e := range d.events {
		serving = append(serving, e.Serving)
	}
	slices.Sort(serving)
	return fmt.Sprintf("%s: %d upgrades, %d of %d requests failed, %d re-sent, new pid serving %.1f ms after the trigger (median)",
		name, len(d.events), d.report.Failed(), d.report.Requests, d.report.Retried, ms(quantile(serving, 0.5)))
}

// writeUpgradeTimes draws, per upgrade, the trigger to the new pid serving
// and the trigger to the old pid gone, a line per service, from what
// results.json holds (so a committed run can be drawn again: -mode
// replot).
func writeUpgradeTimes(path string, runs []runResult) error {
	var serving, gone []series
	for _, r := range runs {
		var sv, gn plotter.XYs
		for i, e := range r.Events {
			sv = append(sv, plotter.XY{X: float64(i + 1), Y: max(e.Serving, 0.1)})
			gn = append(gn, plotter.XY{X: float64(i + 1), Y: max(e.Gone, 0.1)})
		}
		if len(sv) == 0 {
			continue
		}
		name := r.Service
		if len(r.Args) > 0 && r.Service != "restart" {
			name += " (" + strings.Join(r.Args, " ") + ")"
		}
		serving = append(serving, series{Name: name, XY: sv})
		gone = append(gone, series{Name: name, XY: gn})
	}
	if len(serving) == 0 {
		return fmt.Errorf("%s: no upgrades to draw", path)
	}
	return lineCharts(path, []panel{
		{Chart: chart{Title: "Trigger to the first reply from the new pid, each upgrade", X: "upgrade (in the order of the run)",
			Y: "time after the trigger (ms, log scale)", LogY: true, XStep: 1}, Lines: serving},
		{Chart: chart{Title: "Trigger to the old pid gone (its exit, seen through its pidfd), each upgrade", X: "upgrade (in the order of the run)",
			Y: "time after the trigger (ms, log scale)", LogY: true, XStep: 1}, Lines: gone},
	})
}

// replot draws again what can be drawn from a run's files in dir:
// upgrade-times.svg from results.json, and tools.md and the tools-*.svg
// figures from tools.json. The latency figure needs every request, which
// results.json does not keep.
func replot(dir string) error {
	drawn := 0
	if b, err := os.ReadFile(filepath.Join(dir, "results.json")); err == nil {
		var res results
		if err := json.Unmarshal(b, &res); err != nil {
			return fmt.Errorf("replot: %s/results.json: %w", dir, err)
		}
		if err := writeUpgradeTimes(filepath.Join(dir, "upgrade-times.svg"), res.Runs); err != nil {
			return err
		}
		drawn++
	}
	if b, err := os.ReadFile(filepath.Join(dir, "tools.json")); err == nil {
		var rep toolReport
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("replot: %s/tools.json: %w", dir, err)
		}
		if err := writeToolReport(dir, rep); err != nil {
			return err
		}
		drawn++
	}
	if drawn == 0 {
		return fmt.Errorf("replot: neither results.json nor tools.json in %s", dir)
	}
	fmt.Println("drew", dir, "again")
	return nil
}
