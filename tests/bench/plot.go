package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Colours of the plot.
var (
	white      = color.RGBA{255, 255, 255, 255}
	black      = color.RGBA{0, 0, 0, 255}
	frameGray  = color.RGBA{90, 90, 90, 255}
	gridGray   = color.RGBA{225, 225, 225, 255}
	windowFill = color.RGBA{255, 236, 170, 255}
	dotBlue    = color.RGBA{30, 90, 200, 255}
	failRed    = color.RGBA{220, 20, 20, 255}
	trigRed    = color.RGBA{230, 60, 60, 255}
	serveGreen = color.RGBA{0, 150, 60, 255}
)

// Layout, in pixels.
const (
	plotW   = 1400
	marginL = 96
	marginR = 24
	titleH  = 36
	panelH  = 230
	xAxisH  = 30
	legendH = 76
)

// writePlot draws one panel per run: the latency of every request over the
// run's time, on a log scale, with the upgrade windows shaded and the
// triggers marked.
func writePlot(path string, runs []*runData) error {
	yLo, yHi, err := latencyDecades(runs)
	if err != nil {
		return err
	}
	h := 10 + len(runs)*(titleH+panelH+xAxisH) + legendH
	img := image.NewRGBA(image.Rect(0, 0, plotW, h))
	fill(img, img.Bounds(), white)
	y := 10
	for _, d := range runs {
		p := newPanel(d, y, yLo, yHi)
		p.draw(img, d)
		y = p.py1 + xAxisH
	}
	drawLegend(img, marginL, y+4)
	return savePNG(path, img)
}

// latencyDecades is the latency scale, in powers of ten of milliseconds,
// that all panels share, so that they compare at a glance: from at most
// 0.1 ms (at least 0.01 ms) to at least 100 ms (at most 10 s).
func latencyDecades(runs []*runData) (lo, hi float64, err error) {
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
	return lo, hi, nil
}

// panel is where one run is drawn, under its title: the plot area
// [x0, x1) x [py0, py1) and its scales, the shared latency scale and the
// run's own time scale, so that short runs are not squeezed by a long one.
type panel struct {
	x0, x1   int
	top      int // of the title
	py0, py1 int
	secs     float64 // the time axis's length
	yLo, yHi float64 // the latency axis's decades
}

func newPanel(d *runData, y int, yLo, yHi float64) panel {
	var tMax time.Duration
	for _, s := range d.report.Samples {
		tMax = max(tMax, s.Start.Add(s.Latency).Sub(d.loadStart))
	}
	return panel{x0: marginL, x1: plotW - marginR, top: y, py0: y + titleH, py1: y + titleH + panelH,
		secs: max(math.Ceil(tMax.Seconds()), 1), yLo: yLo, yHi: yHi}
}

// xOf is the x of a time since the load started.
func (p panel) xOf(t time.Duration) int {
	return p.x0 + int(t.Seconds()/p.secs*float64(p.x1-p.x0))
}

// yOf is the y of a latency, clamped to the axis.
func (p panel) yOf(lat time.Duration) int {
	v := math.Log10(max(float64(lat)/1e6, 1e-3))
	v = min(max(v, p.yLo), p.yHi)
	return p.py1 - int((v-p.yLo)/(p.yHi-p.yLo)*float64(p.py1-p.py0))
}

// draw draws d's panel: title, windows, grid, requests, p99, failures and
// the upgrade's marks, back to front.
func (p panel) draw(img *image.RGBA, d *runData) {
	drawText(img, p.x0, p.top+8, panelTitle(d), 2, black)
	for _, e := range d.events {
		fill(img, image.Rect(p.xOf(e.At), p.py0, p.xOf(e.At+max(e.Gone, e.Serving))+1, p.py1), windowFill)
	}
	p.drawAxes(img)
	for _, s := range d.report.Samples {
		if !s.Failed {
			blend(img, p.xOf(s.Start.Sub(d.loadStart)), p.yOf(s.Latency), dotBlue, 0.45)
		}
	}
	drawP99(img, d, p.xOf, p.yOf)
	for _, s := range d.report.Samples {
		if s.Failed {
			xx, yy := p.xOf(s.Start.Sub(d.loadStart)), p.yOf(s.Latency)
			fill(img, image.Rect(xx-2, yy-2, xx+3, yy+3), failRed)
		}
	}
	for _, e := range d.events {
		vline(img, p.xOf(e.At), p.py0, p.py1, trigRed)
		xs := p.xOf(e.At + e.Serving)
		fill(img, image.Rect(xs-1, p.py0, xs+2, p.py0+12), serveGreen)
	}
	frame(img, image.Rect(p.x0, p.py0, p.x1, p.py1), frameGray)
}

