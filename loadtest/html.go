package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// WriteHTML writes r as one self-contained HTML page: the run's header,
// SLO results and warnings, charts over time (latency of every histogram,
// connections, messages, connects and errors per second), a percentile
// distribution per histogram, and the summary's tables and text. The
// charts are inline SVG drawn here; the page loads nothing (no scripts,
// stylesheets or fonts) and html/template escapes every value.
func WriteHTML(w io.Writer, r *Report) error {
	var sum strings.Builder
	r.WriteSummary(&sum)
	v := htmlView{
		R:        r,
		Duration: r.End.Sub(r.Start).Round(time.Millisecond).String(),
		Primary:  primaryHist(r.Scenario),
		Summary:  sum.String(),
	}
	for _, name := range r.sortedHists() {
		v.Hists = append(v.Hists, htmlHist{Name: name, P: r.Metrics[name]})
		v.Dists = append(v.Dists, distChart(name, r.Metrics[name]))
	}
	v.TimeCharts = timeCharts(r)
	if r.hasDelivery() {
		c := r.Counters
		v.Delivery = []htmlCount{
			{CountExpected, c[CountExpected]}, {CountReceived, c[CountReceived]}, {CountLost, c[CountLost]},
			{CountDup, c[CountDup]}, {CountReordered, c[CountReordered]},
		}
	}
	v.Errors = sortedCounts(r.errorCounters())
	v.Counters = sortedCounts(r.Counters)
	return htmlPage.Execute(w, v)
}

// htmlView is what the page template renders.
type htmlView struct {
	R          *Report
	Duration   string
	Primary    string
	Hists      []htmlHist
	TimeCharts []svgChart
	Dists      []svgChart
	Delivery   []htmlCount
	Errors     []htmlCount
	Counters   []htmlCount
	Summary    string
}

type htmlHist struct {
	Name string
	P    Percentiles
}

type htmlCount struct {
	Name string
	N    int64
}

func sortedCounts(m map[string]int64) []htmlCount {
	var out []htmlCount
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, htmlCount{k, m[k]})
	}
	return out
}

// svgChart is one line chart, laid out in pixels.
type svgChart struct {
	Title          string
	YUnit          string
	W, H           int
	L, R, T, B     float64 // the plot area's edges
	XTicks, YTicks []svgTick
	Lines          []svgLine
}

type svgTick struct {
	Pos   float64
	Label string
}

type svgLine struct {
	Name, Color string
	Dash        bool
	Path        string   // SVG path data; pen up over gaps
	Dots        []svgDot // points drawn as dots: all (distribution charts) or lone ones
	KeyX        float64  // the legend entry's position
}

type svgDot struct{ X, Y float64 }

// series is a line's data: x, y pairs, y NaN for a gap.
type series struct {
	name, color string
	dash, dots  bool
	x, y        []float64
}

// Line colours.
const (
	colorP50    = "#1f77b4"
	colorP99    = "#ff7f0e"
	colorMax    = "#d62728"
	colorTarget = "#7f7f7f"
	colorIn     = "#2ca02c"
)

// timeCharts draws the timeline: latency per histogram (the primary
// first), connections, messages and connects/errors per second. None
// without a timeline.
func timeCharts(r *Report) []svgChart {
	tl := r.Timeline
	if len(tl) == 0 {
		return nil
	}
	ts := make([]float64, len(tl))
	for i, iv := range tl {
		ts[i] = iv.T
	}
	xlo, xhi, xticks := timeTicks(ts)
	var out []svgChart
	for _, name := range timelineHists(r) {
		p50, p99, mx := make([]float64, len(tl)), make([]float64, len(tl)), make([]float64, len(tl))
		for i, iv := range tl {
			p50[i], p99[i], mx[i] = math.NaN(), math.NaN(), math.NaN()
			if p, ok := iv.Latency[name]; ok && p.Count > 0 {
				p50[i], p99[i], mx[i] = p.P50, p.P99, p.Max
			}
		}
		title := name + " latency per second"
		if name == primaryHist(r.Scenario) {
			title += " (primary)"
		}
		out = append(out, lineChart(title, "ms", 680, true, xlo, xhi, xticks, []series{
			{name: "p50", color: colorP50, x: ts, y: p50},
			{name: "p99", color: colorP99, x: ts, y: p99},
			{name: "max", color: colorMax, x: ts, y: mx},
		}))
	}
	gauge := func(name string) []float64 {
		y := make([]float64, len(tl))
		for i, iv := range tl {
			y[i] = math.NaN()
			if v, ok := iv.Gauges[name]; ok {
				y[i] = float64(v)
			}
		}
		return y
	}
	perSecond := func(pick func(map[string]int64) int64) []float64 {
		y := make([]float64, len(tl))
		prev := 0.0
		for i, iv := range tl {
			n := float64(pick(iv.Counters))
			if dt := iv.T - prev; dt > 0 {
				n /= dt
			}
			y[i], prev = n, iv.T
		}
		return y
	}
	counter := func(name string) func(map[string]int64) int64 {
		return func(c map[string]int64) int64 { return c[name] }
	}
	errs := func(c map[string]int64) int64 { n, _ := errorCounts(c); return n }
	charts := []struct {
		title string
		lines []series
	}{
		{"Connections", []series{
			{name: "open", color: colorP50, x: ts, y: gauge(GaugeOpen)},
			{name: "target", color: colorTarget, dash: true, x: ts, y: gauge(GaugeTarget)},
		}},
		{"Messages per second", []series{
			{name: "sent", color: colorP50, x: ts, y: perSecond(counter(CountSent))},
			{name: "received", color: colorIn, x: ts, y: perSecond(counter(CountReceived))},
		}},
		{"Connects and errors per second", []series{
			{name: "connects", color: colorP50, x: ts, y: perSecond(counter(CountConnOK))},
			{name: "errors", color: colorMax, x: ts, y: perSecond(errs)},
		}},
	}
	for _, c := range charts {
		if lines := withData(c.lines); len(lines) > 0 {
			out = append(out, lineChart(c.title, "", 680, false, xlo, xhi, xticks, lines))
		}
	}
	return out
}

