package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/parley-im/parley/loadtest"
)

const coordinatorUsage = `usage: parley loadtest coordinator --agents N [--listen ADDR] [run flags]

Runs a load test split over N agents ('parley loadtest agent'), each its
own process (one process holds about 19,000 sockets): it waits for the
agents to register, starts them together, merges their per-second
histograms as they stream in, and prints the merged summary. The run
flags are those of 'parley loadtest'; the agents get them, signing key
included, over plain HTTP: listen on loopback or a trusted LAN.

Flags:
`

const agentUsage = `usage: parley loadtest agent [--coordinator URL] [--source-addrs RANGE]

Runs one agent of a distributed load test: registers with the coordinator,
runs its share of the run the coordinator hands out, streams its
per-second histograms back and sends its report at the end.

Flags:
`

// loadtestCoordinatorCmd runs the coordinator of a distributed load test.
func loadtestCoordinatorCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), coordinatorUsage)
		fs.PrintDefaults()
	}
	lf := addLoadtestFlags(fs)
	listen := fs.String("listen", "127.0.0.1:7070", "address the agents reach the coordinator on (loopback, or a trusted LAN)")
	agents := fs.Int("agents", 0, "number of agents the run takes (required)")
	startDelay := fs.Duration("start-delay", 3*time.Second, "time from the last agent's registration to the common start")
	registerTimeout := fs.Duration("register-timeout", 2*time.Minute, "give up if not every agent has registered by then")
	agentTimeout := fs.Duration("agent-timeout", 15*time.Second, "give up on an agent silent this long during the run")
	jsonOut := fs.String("json", "", "write the merged JSON report (with each agent's) to this file")
	htmlOut := fs.String("html", "", "write the merged HTML report to this file")
	promListen := fs.String("prom-listen", "", "serve the merged live metrics for Prometheus at http://ADDR/metrics (empty: off)")
	progress := fs.Bool("progress", true, "print one merged progress line per second on stderr")
	quiet := fs.Bool("quiet", false, "no progress or log lines on stderr")
	if err := parseWithEnv(fs, args); err != nil {
		return exitUsage
	}
	if *agents < 1 {
		fmt.Fprintln(stderr, "parley loadtest coordinator: --agents is required")
		return exitUsage
	}
	cfg, err := lf.config()
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest coordinator: %v\n", err)
		return exitUsage
	}
	if _, ok := lf.search(); ok {
		fmt.Fprintln(stderr, "parley loadtest coordinator: --search does not run distributed")
		return exitUsage
	}
	slos, err := loadtest.ParseSLO(*lf.slo)
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest coordinator: --slo: %v\n", err)
		return exitUsage
	}
	var log io.Writer = stderr
	if *quiet {
		log = nil
	}
	out := runOutput{cmd: "parley loadtest coordinator", stdout: stdout, stderr: stderr, jsonFile: *jsonOut, htmlFile: *htmlOut, slos: slos}
	stopProm, ok := out.record(&cfg, *promListen, *progress, *quiet)
	if !ok {
		return exitFailed
	}
	defer stopProm()

	ctx, stop := runContext()
	defer stop()
	rep, err := loadtest.RunCoordinator(ctx, loadtest.CoordinatorConfig{
		Listen: *listen, Agents: *agents, Config: cfg,
		StartDelay: *startDelay, RegisterTimeout: *registerTimeout, AgentTimeout: *agentTimeout, Log: log,
	})
	return out.finish(rep, err, writeAgentLines)
}

// writeAgentLines writes one line per agent under the merged summary.
func writeAgentLines(w io.Writer, rep *loadtest.Report) {
	for i, a := range rep.Agents {
		if a == nil {
			fmt.Fprintf(w, "  agent %d: no report\n", i)
			continue
		}
		fmt.Fprintf(w, "  agent %d: %d conns, CPU %.1f s over %.1f s (%.0f%% of %d), %d warnings\n",
			i, a.Conns, a.CPU.Seconds, a.CPU.WallSeconds, 100*a.CPU.Utilization, a.GOMAXPROCS, len(a.Warnings))
	}
}

// loadtestAgentCmd runs one agent of a distributed load test.
func loadtestAgentCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), agentUsage)
		fs.PrintDefaults()
	}
	coord := fs.String("coordinator", "http://127.0.0.1:7070", "the coordinator's URL")
	name := fs.String("name", "", "this agent's name in the coordinator's report (default: the host name)")
	srcAddrs := fs.String("source-addrs", "", "this agent's local addresses to dial from, e.g. 127.0.0.2-127.0.0.20 (empty: the coordinator's --source-addrs)")
	urls := fs.String("url", "", "servers this agent connects to, comma-separated, instead of the coordinator's --url (agents in front of their own gateways)")
	jsonOut := fs.String("json", "", "write this agent's own JSON report to this file")
	progress := fs.Bool("progress", false, "print this agent's progress line every second on stderr")
	quiet := fs.Bool("quiet", false, "no log lines on stderr")
	if err := parseWithEnv(fs, args); err != nil {
		return exitUsage
	}
	ac := loadtest.AgentConfig{Coordinator: *coord, Name: *name, Log: stderr}
	for _, u := range strings.Split(*urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			ac.URLs = append(ac.URLs, u)
		}
	}
	if *quiet {
		ac.Log = nil
	}
	if *progress && !*quiet {
		ac.Progress = stderr
	}
	if *srcAddrs != "" {
		var err error
		if ac.SourceAddrs, err = loadtest.ParseAddrRange(*srcAddrs); err != nil {
			fmt.Fprintf(stderr, "parley loadtest agent: %v\n", err)
			return exitUsage
		}
	}
	ctx, stop := runContext()
	defer stop()
	rep, err := loadtest.RunAgent(ctx, ac)
	out := runOutput{cmd: "parley loadtest agent", stdout: stdout, stderr: stderr, jsonFile: *jsonOut}
	return out.finish(rep, err, nil)
}
