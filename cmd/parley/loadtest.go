package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/loadtest"
)

// loadtestCmd runs the load generator against a running server.
func loadtestCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "ws://127.0.0.1:8080", "server base URL")
	dataDir := fs.String("data-dir", "./data", "the server's data directory, for its dev signing key (tokens are minted with it)")
	scenario := fs.String("scenario", "idle", "idle, connect, chat or fanout")
	conns := fs.Int("conns", 100, "idle: connections; chat: pairs (two connections each); fanout: subscribers (plus one publisher)")
	rate := fs.Float64("rate", 0, "idle: connect rate (conn/s, default 1000); chat: messages/s over all senders (default 1000); fanout: publishes/s (default 10)")
	connectRate := fs.Float64("connect-rate", 1000, "chat, fanout: connect rate while setting up")
	steps := fs.String("steps", "1000,2000,4000,8000,12000", "connect: target conn/s of each step")
	stepDur := fs.Duration("step-duration", 3*time.Second, "connect: length of each step")
	duration := fs.Duration("duration", 10*time.Second, "idle: hold time after connecting; chat, fanout: measured time after warm-up")
	warmup := fs.Duration("warmup", 2*time.Second, "chat, fanout: unmeasured lead-in")
	settle := fs.Duration("settle", 3*time.Second, "idle: pause after the last connect before reading memory")
	srcAddrs := fs.String("source-addrs", "", "local addresses to dial from, e.g. 127.0.0.2-127.0.0.50 (empty: kernel's choice)")
	serverPID := fs.Int("server-pid", 0, "server process id, to read its VmRSS (idle) or its CPU use (fanout)")
	seed := fs.Int64("seed", 0, "user ids include it, so repeated runs use fresh users (0: time based)")
	inflight := fs.Int("max-inflight", 2000, "connection attempts in flight at most")
	jsonOut := fs.String("json", "", "write the JSON report to this file")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := parseWithEnv(fs, args); err != nil {
		return 2
	}
	key, err := auth.LoadOrCreateDevKey(*dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest: %v\n", err)
		return 1
	}
	cfg := loadtest.Config{
		URL: *url, Key: key, Scenario: *scenario, Conns: *conns,
		ConnectRate: *connectRate, StepDuration: *stepDur, Duration: *duration,
		Warmup: *warmup, Settle: *settle, ServerPID: *serverPID, Seed: *seed,
		MaxInFlight: *inflight, Log: stderr,
	}
	if *warmup == 0 {
		cfg.Warmup = -1
	}
	if *settle == 0 {
		cfg.Settle = -1
	}
	switch *scenario {
	case "idle":
		cfg.ConnectRate = *rate
	case "chat", "fanout":
		cfg.Rate = *rate
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().Unix()
	}
	if *quiet {
		cfg.Log = nil
	}
	for _, s := range strings.Split(*steps, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(stderr, "parley loadtest: bad --steps value %q\n", s)
			return 2
		}
		cfg.Steps = append(cfg.Steps, v)
	}
	if *srcAddrs != "" {
		if cfg.SourceAddrs, err = loadtest.ParseAddrRange(*srcAddrs); err != nil {
			fmt.Fprintf(stderr, "parley loadtest: %v\n", err)
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var rep interface{ WriteSummary(io.Writer) }
	if *scenario == "fanout" {
		fr, ferr := loadtest.RunFanout(ctx, cfg)
		if fr != nil {
			rep = fr
		}
		err = ferr
	} else {
		r, rerr := loadtest.Run(ctx, cfg)
		if r != nil {
			rep = r
		}
		err = rerr
	}
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
