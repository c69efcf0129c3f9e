package loadtest

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ReportVersion is the version of the JSON report's layout. It changes when
// a field changes meaning or goes away; new fields do not change it.
const ReportVersion = 1

// Report is a run's result; it marshals to the versioned JSON report.
type Report struct {
	Version  int    `json:"version"` // ReportVersion
	Tool     string `json:"tool"`    // "parley loadtest" and the build's version
	Scenario string `json:"scenario"`
	URL      string `json:"url"` // the first of URLs
	// URLs are the servers the run connected to, with how many
	// connections each got.
	URLs       []URLConns `json:"urls,omitempty"`
	Start      time.Time  `json:"start"`
	End        time.Time  `json:"end"`
	GOMAXPROCS int        `json:"gomaxprocs"`
	Seed       int64      `json:"seed"`
	Conns      int        `json:"conns"` // connections the scenario opens (chat: 2 per pair)

	// Connect is the set-up of idle and chat connections.
	Connect *ConnectStats `json:"connect,omitempty"`
	// Server and Tester are VmRSS per connection (idle).
	Server *Memory `json:"server_memory,omitempty"`
	Tester *Memory `json:"tester_memory,omitempty"`
	// Dropped counts idle connections that ended during the hold.
	Dropped int `json:"dropped,omitempty"`

	Steps []ConnectStats `json:"steps,omitempty"`
	// LastMet is the highest target rate a step met (connect), 0 if none.
	LastMet float64 `json:"last_met_rate,omitempty"`

	Chat   *ChatStats   `json:"chat,omitempty"`
	Fanout *FanoutStats `json:"fanout,omitempty"`
	// Group, Presence and Storm are the group, presence and reconnect
	// scenarios' results.
	Group    *GroupStats    `json:"group,omitempty"`
	Presence *PresenceStats `json:"presence,omitempty"`
	Storm    *StormStats    `json:"storm,omitempty"`

	// Metrics holds every histogram's distribution over the measured part
	// of the run (HistConnect, HistE2E, ...); Counters every counter's
	// total; Timeline the run second by second.
	Metrics  map[string]Percentiles `json:"metrics"`
	Counters map[string]int64       `json:"counters"`
	Timeline []Interval             `json:"timeline"`
	// Agents holds each agent's own report in a distributed run.
	Agents []*Report `json:"agents,omitempty"`

	CPU      CPU      `json:"tester_cpu"`
	Warnings []string `json:"warnings,omitempty"`
	// SLO holds the --slo thresholds and whether each held.
	SLO []SLOResult `json:"slo,omitempty"`
}

