package loadtest

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SLO is one parsed --slo term: Metric Op Threshold. ParseSLO makes them;
// Report.CheckSLO checks them against a run.
type SLO struct {
	Expr   string // the term as given, e.g. "ack.p99<10ms"
	Metric string // as given without the value: "p99", "ack.p99", "loss", ...
	Op     string // <, <=, >, >=, =
	// Threshold is in milliseconds for latencies, a count for loss, dup,
	// reorder and errors, per second for rate, connections for conns, and
	// a percentage when Percent is set (always for delivery).
	Threshold float64
	Percent   bool

	hist, pct string // latency terms: histogram ("" = the primary) and percentile
}

// SLOResult is one --slo threshold and whether the run met it.
type SLOResult struct {
	Expr      string  `json:"expr"`   // as given, e.g. "p99<20ms"
	Metric    string  `json:"metric"` // what it was checked against, e.g. "e2e.p99"
	Value     float64 `json:"value"`  // the run's value, in Unit
	Threshold float64 `json:"threshold"`
	Unit      string  `json:"unit,omitempty"` // "ms", "%", "/s" or "" (a count)
	OK        bool    `json:"ok"`
	// Note says why a term failed without a value (no samples, no
	// delivery bookkeeping, ...).
	Note string `json:"note,omitempty"`
}

// sloPercentiles are the percentile names a latency term may use, alone
// (the scenario's primary histogram) or after a histogram's name.
var sloPercentiles = []string{"p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "min"}

// sloHists are the histograms a latency term may name. A histogram added
// to the recorder's constants belongs here too.
var sloHists = []string{HistConnect, HistAck, HistE2E, HistFanoutLast, HistFanoutAll, HistPing, HistSubscribe, HistRecover, HistPresence}

// sloOthers are the metrics that are not latencies.
var sloOthers = []string{"loss", "dup", "reorder", "errors", "delivery", "rate", "conns"}

// primaryHist is the histogram a scenario is judged by: the one bare
// percentiles in --slo, the live progress line and the report lead with.
func primaryHist(scenario string) string {
	switch scenario {
	case "chat", "group":
		return HistE2E
	case "fanout":
		return HistFanoutLast
	}
	return HistConnect // idle, connect, presence, storm
}

// ParseSLO parses comma-separated terms <metric><op><value>, e.g.
// "p99<20ms,ack.p99.9<=50ms,loss=0,errors<0.1%,delivery>=99.9%,rate>=900".
// An empty s means no SLOs.
func ParseSLO(s string) ([]SLO, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []SLO
	for _, term := range strings.Split(s, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			return nil, fmt.Errorf("slo %q: empty term", s)
		}
		slo, err := parseTerm(term)
		if err != nil {
			return nil, fmt.Errorf("slo %q: %w", term, err)
		}
		out = append(out, slo)
	}
	return out, nil
}

func parseTerm(term string) (SLO, error) {
	i := strings.IndexAny(term, "<>=")
	if i < 0 {
		return SLO{}, errors.New("no operator: want one of <, <=, >, >=, =")
	}
	op := term[i : i+1]
	if op != "=" && i+1 < len(term) && term[i+1] == '=' {
		op += "="
	}
	s := SLO{
		Expr:   term,
		Metric: strings.TrimSpace(term[:i]),
		Op:     op,
	}
	val := strings.TrimSpace(term[i+len(op):])
	if s.Metric == "" {
		return SLO{}, errors.New("no metric before the operator")
	}
	if val == "" {
		return SLO{}, errors.New("no value after the operator")
	}
	if strings.ContainsAny(val, "<>=") {
		return SLO{}, errors.New("more than one operator")
	}
	if slices.Contains(sloOthers, s.Metric) {
		return s, s.parseOther(val)
	}
	hist, pct := "", s.Metric
	if !slices.Contains(sloPercentiles, s.Metric) {
		var ok bool
		hist, pct, ok = strings.Cut(s.Metric, ".")
		if !ok || !slices.Contains(sloHists, hist) || !slices.Contains(sloPercentiles, pct) {
			return SLO{}, fmt.Errorf("unknown metric %q: want %s of the scenario's primary histogram, <histogram>.<percentile> with a histogram of %s, or one of %s",
				s.Metric, strings.Join(sloPercentiles, ", "), strings.Join(sloHists, ", "), strings.Join(sloOthers, ", "))
		}
	}
	s.hist, s.pct = hist, pct
	ms, err := parseMillis(val)
	if err != nil {
		return SLO{}, err
	}
	s.Threshold = ms
	return s, nil
}

