package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/parley-im/parley/loadtest"
)

// Exit codes of `parley loadtest`.
const (
	exitOK        = 0 // the run finished and every --slo held
	exitFailed    = 1 // the run failed, or a report could not be written
	exitUsage     = 2 // bad flags or --slo; nothing was run
	exitSLOMissed = 3 // the run finished but an --slo did not hold
)

const loadtestUsage = `usage: parley loadtest [flags]
       parley loadtest agent|coordinator [flags]

Generates load against a running server and reports what it measured: a
summary on stdout, one progress line per second on stderr, and optionally
a JSON report (--json), a self-contained HTML report (--html) and a live
Prometheus endpoint (--prom-listen). docs/loadtest.md is the guide.

--slo takes comma-separated thresholds, e.g.
  --slo 'p99<20ms,ack.p99.9<50ms,loss=0,errors<0.1%,delivery>=99.9%,rate>=900'
Bare percentiles (p50 p90 p99 p99.9 p99.99 max mean) are of the scenario's
primary histogram (chat, group: e2e; fanout: fanout_last; others: connect).
A threshold on a metric the run has no data for fails.

Exit codes:
  0  the run finished and every --slo held
  1  the run failed, or a report could not be written
  2  bad usage (flags, --slo); nothing was run
  3  the run finished but an --slo did not hold

Flags:
`

// loadtestCmd runs the load generator against a running server, or, with
// "agent" or "coordinator" first, one side of a distributed run.
func loadtestCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "agent":
			return loadtestAgentCmd(args[1:], stdout, stderr)
		case "coordinator":
			return loadtestCoordinatorCmd(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), loadtestUsage)
		fs.PrintDefaults()
	}
	lf := addLoadtestFlags(fs) // --slo is among them: --search uses it too
	jsonOut := fs.String("json", "", "write the JSON report to this file")
	htmlOut := fs.String("html", "", "write the HTML report (one self-contained file) to this file")
	promListen := fs.String("prom-listen", "", "serve live metrics for Prometheus at http://ADDR/metrics while running, e.g. 127.0.0.1:9400 (empty: off)")
	progress := fs.Bool("progress", true, "print one progress line per second on stderr")
	quiet := fs.Bool("quiet", false, "no progress or log lines on stderr")
	if err := parseWithEnv(fs, args); err != nil {
		return exitUsage
	}
	cfg, err := lf.config() // reads --scenario-file, which may set --slo
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest: %v\n", err)
		return exitUsage
	}
	slos, err := loadtest.ParseSLO(*lf.slo)
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest: --slo: %v\n", err)
		return exitUsage
	}
	cfg.Log = stderr
	if *quiet {
		cfg.Log = nil
	}
	if spec, ok := lf.search(); ok {
		if *htmlOut != "" || *promListen != "" {
			fmt.Fprintln(stderr, "parley loadtest: --html and --prom-listen do not work with --search")
			return exitUsage
		}
		return loadtestSearch(cfg, *spec, *jsonOut, stdout, stderr)
	}
	out := runOutput{cmd: "parley loadtest", stdout: stdout, stderr: stderr, jsonFile: *jsonOut, htmlFile: *htmlOut, slos: slos}
	stopProm, ok := out.record(&cfg, *promListen, *progress, *quiet)
	if !ok {
		return exitFailed
	}
	defer stopProm()

	ctx, stop := runContext()
	defer stop()
	rep, err := loadtest.Run(ctx, cfg)
	return out.finish(rep, err, nil)
}

// loadtestSearch runs a breaking-point search. Finding the breaking point
// is its purpose, so a step that breaks the SLO does not make it fail.
func loadtestSearch(cfg loadtest.Config, spec loadtest.SearchSpec, jsonFile string, stdout, stderr io.Writer) int {
	ctx, stop := runContext()
	defer stop()
	sr, err := loadtest.Search(ctx, cfg, spec)
	if sr == nil {
		fmt.Fprintf(stderr, "parley loadtest: %v\n", err)
		return exitUsage // the search could not start: its settings
	}
	sr.WriteSummary(stdout)
	if jerr := writeJSON(jsonFile, sr); jerr != nil {
		fmt.Fprintf(stderr, "parley loadtest: %v\n", jerr)
		return exitFailed
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// runContext returns the context a run goes by, which ends on SIGINT or
// SIGTERM, and has the run's reports carry this binary's version.
func runContext() (context.Context, context.CancelFunc) {
	loadtest.Version = version
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// runOutput is where a run's results go besides the log: the summary on
// stdout, the SLO verdict, the report files. loadtest, its coordinator
// and the agent share it.
type runOutput struct {
	cmd                string // what messages start with: "parley loadtest", ...
	stdout, stderr     io.Writer
	jsonFile, htmlFile string         // "" for none
	slos               []loadtest.SLO // checked against the report; none for an agent
}

// record gives cfg a recorder, with the progress line on stderr if
// progress and not quiet, and the Prometheus endpoint at promListen
// unless it is empty. It reports false, having said why, if the endpoint
// cannot listen; else the caller calls stop after the run.
func (o runOutput) record(cfg *loadtest.Config, promListen string, progress, quiet bool) (stop func(), ok bool) {
	cfg.Recorder = loadtest.NewRecorder(time.Now())
	if progress && !quiet {
		cfg.Recorder.OnTick(loadtest.NewProgress(o.stderr, cfg.Recorder, cfg.Scenario))
	}
	if promListen == "" {
		return func() {}, true
	}
	stop, addr, err := loadtest.ServePrometheus(promListen, cfg.Recorder)
	if err != nil {
		fmt.Fprintf(o.stderr, "%s: --prom-listen: %v\n", o.cmd, err)
		return nil, false
	}
	if !quiet {
		fmt.Fprintf(o.stderr, "%s: metrics at http://%s/metrics\n", o.cmd, addr)
	}
	return stop, true
}

// finish checks the SLOs against rep (nil if the run did not get as far
// as a report), prints its summary and then more's lines (if more is not
// nil), writes the report files, and returns the exit code of the run
// that ended with rep and err.
func (o runOutput) finish(rep *loadtest.Report, err error, more func(io.Writer, *loadtest.Report)) int {
	sloOK := true
	if rep != nil {
		sloOK = rep.CheckSLO(o.slos)
		rep.WriteSummary(o.stdout)
		if more != nil {
			more(o.stdout, rep)
		}
		if werr := writeReports(rep, o.jsonFile, o.htmlFile); werr != nil {
			fmt.Fprintf(o.stderr, "%s: %v\n", o.cmd, werr)
			return exitFailed
		}
	}
	switch {
	case err != nil:
		fmt.Fprintf(o.stderr, "%s: %v\n", o.cmd, err)
		return exitFailed
	case !sloOK:
		fmt.Fprintf(o.stderr, "%s: an SLO did not hold\n", o.cmd)
		return exitSLOMissed
	}
	return exitOK
}

// writeReports writes the JSON and HTML reports to the files named (none
// for an empty name).
func writeReports(rep *loadtest.Report, jsonFile, htmlFile string) error {
	if err := writeJSON(jsonFile, rep); err != nil {
		return err
	}
	if htmlFile != "" {
		var b bytes.Buffer
		err := loadtest.WriteHTML(&b, rep)
		if err == nil {
			err = os.WriteFile(htmlFile, b.Bytes(), 0o644)
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", htmlFile, err)
		}
	}
	return nil
}

// writeJSON writes v as indented JSON to file (nothing for an empty name).
func writeJSON(file string, v any) error {
	if file == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err == nil {
		err = os.WriteFile(file, append(b, '\n'), 0o644)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	return nil
}
