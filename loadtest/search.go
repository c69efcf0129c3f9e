package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// SearchSpec describes a breaking-point search: the scenario runs once at
// Start, then once per step with the parameter raised, until a step breaks
// the SLO.
type SearchSpec struct {
	// Param is what rises: "conns" (Config.Conns) or "rate" (Config.Rate;
	// the connect rate in the idle scenario).
	Param string `json:"param"`
	// Start is the first step's value; 0 means the Config's (Conns,
	// Rate or, in the idle scenario, ConnectRate).
	Start float64 `json:"start"`
	// Factor multiplies the value at each step (e.g. 1.5); Step adds to
	// it instead. At most one may be set; neither means Factor 1.5.
	Factor float64 `json:"factor,omitempty"`
	Step   float64 `json:"step,omitempty"`
	// Max is the highest value tried: a step that would pass it runs at
	// Max instead, and the search ends there. 0 means no bound but
	// MaxSteps.
	Max float64 `json:"max,omitempty"`
	// MaxSteps bounds the steps. Default 10, at most 100.
	MaxSteps int `json:"max_steps"`
	// SLO is what every step must meet, in --slo's syntax (ParseSLO);
	// required.
	SLO string `json:"slo"`
	// Pause is the wait between steps, while the server closes the
	// previous step's connections. Default 2 s; negative means none.
	Pause time.Duration `json:"-"`
}

// Search defaults and bounds.
const (
	defaultSearchFactor = 1.5
	defaultSearchSteps  = 10
	maxSearchSteps      = 100
	defaultSearchPause  = 2 * time.Second
)

// SearchParams are the parameters a search may raise.
var SearchParams = []string{"conns", "rate"}

// check validates the spec and fills in its defaults, and returns its
// parsed SLO.
func (s *SearchSpec) check(scenario string) ([]SLO, error) {
	if !slices.Contains(SearchParams, s.Param) {
		return nil, fmt.Errorf("loadtest: search: parameter %q: want conns or rate", s.Param)
	}
	if scenario == "connect" {
		return nil, errors.New("loadtest: search: the connect scenario is a search of its own (Steps); search the idle scenario's rate instead")
	}
	if !(s.Start > 0) {
		return nil, fmt.Errorf("loadtest: search: start %v: want a positive value", s.Start)
	}
	switch {
	case s.Factor != 0 && s.Step != 0:
		return nil, errors.New("loadtest: search: set a factor or a step, not both")
	case s.Factor == 0 && s.Step == 0:
		s.Factor = defaultSearchFactor
	case s.Step == 0 && !(s.Factor > 1):
		return nil, fmt.Errorf("loadtest: search: factor %v: want more than 1", s.Factor)
	case s.Factor == 0 && !(s.Step > 0):
		return nil, fmt.Errorf("loadtest: search: step %v: want a positive value", s.Step)
	}
	if s.Max != 0 && !(s.Max >= s.Start) {
		return nil, fmt.Errorf("loadtest: search: max %v is below start %v", s.Max, s.Start)
	}
	if s.MaxSteps == 0 {
		s.MaxSteps = defaultSearchSteps
	}
	if s.MaxSteps < 0 || s.MaxSteps > maxSearchSteps {
		return nil, fmt.Errorf("loadtest: search: max steps %d: want 1 to %d", s.MaxSteps, maxSearchSteps)
	}
	if s.Pause == 0 {
		s.Pause = defaultSearchPause
	}
	if strings.TrimSpace(s.SLO) == "" {
		return nil, errors.New("loadtest: search: an SLO is required (what would break?)")
	}
	return ParseSLO(s.SLO)
}

// next returns the value after v, and false when the search is over
// because v reached Max.
func (s *SearchSpec) next(v float64) (float64, bool) {
	if s.Max > 0 && v >= s.Max {
		return 0, false
	}
	n := v + s.Step
	if s.Step == 0 {
		n = v * s.Factor
	}
	if s.Param == "conns" {
		n = max(math.Round(n), v+1)
	}
	if s.Max > 0 && n > s.Max {
		n = s.Max
	}
	return n, true
}