// parseMillis parses a duration ("20ms", "1.5s", "500us") or a plain
// number of milliseconds.
func parseMillis(v string) (float64, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("latency %q: want a non-negative duration", v)
		}
		return f, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("latency %q: want a non-negative duration such as 20ms, 1.5s or 500us, or a number of milliseconds", v)
	}
	return float64(d) / float64(time.Millisecond), nil
}

// parseOther parses the value of a metric that is not a latency.
func (s *SLO) parseOther(v string) error {
	num := v
	if n, ok := strings.CutSuffix(v, "%"); ok {
		if s.Metric == "rate" {
			return fmt.Errorf("rate %q: want messages or connections per second, not a percentage", v)
		}
		num, s.Percent = strings.TrimSpace(n), true
	} else if n, ok := strings.CutSuffix(v, "/s"); ok && s.Metric == "rate" {
		num = strings.TrimSpace(n)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%s %q: want a non-negative number, or a percentage ending in %%", s.Metric, v)
	}
	if s.Metric == "delivery" && !s.Percent {
		if f > 1 {
			return fmt.Errorf("delivery %q: want a fraction (0.999) or a percentage (99.9%%)", v)
		}
		f, s.Percent = 100*f, true
	}
	if s.Percent && f > 100 {
		return fmt.Errorf("%s %q: a percentage over 100", s.Metric, v)
	}
	s.Threshold = f
	return nil
}

// CheckSLO checks every SLO against the report, records the results in
// r.SLO and returns whether all held. A term whose metric has no data in
// the run fails with a note: an SLO never passes vacuously.
func (r *Report) CheckSLO(slos []SLO) (ok bool) {
	r.SLO = nil
	ok = true
	for _, s := range slos {
		res := SLOResult{Expr: s.Expr, Metric: s.Metric, Threshold: s.Threshold}
		v, note := r.sloValue(s, &res)
		if note != "" {
			res.Note = note
		} else {
			res.Value = v
			res.OK = compare(v, s.Op, s.Threshold)
		}
		ok = ok && res.OK
		r.SLO = append(r.SLO, res)
	}
	return ok
}

func compare(v float64, op string, t float64) bool {
	switch op {
	case "<":
		return v < t
	case "<=":
		return v <= t
	case ">":
		return v > t
	case ">=":
		return v >= t
	case "=":
		return v == t
	}
	return false
}