// ConnectStats describes a batch of scheduled connection attempts.
type ConnectStats struct {
	TargetRate   float64           `json:"target_rate"`
	Attempted    int               `json:"attempted"`
	OK           int64             `json:"ok"`
	Errors       map[string]int64  `json:"errors,omitempty"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// AchievedRate is OK / (last success − scheduled start).
	AchievedRate float64 `json:"achieved_rate"`
	// Met: AchievedRate ≥ 95% of the target and errors ≤ 0.1%.
	Met bool `json:"met"`
	// Latency runs from the scheduled arrival to hello (auth included).
	Latency Percentiles `json:"latency"`
}

func connectStats(target float64, n int, res *openResult) ConnectStats {
	s := ConnectStats{
		TargetRate: target,
		Attempted:  n,
		OK:         res.ok.Load(),
		Errors:     res.errs.snapshot(),
		Latency:    res.lat.percentiles(),
	}
	res.samples.Range(func(k, v any) bool {
		if s.ErrorSamples == nil {
			s.ErrorSamples = map[string]string{}
		}
		s.ErrorSamples[k.(string)] = v.(string)
		return true
	})
	if res.elapsed > 0 {
		s.AchievedRate = float64(s.OK) / res.elapsed.Seconds()
	}
	var errs int64
	for _, v := range s.Errors {
		errs += v
	}
	s.Met = s.AchievedRate >= 0.95*target && float64(errs) <= 0.001*float64(n)
	return s
}

// allOpened puts the connect stats of a scenario's n connections, opened
// at rate, in r, and fails unless all of them opened.
func allOpened(r *Report, scenario string, rate float64, n int, res *openResult) error {
	cs := connectStats(rate, n, res)
	r.Connect = &cs
	if int(cs.OK) != n {
		return fmt.Errorf("loadtest: %s: only %d of %d connections opened (%s)", scenario, cs.OK, n, fmtCounts(cs.Errors))
	}
	return nil
}

// ChatStats is the chat scenario's result. Latencies cover messages whose
// intended send time is after the warm-up.
type ChatStats struct {
	Pairs int `json:"pairs"`
	// Placement is Config.Placement, with several URLs.
	Placement    string           `json:"placement,omitempty"`
	TargetRate   float64          `json:"target_rate"`
	AchievedRate float64          `json:"achieved_rate"` // acked messages per second in the measured window
	Sent         int64            `json:"sent"`
	Acked        int64            `json:"acked"`
	SendErrors   map[string]int64 `json:"send_errors,omitempty"`
	Received     int64            `json:"received"`
	Lost         int64            `json:"lost"`       // acked but never received
	Duplicated   int64            `json:"duplicated"` // received more than once
	Reordered    int64            `json:"reordered"`  // received after a later one of the same sender
	Unacked      int64            `json:"unacked"`    // sent, no ack or error by the end
	// LateSends counts sends that left more than 10 ms after their
	// intended time (the load tester or a full socket held them).
	LateSends int64       `json:"late_sends"`
	EndToEnd  Percentiles `json:"end_to_end"`
	Ack       Percentiles `json:"send_to_ack"`
}

// WriteSummary writes a compact human summary.
func (r *Report) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "parley loadtest %s  %s  %d conns  GOMAXPROCS=%d  %s\n", r.Scenario, r.URL, r.Conns, r.GOMAXPROCS, r.End.Sub(r.Start).Round(time.Millisecond))
	if len(r.URLs) > 1 {
		parts := make([]string, len(r.URLs))
		for j, u := range r.URLs {
			parts[j] = fmt.Sprintf("%s %d", u.URL, u.Opened)
		}
		fmt.Fprintf(w, "  connections per URL: %s\n", strings.Join(parts, ", "))
	}
	if r.Connect != nil {
		writeConnect(w, "connect", r.Connect)
	}
	for _, m := range []struct {
		name string
		m    *Memory
	}{{"server", r.Server}, {"tester", r.Tester}} {
		if m.m == nil {
			continue
		}
		if m.m.Unavailable != "" {
			fmt.Fprintf(w, "  %s RSS: unavailable (%s)\n", m.name, m.m.Unavailable)
			continue
		}
		fmt.Fprintf(w, "  %s RSS: %d KiB -> %d KiB over %d conns = %.1f KiB/conn\n", m.name, m.m.BeforeKiB, m.m.AfterKiB, m.m.Conns, m.m.PerConnKiB)
	}
	if r.Scenario == "idle" {
		fmt.Fprintf(w, "  dropped during hold: %d\n", r.Dropped)
	}
	for i := range r.Steps {
		writeConnect(w, fmt.Sprintf("step %.0f/s", r.Steps[i].TargetRate), &r.Steps[i])
	}
	if r.Scenario == "connect" {
		fmt.Fprintf(w, "  last step that met its target: %.0f conn/s\n", r.LastMet)
	}
	if c := r.Chat; c != nil {
		fmt.Fprintf(w, "  chat: %d pairs, target %.0f msg/s, achieved %.0f msg/s; sent %d acked %d received %d; lost %d dup %d reordered %d unacked %d late sends %d\n",
			c.Pairs, c.TargetRate, c.AchievedRate, c.Sent, c.Acked, c.Received, c.Lost, c.Duplicated, c.Reordered, c.Unacked, c.LateSends)
		if c.Placement != "" {
			fmt.Fprintf(w, "  placement: %s (each pair's sender and receiver on %s)\n", c.Placement, map[string]string{"cross": "different gateways", "same": "one gateway"}[c.Placement])
		}
		if len(c.SendErrors) > 0 {
			fmt.Fprintf(w, "  send errors: %s\n", fmtCounts(c.SendErrors))
		}
		writePct(w, "end-to-end", c.EndToEnd)
		writePct(w, "send->ack ", c.Ack)
	}
	if r.Fanout != nil {
		writeFanout(w, r.Fanout)
	}
	if r.Group != nil {
		writeGroup(w, r.Group)
	}
	if r.Presence != nil {
		writePresence(w, r.Presence)
	}
	if r.Storm != nil {
		writeStorm(w, r.Storm)
	}
	r.writeTables(w)
	fmt.Fprintf(w, "  tester CPU: %.1f s over %.1f s wall (%.0f%% of %d CPUs)\n", r.CPU.Seconds, r.CPU.WallSeconds, 100*r.CPU.Utilization, r.GOMAXPROCS)
	for _, s := range r.Warnings {
		fmt.Fprintf(w, "  WARNING: %s\n", s)
	}
	for _, s := range r.SLO {
		fmt.Fprintf(w, "  SLO %-24s %s\n", s.Expr, s.outcome())
	}
}

// writeTables writes every histogram of r.Metrics, the delivery counts and
// the error counters.
func (r *Report) writeTables(w io.Writer) {
	if len(r.Metrics) > 0 {
		fmt.Fprintf(w, "  %-12s %9s %9s %9s %9s %9s %9s %9s\n", "latency ms", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max")
		for _, name := range r.sortedHists() {
			p := r.Metrics[name]
			fmt.Fprintf(w, "  %-12s %9d %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n", name, p.Count, p.P50, p.P90, p.P99, p.P999, p.P9999, p.Max)
		}
	}
	if r.hasDelivery() {
		c := r.Counters
		fmt.Fprintf(w, "  delivery: expected %d received %d lost %d duplicated %d reordered %d\n",
			c[CountExpected], c[CountReceived], c[CountLost], c[CountDup], c[CountReordered])
	}
	if errs := r.errorCounters(); len(errs) > 0 {
		fmt.Fprintf(w, "  errors: %s\n", fmtCounts(errs))
	}
}

// hasDelivery reports whether the run counted deliveries.
func (r *Report) hasDelivery() bool {
	_, expected := r.Counters[CountExpected]
	_, received := r.Counters[CountReceived]
	return expected || received
}

// errorCounters returns the non-zero counters of connect errors, closes
// and send errors.
func (r *Report) errorCounters() map[string]int64 {
	out := map[string]int64{}
	for k, v := range r.Counters {
		if v != 0 && isErrorCounter(k) {
			out[k] = v
		}
	}
	return out
}

// isErrorCounter reports whether the counter counts connect errors,
// connections ended by the server or the network, or error replies.
func isErrorCounter(name string) bool {
	return strings.HasPrefix(name, PrefixConnErr) || strings.HasPrefix(name, PrefixClose) || strings.HasPrefix(name, PrefixSendErr)
}

// outcome is the result in words: "ok: e2e.p99 = 4.2 ms (< 20 ms)".
func (s SLOResult) outcome() string {
	verdict := "FAIL"
	if s.OK {
		verdict = "ok"
	}
	if s.Note != "" {
		return fmt.Sprintf("%s: %s: %s", verdict, s.Metric, s.Note)
	}
	return fmt.Sprintf("%s: %s = %s (threshold %s)", verdict, s.Metric, fmtUnit(s.Value, s.Unit), fmtUnit(s.Threshold, s.Unit))
}

func fmtUnit(v float64, unit string) string {
	switch unit {
	case "":
		return strconv.FormatFloat(v, 'f', -1, 64)
	case "%":
		return strconv.FormatFloat(v, 'g', 4, 64) + "%"
	case "/s":
		return strconv.FormatFloat(v, 'f', 1, 64) + "/s"
	}
	return strconv.FormatFloat(v, 'f', 3, 64) + " " + unit
}

func writeConnect(w io.Writer, name string, s *ConnectStats) {
	met := ""
	if s.TargetRate > 0 {
		met = " (missed)"
		if s.Met {
			met = " (met)"
		}
	}
	fmt.Fprintf(w, "  %s: target %.0f/s, %d/%d ok, achieved %.0f conn/s%s", name, s.TargetRate, s.OK, s.Attempted, s.AchievedRate, met)
	if len(s.Errors) > 0 {
		fmt.Fprintf(w, ", errors %s", fmtCounts(s.Errors))
	}
	fmt.Fprintln(w)
	writePct(w, "  latency", s.Latency)
}

func writePct(w io.Writer, name string, p Percentiles) {
	fmt.Fprintf(w, "  %s ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (n=%d)\n", name, p.P50, p.P90, p.P99, p.P999, p.Max, p.Count)
}

func fmtCounts(m map[string]int64) string {
	s := ""
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if s != "" {
			s += " "
		}
		s += fmt.Sprintf("%s=%d", k, m[k])
	}
	return s
}