// timelineHists returns the histograms with samples in some interval, the
// scenario's primary one first.
func timelineHists(r *Report) []string {
	seen := map[string]bool{}
	for _, iv := range r.Timeline {
		for name := range iv.Latency {
			seen[name] = true
		}
	}
	return primaryFirst(slices.Sorted(maps.Keys(seen)), r.Scenario)
}

// withData drops the series that are all zero or gaps.
func withData(ss []series) []series {
	var out []series
	for _, s := range ss {
		if slices.ContainsFunc(s.y, func(v float64) bool { return v != 0 && !math.IsNaN(v) }) {
			out = append(out, s)
		}
	}
	return out
}

// nines places a percentile on the "nines" axis: 0 → 0, 90 → 1, 99 → 2,
// 99.9 → 3, ...
func nines(pct float64) float64 { return -math.Log10(1 - pct/100) }

// maxNines is where the distribution charts put the maximum.
const maxNines = 5

// distChart plots a histogram's summary percentiles on the nines axis.
func distChart(name string, p Percentiles) svgChart {
	x := []float64{0, nines(50), nines(90), nines(99), nines(99.9), nines(99.99), maxNines}
	y := []float64{p.Min, p.P50, p.P90, p.P99, p.P999, p.P9999, p.Max}
	ticks := []svgTick{{0, "0"}, {nines(50), "50"}, {1, "90"}, {2, "99"}, {3, "99.9"}, {4, "99.99"}, {maxNines, "max"}}
	return lineChart(fmt.Sprintf("%s by percentile (n=%d)", name, p.Count), "ms", 480, true, 0, maxNines, ticks,
		[]series{{name: name, color: colorP50, dots: true, x: x, y: y}})
}

// timeTicks returns the x range and ticks of a chart over the timeline.
func timeTicks(ts []float64) (lo, hi float64, ticks []svgTick) {
	hi, vals := niceTicks(ts[len(ts)-1])
	for _, v := range vals {
		ticks = append(ticks, svgTick{v, strconv.FormatFloat(v, 'f', -1, 64) + "s"})
	}
	return 0, hi, ticks
}