// sloValue returns the run's value of s's metric, setting res's Metric
// and Unit, or a note saying why the run has none.
func (r *Report) sloValue(s SLO, res *SLOResult) (v float64, note string) {
	if s.pct != "" {
		hist := s.hist
		if hist == "" {
			hist = primaryHist(r.Scenario)
		}
		res.Metric, res.Unit = hist+"."+s.pct, "ms"
		p, ok := r.Metrics[hist]
		if !ok || p.Count == 0 {
			return 0, fmt.Sprintf("no data: histogram %s has no samples", hist)
		}
		return pctOf(p, s.pct), ""
	}
	if s.Percent {
		res.Unit = "%"
	}
	c := r.Counters
	_, booked := c[CountExpected]
	expected := c[CountExpected]
	switch s.Metric {
	case "loss", "dup", "reorder":
		if !booked {
			return 0, "no data: the scenario recorded no delivery counts (" + CountExpected + ")"
		}
		n := c[CountLost]
		if s.Metric == "dup" {
			n = c[CountDup]
		} else if s.Metric == "reorder" {
			n = c[CountReordered]
		}
		if !s.Percent {
			return float64(n), ""
		}
		if expected == 0 {
			return 0, "no data: no messages were expected"
		}
		return 100 * float64(n) / float64(expected), ""
	case "delivery":
		if !booked || expected == 0 {
			return 0, "no data: no messages were expected"
		}
		return 100 * float64(c[CountReceived]) / float64(expected), ""
	case "errors":
		errs, connErrs := errorCounts(c)
		attempted := c[CountConnOK] + connErrs + c[CountSent]
		if attempted == 0 {
			return 0, "no data: nothing was attempted"
		}
		if !s.Percent {
			return float64(errs), ""
		}
		return 100 * float64(errs) / float64(attempted), ""
	case "rate":
		res.Unit = "/s"
		return r.achievedRate()
	case "conns":
		open, target, ok := peakConns(r.Timeline)
		switch {
		case !ok:
			return 0, "no data: no " + GaugeOpen + " readings in the timeline"
		case !s.Percent:
			return float64(open), ""
		case target == 0:
			return 0, "no data: the connection target was 0"
		}
		return 100 * float64(open) / float64(target), ""
	}
	return 0, "unknown metric" // ParseSLO lets none through
}

// achievedRate is the scenario's achieved rate: acked messages (chat,
// group) or publishes (fanout) per second, or connections per second
// (connect: the last step that met its target; idle: the set-up's rate).
// Presence and storm have none.
func (r *Report) achievedRate() (float64, string) {
	switch {
	case r.Scenario == "chat" && r.Chat != nil:
		return r.Chat.AchievedRate, ""
	case r.Scenario == "group" && r.Group != nil:
		return r.Group.AchievedRate, ""
	case r.Scenario == "fanout" && r.Fanout != nil:
		return r.Fanout.AchievedRate, ""
	case r.Scenario == "connect" && len(r.Steps) > 0:
		return r.LastMet, ""
	case r.Scenario == "idle" && r.Connect != nil:
		return r.Connect.AchievedRate, ""
	}
	return 0, fmt.Sprintf("no data: no achieved rate for scenario %s", r.Scenario)
}

// errorCounts sums the error counters (isErrorCounter); connErrs is the
// connect errors alone.
func errorCounts(c map[string]int64) (errs, connErrs int64) {
	for k, v := range c {
		if isErrorCounter(k) {
			errs += v
		}
		if strings.HasPrefix(k, PrefixConnErr) {
			connErrs += v
		}
	}
	return errs, connErrs
}

// peakConns returns the most connections open at an interval's end and
// the most targeted; ok is false without any reading.
func peakConns(tl []Interval) (open, target int64, ok bool) {
	for _, iv := range tl {
		if v, has := iv.Gauges[GaugeOpen]; has {
			open, ok = max(open, v), true
		}
		target = max(target, iv.Gauges[GaugeTarget])
	}
	return open, target, ok
}

// pctOf returns the named value (one of sloPercentiles) of p.
func pctOf(p Percentiles, name string) float64 {
	switch name {
	case "p50":
		return p.P50
	case "p90":
		return p.P90
	case "p99":
		return p.P99
	case "p99.9":
		return p.P999
	case "p99.99":
		return p.P9999
	case "max":
		return p.Max
	case "mean":
		return p.Mean
	case "min":
		return p.Min
	}
	return math.NaN()
}

// sortedHists returns the names of the report's histograms, the
// scenario's primary one first, then by name.
func (r *Report) sortedHists() []string {
	return primaryFirst(slices.Sorted(maps.Keys(r.Metrics)), r.Scenario)
}

// primaryFirst moves the scenario's primary histogram, if present, to the
// front of names.
func primaryFirst(names []string, scenario string) []string {
	if i := slices.Index(names, primaryHist(scenario)); i > 0 {
		p := names[i]
		copy(names[1:i+1], names[:i])
		names[0] = p
	}
	return names
}