// SearchStep is one step of a search.
type SearchStep struct {
	Step  int     `json:"step"` // from 1
	Value float64 `json:"value"`
	// Primary is the scenario's primary latency histogram (chat: e2e),
	// P50 and P99 its percentiles in milliseconds.
	Primary string  `json:"primary"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	// Errors counts connect, close and send errors.
	Errors int64 `json:"errors"`
	// Delivery is the percentage of expected deliveries received; nil
	// when the scenario books none.
	Delivery     *float64 `json:"delivery_pct,omitempty"`
	AchievedRate float64  `json:"achieved_rate"`
	// OK is whether the step met the SLO; Failed lists the terms it broke
	// (with the value), Err the run's error (which fails the step too).
	OK     bool     `json:"ok"`
	Failed []string `json:"failed,omitempty"`
	Err    string   `json:"error,omitempty"`
	// Report is the step's full report, SLO results included.
	Report *Report `json:"report,omitempty"`
}

// SearchReport is a search's result.
type SearchReport struct {
	Scenario string       `json:"scenario"`
	Search   SearchSpec   `json:"search"`
	Start    time.Time    `json:"start"`
	End      time.Time    `json:"end"`
	Steps    []SearchStep `json:"steps"`
	// LastGood is the last value that met the SLO, 0 if the first step
	// broke it already.
	LastGood float64 `json:"last_good"`
	// Broke tells whether a step broke the SLO; if not, the breaking point
	// lies beyond the last step.
	Broke bool `json:"broke"`
	// Stopped says why the search ended: "slo" (a step broke it), "max"
	// (the value reached Max), "max_steps", "cancelled" or "error" (a
	// step could not run, e.g. more connections than the open-file limit).
	Stopped string `json:"stopped"`
}

// Search raises spec.Param from spec.Start step by step, running cfg's
// scenario at each value, until a step breaks spec.SLO (a failed run
// breaks it too), the value reaches spec.Max or spec.MaxSteps have run.
// Each step has a fresh Recorder (cfg.Recorder is not used) and seed
// cfg.Seed+i, so that its users differ from the previous step's. The
// report holds every step. A nil report means the settings are wrong and
// nothing ran; an error with a report that ctx ended or a step could not
// run.
func Search(ctx context.Context, cfg Config, spec SearchSpec) (*SearchReport, error) {
	if spec.Start == 0 { // from the configured value
		switch {
		case spec.Param == "conns":
			spec.Start = float64(cfg.Conns)
		case cfg.Scenario == "idle":
			spec.Start = cfg.ConnectRate
		default:
			spec.Start = cfg.Rate
		}
	}
	slos, err := spec.check(cfg.Scenario)
	if err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	sr := &SearchReport{Scenario: cfg.Scenario, Search: spec, Start: time.Now().UTC(), Stopped: "max_steps"}
	defer func() { sr.End = time.Now().UTC() }()
	v := spec.Start
	for i := 0; i < spec.MaxSteps; i++ {
		if i > 0 {
			var more bool
			if v, more = spec.next(v); !more {
				sr.Stopped = "max"
				break
			}
			logf(&cfg, "search: pausing %v between steps", spec.Pause)
			sleep(ctx, spec.Pause)
		}
		if ctx.Err() != nil {
			sr.Stopped = "cancelled"
			return sr, ctx.Err()
		}
		step := cfg
		step.Recorder = NewRecorder(time.Now())
		step.Seed = cfg.Seed + int64(i)
		switch {
		case spec.Param == "conns":
			step.Conns = int(v)
		case cfg.Scenario == "idle":
			step.ConnectRate = v
		default:
			step.Rate = v
		}
		logf(&cfg, "search: step %d: %s %v", i+1, spec.Param, v)
		rep, err := Run(ctx, step)
		if rep == nil && i == 0 {
			return nil, err // the configuration is wrong: no step can run
		}
		if rep == nil { // this value is wrong, e.g. more connections than open files
			sr.Steps = append(sr.Steps, SearchStep{Step: i + 1, Value: v, Err: err.Error()})
			sr.Stopped = "error"
			return sr, err
		}
		if ctx.Err() != nil {
			sr.Stopped = "cancelled"
			return sr, ctx.Err()
		}
		s := searchStep(i+1, v, rep, rep.CheckSLO(slos), err)
		sr.Steps = append(sr.Steps, s)
		logf(&cfg, "search: step %d: %s %v: %s", i+1, spec.Param, v, s.verdict())
		if !s.OK {
			sr.Broke, sr.Stopped = true, "slo"
			break
		}
		sr.LastGood = v
		if spec.Max > 0 && v >= spec.Max {
			sr.Stopped = "max"
			break
		}
	}
	return sr, nil
}

// searchStep summarises one step's report.
func searchStep(n int, v float64, rep *Report, met bool, err error) SearchStep {
	s := SearchStep{Step: n, Value: v, Primary: primaryHist(rep.Scenario), OK: met && err == nil, Report: rep}
	p := rep.Metrics[s.Primary]
	s.P50, s.P99 = p.P50, p.P99
	s.Errors, _ = errorCounts(rep.Counters)
	if exp, ok := rep.Counters[CountExpected]; ok && exp > 0 {
		d := 100 * float64(rep.Counters[CountReceived]) / float64(exp)
		s.Delivery = &d
	}
	s.AchievedRate, _ = rep.achievedRate()
	for _, r := range rep.SLO {
		if r.OK {
			continue
		}
		if r.Note != "" {
			s.Failed = append(s.Failed, fmt.Sprintf("%s (%s)", r.Expr, r.Note))
		} else {
			s.Failed = append(s.Failed, fmt.Sprintf("%s (was %s)", r.Expr, fmtUnit(r.Value, r.Unit)))
		}
	}
	if err != nil {
		s.Err = err.Error()
	}
	return s
}

func (s *SearchStep) verdict() string {
	switch {
	case s.OK:
		return "ok"
	case s.Err != "" && len(s.Failed) == 0:
		return "FAIL: " + s.Err
	case s.Err != "":
		return "FAIL " + strings.Join(s.Failed, ", ") + "; " + s.Err
	}
	return "FAIL " + strings.Join(s.Failed, ", ")
}

// WriteSummary writes the search as a table of steps and its outcome.
func (sr *SearchReport) WriteSummary(w io.Writer) {
	sp := sr.Search
	how := fmt.Sprintf("×%g", sp.Factor)
	if sp.Step != 0 {
		how = fmt.Sprintf("+%g", sp.Step)
	}
	fmt.Fprintf(w, "parley loadtest search  %s  %s from %g, %s per step", sr.Scenario, sp.Param, sp.Start, how)
	if sp.Max > 0 {
		fmt.Fprintf(w, " up to %g", sp.Max)
	}
	fmt.Fprintf(w, "  SLO %q  %s\n", sp.SLO, sr.End.Sub(sr.Start).Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	primary := "latency"
	if len(sr.Steps) > 0 {
		primary = sr.Steps[0].Primary
	}
	fmt.Fprintf(tw, "  step\t%s\t%s p50 ms\t%s p99 ms\terrors\tdelivery\tachieved/s\tresult\n", sp.Param, primary, primary)
	for _, s := range sr.Steps {
		del := "-"
		if s.Delivery != nil {
			del = fmt.Sprintf("%.2f%%", *s.Delivery)
		}
		fmt.Fprintf(tw, "  %d\t%g\t%.3f\t%.3f\t%d\t%s\t%.1f\t%s\n", s.Step, s.Value, s.P50, s.P99, s.Errors, del, s.AchievedRate, s.verdict())
	}
	tw.Flush()
	switch {
	case sr.Broke && len(sr.Steps) == 1:
		fmt.Fprintf(w, "  the first step (%s %g) already broke the SLO: no good value\n", sp.Param, sr.Steps[0].Value)
	case sr.Broke:
		fmt.Fprintf(w, "  last good %s: %g (broke at %g)\n", sp.Param, sr.LastGood, sr.Steps[len(sr.Steps)-1].Value)
	case sr.Stopped == "error" || sr.Stopped == "cancelled":
		fmt.Fprintf(w, "  last good %s: %g; the search ended early (%s)\n", sp.Param, sr.LastGood, sr.Stopped)
	case len(sr.Steps) > 0:
		fmt.Fprintf(w, "  last good %s: %g; the SLO held at every step (stopped: %s), so the breaking point is higher\n", sp.Param, sr.LastGood, sr.Stopped)
	default:
		fmt.Fprintf(w, "  no step ran (stopped: %s)\n", sr.Stopped)
	}
}
