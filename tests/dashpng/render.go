package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The grid: Grafana's 24 columns, and its row unit, in points.
const (
	colW    = vg.Length(40)
	rowH    = vg.Length(17)
	gap     = vg.Length(3)
	headerH = vg.Length(40)
)

var (
	background = color.RGBA{R: 0xf4, G: 0xf5, B: 0xf5, A: 0xff}
	panelFill  = color.White
	border     = color.RGBA{R: 0xd0, G: 0xd4, B: 0xd9, A: 0xff}
	ink        = color.RGBA{R: 0x24, G: 0x29, B: 0x2e, A: 0xff}
	grey       = color.RGBA{R: 0x6a, G: 0x73, B: 0x7d, A: 0xff}
)

func sans(size vg.Length, bold bool) font.Font {
	f := font.Font{Typeface: "Liberation", Variant: "Sans"}
	if bold {
		f.Weight = 700 // font.WeightBold
	}
	return font.From(f, size)
}

func textStyle(size vg.Length, bold bool, c color.Color, xa text.XAlignment) draw.TextStyle {
	return draw.TextStyle{Color: c, Font: sans(size, bold), XAlign: xa, YAlign: draw.YCenter, Handler: plot.DefaultTextHandler}
}

// render draws every panel of d at its place on the grid, with the series
// data holds for it (by panel ID), and writes the PNG to out.
func render(d *Dashboard, data map[int][]Series, start, end time.Time, subtitle, out string) error {
	rows := 0
	for _, p := range d.Panels {
		rows = max(rows, p.GridPos.Y+p.GridPos.H)
	}
	w, h := 24*colW, vg.Length(rows)*rowH+headerH
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(120))
	dc := draw.New(img)
	dc.FillPolygon(background, rect(dc.Rectangle))
	dc.FillText(textStyle(13, true, ink, draw.XLeft), vg.Point{X: 2 * gap, Y: h - 13}, d.Title)
	dc.FillText(textStyle(8.5, false, grey, draw.XLeft), vg.Point{X: 2 * gap, Y: h - 30}, subtitle)
	for _, p := range d.Panels {
		g := p.GridPos
		c := dc
		c.Rectangle = vg.Rectangle{
			Min: vg.Point{X: vg.Length(g.X)*colW + gap, Y: h - headerH - vg.Length(g.Y+g.H)*rowH + gap},
			Max: vg.Point{X: vg.Length(g.X+g.W)*colW - gap, Y: h - headerH - vg.Length(g.Y)*rowH - gap},
		}
		c.FillPolygon(panelFill, rect(c.Rectangle))
		c.StrokeLines(draw.LineStyle{Color: border, Width: 0.8}, append(rect(c.Rectangle), c.Min))
		switch p.Type {
		case "stat":
			drawStat(c, p, data[p.ID])
		default:
			if err := drawTimeseries(c, p, data[p.ID], start, end); err != nil {
				return fmt.Errorf("panel %q: %w", p.Title, err)
			}
		}
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func rect(r vg.Rectangle) []vg.Point {
	return []vg.Point{r.Min, {X: r.Max.X, Y: r.Min.Y}, r.Max, {X: r.Min.X, Y: r.Max.Y}}
}

// drawStat fills the panel with the colour of the threshold its value
// reaches (the dashboard's colorMode "background") and writes its title and
// value(s) at the end of the range in white.
func drawStat(c draw.Canvas, p Panel, series []Series) {
	mid := (c.Min.X + c.Max.X) / 2
	var vals []string
	top := math.Inf(-1)
	for _, s := range series {
		v := s.Values[len(s.Values)-1]
		vals = append(vals, formatValue(v, p.FieldConfig.Defaults.Unit))
		top = math.Max(top, v)
	}
	v := strings.Join(vals, " / ")
	fg := color.Color(color.White)
	if v == "" {
		v, fg = "No data", grey
	} else {
		c.FillPolygon(p.thresholdColor(top), rect(c.Rectangle))
	}
	c.FillText(textStyle(9, true, fg, draw.XCenter), vg.Point{X: mid, Y: c.Max.Y - 10}, p.Title)
	c.FillText(textStyle(24, true, fg, draw.XCenter), vg.Point{X: mid, Y: (c.Min.Y+c.Max.Y)/2 - 6}, v)
}

// grafanaColors are the colours Grafana names in thresholds.
var grafanaColors = map[string]color.RGBA{
	"green":  {R: 0x37, G: 0x87, B: 0x2d, A: 0xff},
	"red":    {R: 0xc4, G: 0x16, B: 0x2a, A: 0xff},
	"orange": {R: 0xfa, G: 0x64, B: 0x00, A: 0xff},
	"yellow": {R: 0xe0, G: 0xb4, B: 0x00, A: 0xff},
	"blue":   {R: 0x1f, G: 0x60, B: 0xc4, A: 0xff},
}

// thresholdColor is the colour of the highest threshold step v reaches.
func (p Panel) thresholdColor(v float64) color.Color {
	out := grafanaColors["blue"]
	for _, st := range p.FieldConfig.Defaults.Thresholds.Steps {
		if st.Value == nil || v >= *st.Value {
			if c, ok := grafanaColors[st.Color]; ok {
				out = c
			}
		}
	}
	return out
}

// drawTimeseries plots every series of the panel, as lines broken where a
// value is NaN (no data in that window).
func drawTimeseries(c draw.Canvas, p Panel, series []Series, start, end time.Time) error {
	pl := plot.New()
	// the whole range, as Grafana shows it, wherever the series start
	pl.X.Min, pl.X.Max = float64(start.UnixNano())/1e9, float64(end.UnixNano())/1e9
	pl.BackgroundColor = color.Transparent
	pl.Title.Text = p.Title
	pl.Title.TextStyle = textStyle(9, true, ink, draw.XCenter)
	pl.Title.Padding = 4
	pl.X.Tick.Marker = plot.TimeTicks{Format: "15:04:05", Ticker: plot.DefaultTicks{}}
	pl.Y.Tick.Marker = unitTicks{unit: p.FieldConfig.Defaults.Unit}
	for _, a := range []*plot.Axis{&pl.X, &pl.Y} {
		a.Tick.Label = textStyle(6.5, false, grey, draw.XCenter)
		a.Color, a.Tick.Color = border, border
		a.Tick.Label.XAlign = draw.XCenter
	}
	pl.Y.Tick.Label.XAlign = draw.XRight
	pl.Y.Min = 0
	pl.Legend.TextStyle = textStyle(6.5, false, ink, draw.XLeft)
	pl.Legend.TextStyle.YAlign = draw.YBottom // rows are spaced by the text's top
	pl.Legend.Padding = 0.5
	pl.Legend.Top, pl.Legend.Left = true, true
	pl.Legend.XOffs, pl.Legend.YOffs = 4, -2
	pl.Add(plotter.NewGrid())
	any := false
	for i, s := range series {
		if !s.finite() {
			continue
		}
		any = true
		col := plotutil.Color(i)
		first := true
		for _, run := range runs(s) {
			l, err := plotter.NewLine(run)
			if err != nil {
				return err
			}
			l.Color, l.Width = col, 1.3
			pl.Add(l)
			if len(run) == 1 { // a lone point has no line to show
				sc, err := plotter.NewScatter(run)
				if err != nil {
					return err
				}
				sc.Color, sc.Radius, sc.Shape = col, 1.5, draw.CircleGlyph{}
				pl.Add(sc)
			}
			if first {
				pl.Legend.Add(s.Name, l)
				first = false
			}
		}
	}
	if !any {
		pl.HideAxes()
		c.FillText(textStyle(9, false, grey, draw.XCenter), vg.Point{X: (c.Min.X + c.Max.X) / 2, Y: (c.Min.Y + c.Max.Y) / 2}, "No data")
	}
	if pl.Y.Max < 1 && p.FieldConfig.Defaults.Unit == "short" {
		pl.Y.Max = 1
	}
	pl.X.Min, pl.X.Max = math.Min(pl.X.Min, float64(start.UnixNano())/1e9), math.Max(pl.X.Max, float64(end.UnixNano())/1e9)
	pl.Draw(draw.Crop(c, 2, -4, 2, -2))
	return nil
}

// runs splits a series into stretches of numbers, x in unix seconds.
func runs(s Series) []plotter.XYs {
	var out []plotter.XYs
	var cur plotter.XYs
	for i, v := range s.Values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if len(cur) > 0 {
				out = append(out, cur)
				cur = nil
			}
			continue
		}
		cur = append(cur, plotter.XY{X: float64(s.Times[i].UnixNano()) / 1e9, Y: v})
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// unitTicks labels the y axis in the panel's unit, as Grafana does.
type unitTicks struct{ unit string }

func (u unitTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = formatValue(ticks[i].Value, u.unit)
		}
	}
	return ticks
}

// formatValue writes v in unit: "s" as ms or s, "bytes" in KiB or MiB,
// "ops" per second, "short" as a plain number.
func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "NaN"
	}
	switch unit {
	case "s":
		if d := time.Duration(v * float64(time.Second)); v != 0 && math.Abs(v) < 1 {
			return fmt.Sprintf("%s ms", trim(float64(d)/float64(time.Millisecond)))
		}
		return trim(v) + " s"
	case "bytes":
		switch {
		case math.Abs(v) >= 1<<20:
			return trim(v/(1<<20)) + " MiB"
		case math.Abs(v) >= 1<<10:
			return trim(v/(1<<10)) + " KiB"
		}
		return trim(v) + " B"
	case "ops":
		return trim(v) + "/s"
	}
	return trim(v)
}

func trim(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3g", v), "0"), ".")
}