// niceTicks returns about five round tick values from 0 to at least hi,
// and the last of them.
func niceTicks(hi float64) (top float64, ticks []float64) {
	if !(hi > 0) {
		hi = 1
	}
	step := math.Pow(10, math.Floor(math.Log10(hi/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if hi/(step*m) <= 6 {
			step *= m
			break
		}
	}
	for i := 0; i <= 10; i++ {
		v := float64(i) * step
		ticks = append(ticks, v)
		if v >= hi {
			break
		}
	}
	return ticks[len(ticks)-1], ticks
}

// lineChart lays out series in a chart w pixels wide: x from xlo to xhi
// with xticks given in data units; y on a log10 scale (latencies) if ylog,
// otherwise from 0.
func lineChart(title, yunit string, w int, ylog bool, xlo, xhi float64, xticks []svgTick, ss []series) svgChart {
	const h = 240
	c := svgChart{Title: title, YUnit: yunit, W: w, H: h, L: 60, R: float64(w) - 16, T: 28, B: h - 28}
	if xhi <= xlo {
		xhi = xlo + 1
	}
	px := func(x float64) float64 { return c.L + (c.R-c.L)*(x-xlo)/(xhi-xlo) }
	for _, t := range xticks {
		c.XTicks = append(c.XTicks, svgTick{px(t.Pos), t.Label})
	}

	ylo, yhi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, v := range s.y {
			if math.IsNaN(v) || ylog && v <= 0 {
				continue
			}
			ylo, yhi = min(ylo, v), max(yhi, v)
		}
	}
	yval := func(v float64) float64 { return v } // data → axis units
	if ylog {
		if math.IsInf(ylo, 1) {
			ylo, yhi = 1, 10
		}
		yval = func(v float64) float64 { return math.Log10(max(v, 1e-3)) }
		ylo, yhi = math.Floor(yval(ylo)), math.Ceil(yval(yhi))
		if yhi <= ylo {
			yhi = ylo + 1
		}
		for e := ylo; e <= yhi; e++ {
			c.YTicks = append(c.YTicks, svgTick{e, strconv.FormatFloat(math.Pow(10, e), 'f', -1, 64)})
		}
	} else {
		var vals []float64
		yhi, vals = niceTicks(max(yhi, 1))
		ylo = 0
		for _, v := range vals {
			c.YTicks = append(c.YTicks, svgTick{v, fmtCount(v)})
		}
	}
	py := func(v float64) float64 { return c.B - (c.B-c.T)*(v-ylo)/(yhi-ylo) }
	for i := range c.YTicks {
		c.YTicks[i].Pos = py(c.YTicks[i].Pos)
	}

	for i, s := range ss {
		l := svgLine{Name: s.name, Color: s.color, Dash: s.dash, KeyX: c.L + float64(i)*110}
		var d strings.Builder
		pen := false
		for j, x := range s.x {
			y := s.y[j]
			if math.IsNaN(y) {
				pen = false
				continue
			}
			X, Y := px(x), py(yval(y))
			cmd := "L"
			if !pen {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, X, Y)
			pen = true
			isolated := j+1 == len(s.y) || math.IsNaN(s.y[j+1])
			if s.dots || isolated && cmd == "M" { // a lone point draws no line
				l.Dots = append(l.Dots, svgDot{X, Y})
			}
		}
		l.Path = strings.TrimSpace(d.String())
		c.Lines = append(c.Lines, l)
	}
	return c
}

// fmtCount formats an axis value: 950, 1.5k, 2M.
func fmtCount(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// px formats a pixel coordinate.
func px(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// htmlPage is the report page. It is well-formed XML as well as HTML (every
// element closed, no named entities), so that tests can check it with
// encoding/xml.
var htmlPage = template.Must(template.New("page").Funcs(template.FuncMap{
	"px":   px,
	"ms":   func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) },
	"pct":  func(v float64) string { return strconv.FormatFloat(100*v, 'f', 0, 64) + "%" },
	"add":  func(a, b float64) float64 { return a + b },
	"utc":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"unit": fmtUnit,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>parley loadtest {{.R.Scenario}} {{utc .R.Start}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1500px; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 24px 0 8px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 4px 0 12px; }
th, td { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; font-variant-numeric: tabular-nums; }
th:first-child, td:first-child { text-align: left; }
table.kv td { text-align: left; }
.ok { color: #2a7d2a; font-weight: bold; }
.fail { color: #c0392b; font-weight: bold; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: 4px 12px; }
figure { display: inline-block; margin: 0 12px 12px 0; vertical-align: top; }
figcaption { font-weight: bold; font-size: 13px; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
svg .grid { stroke: #e5e5e5; }
svg .axis { stroke: #888; fill: none; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
</style>
</head>
<body>
<h1>parley loadtest: {{.R.Scenario}}</h1>
<table class="kv">
{{- if gt (len .R.URLs) 1}}
<tr><td>URLs</td><td>{{range $i, $u := .R.URLs}}{{if $i}}, {{end}}{{$u.URL}} ({{$u.Opened}} conns){{end}}{{with .R.Chat}}{{if .Placement}}; chat placement {{.Placement}}{{end}}{{end}}</td></tr>
{{- else}}
<tr><td>URL</td><td>{{.R.URL}}</td></tr>
{{- end}}
<tr><td>connections</td><td>{{.R.Conns}}</td></tr>
<tr><td>seed</td><td>{{.R.Seed}}</td></tr>
<tr><td>tool</td><td>{{.R.Tool}} (report version {{.R.Version}})</td></tr>
<tr><td>date</td><td>{{utc .R.Start}}, {{.Duration}}</td></tr>
<tr><td>tester CPU</td><td>{{printf "%.1f" .R.CPU.Seconds}} s over {{printf "%.1f" .R.CPU.WallSeconds}} s wall, {{pct .R.CPU.Utilization}} of GOMAXPROCS={{.R.GOMAXPROCS}}{{if .R.CPU.Saturated}} <span class="fail">(saturated)</span>{{end}}</td></tr>
{{- if .R.Agents}}
<tr><td>agents</td><td>{{len .R.Agents}}</td></tr>
{{- end}}
</table>
{{- if .R.Warnings}}
<div class="warn"><p><b>Warnings</b></p><ul>{{range .R.Warnings}}<li>{{.}}</li>{{end}}</ul></div>
{{- end}}
{{- if .R.SLO}}
<h2>SLOs</h2>
<table>
<tr><th>SLO</th><th>metric</th><th>value</th><th>threshold</th><th>result</th></tr>
{{- range .R.SLO}}
<tr><td>{{.Expr}}</td><td>{{.Metric}}</td><td>{{if .Note}}{{.Note}}{{else}}{{unit .Value .Unit}}{{end}}</td><td>{{unit .Threshold .Unit}}</td><td>{{if .OK}}<span class="ok">ok</span>{{else}}<span class="fail">FAIL</span>{{end}}</td></tr>
{{- end}}
</table>
{{- end}}

<h2>Over time</h2>
{{- range .TimeCharts}}
{{template "chart" .}}
{{- else}}
<p>No timeline recorded.</p>
{{- end}}

<h2>Latency distribution</h2>
{{- range .Dists}}
{{template "chart" .}}
{{- else}}
<p>No latency recorded.</p>
{{- end}}
{{- if .Hists}}
<table>
<tr><th>latency ms</th><th>count</th><th>min</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr>
{{- range .Hists}}
<tr><td>{{.Name}}{{if eq .Name $.Primary}} (primary){{end}}</td><td>{{.P.Count}}</td><td>{{ms .P.Min}}</td><td>{{ms .P.Mean}}</td><td>{{ms .P.P50}}</td><td>{{ms .P.P90}}</td><td>{{ms .P.P99}}</td><td>{{ms .P.P999}}</td><td>{{ms .P.P9999}}</td><td>{{ms .P.Max}}</td></tr>
{{- end}}
</table>
{{- end}}
{{- if .Delivery}}

<h2>Delivery</h2>
<table>
{{- range .Delivery}}
<tr><td>{{.Name}}</td><td>{{.N}}</td></tr>
{{- end}}
</table>
{{- end}}

<h2>Errors</h2>
{{- if .Errors}}
<table>
{{- range .Errors}}
<tr><td>{{.Name}}</td><td>{{.N}}</td></tr>
{{- end}}
</table>
{{- else}}
<p>None.</p>
{{- end}}
{{- if .Counters}}

<h2>Counters</h2>
<table>
{{- range .Counters}}
<tr><td>{{.Name}}</td><td>{{.N}}</td></tr>
{{- end}}
</table>
{{- end}}

<h2>Summary</h2>
<pre>{{.Summary}}</pre>
</body>
</html>
{{define "chart"}}<figure>
<figcaption>{{.Title}}</figcaption>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}">
{{- range .YTicks}}
<line class="grid" x1="{{px $.L}}" x2="{{px $.R}}" y1="{{px .Pos}}" y2="{{px .Pos}}"/><text x="{{px (add $.L -6)}}" y="{{px (add .Pos 4)}}" text-anchor="end">{{.Label}}</text>
{{- end}}
{{- range .XTicks}}
<line class="grid" x1="{{px .Pos}}" x2="{{px .Pos}}" y1="{{px $.T}}" y2="{{px $.B}}"/><text x="{{px .Pos}}" y="{{px (add $.B 16)}}" text-anchor="middle">{{.Label}}</text>
{{- end}}
<path class="axis" d="M{{px .L}} {{px .T}} V{{px .B}} H{{px .R}}"/>
{{- if .YUnit}}
<text x="4" y="{{px (add .T -10)}}">{{.YUnit}}</text>
{{- end}}
{{- range .Lines}}
<path d="{{.Path}}" fill="none" stroke="{{.Color}}" stroke-width="1.5"{{if .Dash}} stroke-dasharray="5 3"{{end}}/>
{{- $c := .Color}}
{{- range .Dots}}
<circle cx="{{px .X}}" cy="{{px .Y}}" r="3" fill="{{$c}}"/>
{{- end}}
<line x1="{{px .KeyX}}" x2="{{px (add .KeyX 18)}}" y1="{{px (add $.T -14)}}" y2="{{px (add $.T -14)}}" stroke="{{.Color}}" stroke-width="2"{{if .Dash}} stroke-dasharray="5 3"{{end}}/><text x="{{px (add .KeyX 22)}}" y="{{px (add $.T -10)}}">{{.Name}}</text>
{{- end}}
</svg>
</figure>{{end}}`))
