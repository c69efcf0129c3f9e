package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/parley-im/parley/loadtest"
)

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
	lf := addLoadtestFlags(fs)
	jsonOut := fs.String("json", "", "write the JSON report to this file")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := parseWithEnv(fs, args); err != nil {
		return 2
	}
	cfg, err := lf.config()
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest: %v\n", err)
		return 2
	}
	cfg.Log = stderr
	if *quiet {
		cfg.Log = nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	loadtest.Version = version
	rep, err := loadtest.Run(ctx, cfg)
	if rep != nil {
		rep.WriteSummary(stdout)
		if *jsonOut != "" {
			b, jerr := json.MarshalIndent(rep, "", "  ")
			if jerr == nil {
				jerr = os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
			}
			if jerr != nil {
				fmt.Fprintf(stderr, "parley loadtest: writing %s: %v\n", *jsonOut, jerr)
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest: %v\n", err)
		return 1
	}
	return 0
}