// drawAxes draws the grid lines and labels: a line per decade of latency
// and per second (or five) of time.
func (p panel) drawAxes(img *image.RGBA) {
	for dec := p.yLo; dec <= p.yHi; dec++ {
		yy := p.yOf(time.Duration(math.Pow(10, dec) * 1e6))
		hline(img, p.x0, p.x1, yy, gridGray)
		label := strings.TrimSuffix(fmt.Sprintf("%g", math.Pow(10, dec)), ".0")
		drawText(img, p.x0-8-textWidth(label, 2), yy-7, label, 2, black)
	}
	drawText(img, 8, p.py0+panelH/2-7, "MS", 2, black) // log scale
	step := 1.0
	if p.secs > 20 {
		step = 5
	}
	for s := 0.0; s <= p.secs; s += step {
		xx := p.xOf(time.Duration(s * float64(time.Second)))
		vline(img, xx, p.py0, p.py1, gridGray)
		label := fmt.Sprintf("%g", s)
		drawText(img, xx-textWidth(label, 2)/2, p.py1+6, label, 2, black)
	}
}

func savePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func panelTitle(d *runData) string {
	name := d.spec.Name
	switch {
	case d.spec.Restart:
		name = "PLAIN RESTART (BATON-DEMO, SIGTERM + START)"
	case d.spec.Name == "tableflip":
		name = "TABLEFLIP BASELINE"
	case d.spec.Name == "baton":
		name = "BATON-DEMO"
	case d.spec.Name == "baton-state", d.spec.Name == "baton-nokv":
		name = "BATON-DEMO " + strings.Join(d.spec.Args, " ")
	}
	var serving []time.Duration
	for _, e := range d.events {
		serving = append(serving, e.Serving)
	}
	slices.Sort(serving)
	return fmt.Sprintf("%s   FAILED %d  RE-SENT %d  NEW PID SERVING MEDIAN %.1f MS",
		name, d.report.Failed(), d.report.Retried, ms(quantile(serving, 0.5)))
}

// drawP99 draws the p99 latency of the successful requests started in each
// 100 ms bucket.
func drawP99(img *image.RGBA, d *runData, xOf func(time.Duration) int, yOf func(time.Duration) int) {
	const bucket = 100 * time.Millisecond
	var (
		cur  = time.Duration(-1)
		lats []time.Duration
		px   = -1
		py   int
	)
	flush := func() {
		if len(lats) == 0 {
			return
		}
		slices.Sort(lats)
		x, y := xOf(cur*bucket+bucket/2), yOf(quantile(lats, 0.99))
		if px >= 0 {
			line(img, px, py, x, y, black)
			line(img, px, py+1, x, y+1, black)
		}
		px, py = x, y
		lats = lats[:0]
	}
	for _, s := range d.report.Samples {
		if s.Failed {
			continue
		}
		b := s.Start.Sub(d.loadStart) / bucket
		if b != cur {
			flush()
			cur = b
		}
		lats = append(lats, s.Latency)
	}
	flush()
}

func drawLegend(img *image.RGBA, x, y int) {
	items := []struct {
		c     color.RGBA
		label string
		kind  int // 0 dot, 1 vertical line, 2 box, 3 thick line
	}{
		{dotBlue, "REQUEST (START, LATENCY)", 2},
		{failRed, "FAILED REQUEST", 2},
		{black, "P99 PER 100 MS", 3},
		{trigRed, "UPGRADE TRIGGER", 1},
		{serveGreen, "FIRST REPLY FROM NEW PID", 1},
		{windowFill, "TRIGGER TO OLD PID GONE (OR NEW PID SERVING)", 2},
	}
	x0 := x
	for i, it := range items {
		if i == 3 {
			x, y = x0, y+26
		}
		switch it.kind {
		case 1:
			fill(img, image.Rect(x+6, y, x+9, y+14), it.c)
		case 2:
			fill(img, image.Rect(x, y+2, x+14, y+12), it.c)
		case 3:
			fill(img, image.Rect(x, y+6, x+16, y+8), it.c)
		}
		drawText(img, x+22, y, it.label, 2, black)
		x += 22 + textWidth(it.label, 2) + 28
	}
	const xLabel = "X: SECONDS SINCE THE LOAD STARTED"
	drawText(img, plotW-marginR-textWidth(xLabel, 2), y-26, xLabel, 2, black)
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	fill(img, image.Rect(x0, y, x1, y+1), c)
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	fill(img, image.Rect(x, y0, x+1, y1), c)
}

func frame(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	hline(img, r.Min.X, r.Max.X, r.Min.Y, c)
	hline(img, r.Min.X, r.Max.X, r.Max.Y, c)
	vline(img, r.Min.X, r.Min.Y, r.Max.Y, c)
	vline(img, r.Max.X, r.Min.Y, r.Max.Y+1, c)
}

// line draws a segment by stepping along its longer axis.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	n := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= n; i++ {
		img.SetRGBA(x0+(x1-x0)*i/n, y0+(y1-y0)*i/n, c)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// blend paints c over the pixel at (x, y) with opacity a, so that dense
// regions of dots darken.
func blend(img *image.RGBA, x, y int, c color.RGBA, a float64) {
	if !(image.Point{x, y}.In(img.Bounds())) {
		return
	}
	o := img.RGBAAt(x, y)
	mix := func(b, f uint8) uint8 { return uint8(float64(b)*(1-a) + float64(f)*a + 0.5) }
	img.SetRGBA(x, y, color.RGBA{mix(o.R, c.R), mix(o.G, c.G), mix(o.B, c.B), 255})
}
