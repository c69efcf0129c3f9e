package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/loadtest"
)

// loadtestFlags are the flags that describe a run, shared by loadtest and
// its coordinator. --scenario-file sets the flags the command line does
// not (its keys mirror the flags).
type loadtestFlags struct {
	fs *flag.FlagSet

	url, dataDir, key, tokensFile, scenario, steps, srcAddrs, serverPIDs *string
	arrival, msgArrival, model, client, placement                        *string
	conns, inflight, groupSize, bodySize                                 *int
	rate, connectRate, churnRate, killPercent                            *float64
	stepDur, duration, warmup, settle, ramp, think                       *time.Duration
	seed                                                                 *int64

	scenarioFile, slo, searchParam                   *string
	searchStart, searchFactor, searchStep, searchMax *float64
	searchMaxSteps                                   *int
	searchPause                                      *time.Duration
	fileRead                                         bool // scenarioFile applied
}

func addLoadtestFlags(fs *flag.FlagSet) *loadtestFlags {
	return &loadtestFlags{
		fs:             fs,
		scenarioFile:   fs.String("scenario-file", "", "YAML file of the run's settings, keys as the flags' names with _ (connect_rate: 500, duration: 30s, urls: [...], slo, search: {param, start, factor, step, max, max_steps, pause}); flags given on the command line override it"),
		slo:            fs.String("slo", "", "service level objectives, e.g. p99<20ms,errors=0,delivery>=99.9%; with --search, what every step must meet"),
		searchParam:    fs.String("search", "", "breaking-point search: raise conns or rate step by step until a step breaks --slo, then report the last good value"),
		searchStart:    fs.Float64("search-start", 0, "search: first value (default: --conns or --rate)"),
		searchFactor:   fs.Float64("search-factor", 0, "search: multiply the value by this each step (default 1.5)"),
		searchStep:     fs.Float64("search-step", 0, "search: add this to the value each step, instead of --search-factor"),
		searchMax:      fs.Float64("search-max", 0, "search: highest value to try (0: no bound but --search-max-steps)"),
		searchMaxSteps: fs.Int("search-max-steps", 10, "search: most steps to run (at most 100)"),
		searchPause:    fs.Duration("search-pause", 2*time.Second, "search: pause between steps while the server closes the previous step's connections"),
		url:            fs.String("url", "ws://127.0.0.1:8080", "server base URL; a comma-separated list of a cluster's gateways spreads the connections round robin (connection i on URL i mod n; chat: see --placement; fanout: publisher on the first)"),
		dataDir:        fs.String("data-dir", "./data", "the server's data directory, for its dev signing key (tokens are minted with it)"),
		key:            fs.String("key-file", "", "file holding the HS256 signing key the server accepts (instead of the data directory's dev key)"),
		tokensFile:     fs.String("tokens-file", "", "file of JWTs, one per line, used instead of minting tokens"),
		scenario:       fs.String("scenario", "idle", strings.Join(loadtest.Scenarios, ", ")),
		conns:          fs.Int("conns", 100, "idle, presence, storm: connections; chat: pairs (two connections each); group: members; fanout: subscribers (plus one publisher)"),
		rate:           fs.Float64("rate", 0, "idle: connect rate (conn/s, default 1000); chat, group: messages/s over all senders (default 1000); fanout: publishes/s (default 10)"),
		connectRate:    fs.Float64("connect-rate", 1000, "connect rate while setting up (conn/s)"),
		arrival:        fs.String("arrival", "constant", "connection arrivals: constant, poisson or ramp"),
		ramp:           fs.Duration("ramp", 10*time.Second, "arrival ramp: time to reach the connect rate"),
		msgArrival:     fs.String("msg-arrival", "constant", "message arrivals: constant or poisson"),
		model:          fs.String("model", "open", "open (scheduled sends, latency from the intended time) or closed (each sender waits for its ack)"),
		think:          fs.Duration("think", 0, "closed model: pause between an ack and the next send"),
		steps:          fs.String("steps", "1000,2000,4000,8000,12000", "connect: target conn/s of each step"),
		stepDur:        fs.Duration("step-duration", 3*time.Second, "connect: length of each step"),
		duration:       fs.Duration("duration", 10*time.Second, "idle: hold time after connecting; others: measured time after warm-up"),
		warmup:         fs.Duration("warmup", 2*time.Second, "unmeasured lead-in"),
		settle:         fs.Duration("settle", 3*time.Second, "idle: pause after the last connect before reading memory"),
		groupSize:      fs.Int("group-size", 10, "group: members per group"),
		bodySize:       fs.Int("body-size", 0, "chat, group: pad message bodies to this many bytes"),
		churnRate:      fs.Float64("churn-rate", 0, "presence: connections dropped and reopened per second (default 10% of --conns)"),
		killPercent:    fs.Float64("kill-percent", 50, "storm: share of connections cut at once"),
		placement:      fs.String("placement", "", "chat with several --url: cross (default: a pair's sender and receiver on different gateways) or same (both on one)"),
		client:         fs.String("client", "", "lean (epoll, no goroutine per socket; default for idle, connect and fanout's subscribers on ws:// URLs) or full"),
		srcAddrs:       fs.String("source-addrs", "", "local addresses to dial from, e.g. 127.0.0.2-127.0.0.50 (empty: kernel's choice)"),
		serverPIDs:     fs.String("server-pid", "", "server process id(s), comma-separated, to read their VmRSS and CPU use"),
		seed:           fs.Int64("seed", 0, "makes users, conversations, payloads and jitter reproducible (0: time based)"),
		inflight:       fs.Int("max-inflight", 2000, "connection attempts in flight at most"),
	}
}

// config turns the flags, with --scenario-file's settings, into a
// loadtest.Config (without Log).
func (f *loadtestFlags) config() (loadtest.Config, error) {
	if err := f.readScenarioFile(); err != nil {
		return loadtest.Config{}, err
	}
	cfg := loadtest.Config{
		Scenario: *f.scenario, Conns: *f.conns, ConnectRate: *f.connectRate,
		Arrival: *f.arrival, Ramp: *f.ramp, MsgArrival: *f.msgArrival, Model: *f.model, Think: *f.think,
		StepDuration: *f.stepDur, Duration: *f.duration, Warmup: *f.warmup, Settle: *f.settle,
		GroupSize: *f.groupSize, BodySize: *f.bodySize, ChurnRate: *f.churnRate, KillPercent: *f.killPercent,
		Client: *f.client, Placement: *f.placement, TokensFile: *f.tokensFile, Seed: *f.seed, MaxInFlight: *f.inflight,
	}
	for _, u := range strings.Split(*f.url, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.URLs = append(cfg.URLs, u)
		}
	}
	if len(cfg.URLs) == 0 {
		return cfg, fmt.Errorf("bad --url %q: no URL", *f.url)
	}
	cfg.URL = cfg.URLs[0]
	if cfg.Placement != "" && !slices.Contains(loadtest.Placements, cfg.Placement) {
		return cfg, fmt.Errorf("bad --placement %q: want %s", cfg.Placement, strings.Join(loadtest.Placements, " or "))
	}
	if cfg.TokensFile == "" {
		var err error
		if *f.key != "" {
			cfg.Key, err = os.ReadFile(*f.key)
			cfg.Key = []byte(strings.TrimSpace(string(cfg.Key)))
		} else {
			cfg.Key, err = auth.LoadDevKey(*f.dataDir)
		}
		if err != nil {
			return cfg, err
		}
	}
	if *f.warmup == 0 {
		cfg.Warmup = -1
	}
	if *f.settle == 0 {
		cfg.Settle = -1
	}
	if *f.rate > 0 {
		if cfg.Scenario == "idle" {
			cfg.ConnectRate = *f.rate
		} else {
			cfg.Rate = *f.rate
		}
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().Unix()
	}
	for _, s := range strings.Split(*f.steps, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			return cfg, fmt.Errorf("bad --steps value %q", s)
		}
		cfg.Steps = append(cfg.Steps, v)
	}
	for _, s := range strings.Split(*f.serverPIDs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		pid, err := strconv.Atoi(s)
		if err != nil || pid <= 0 {
			return cfg, fmt.Errorf("bad --server-pid value %q", s)
		}
		cfg.ServerPIDs = append(cfg.ServerPIDs, pid)
	}
	if len(cfg.ServerPIDs) > 0 {
		cfg.ServerPID = cfg.ServerPIDs[0]
	}
	if *f.srcAddrs != "" {
		var err error
		if cfg.SourceAddrs, err = loadtest.ParseAddrRange(*f.srcAddrs); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// readScenarioFile sets, once, the flags --scenario-file sets that the
// command line did not.
func (f *loadtestFlags) readScenarioFile() error {
	if *f.scenarioFile == "" || f.fileRead {
		return nil
	}
	f.fileRead = true
	sf, err := loadtest.ReadScenarioFile(*f.scenarioFile)
	if err != nil {
		return err
	}
	given := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	// A search step on the command line replaces the file's factor, and
	// the reverse: a search has one or the other.
	if given["search-step"] {
		given["search-factor"] = true
	}
	if given["search-factor"] {
		given["search-step"] = true
	}
	for _, s := range sf.Settings() {
		name := strings.ReplaceAll(s.Key, "_", "-")
		if given[name] {
			continue
		}
		if f.fs.Lookup(name) == nil {
			return fmt.Errorf("%s:%d: %s: no such flag", *f.scenarioFile, s.Line, s.Key)
		}
		if err := f.fs.Set(name, s.Value); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", *f.scenarioFile, s.Line, s.Key, err)
		}
	}
	return nil
}

// search returns the breaking-point search --search (or the scenario
// file's search key) asks for, and false without one. Call it after
// config, which reads the scenario file.
func (f *loadtestFlags) search() (*loadtest.SearchSpec, bool) {
	if *f.searchParam == "" {
		return nil, false
	}
	pause := *f.searchPause
	if pause == 0 {
		pause = -1 // none
	}
	return &loadtest.SearchSpec{
		Param: *f.searchParam, Start: *f.searchStart, Factor: *f.searchFactor, Step: *f.searchStep,
		Max: *f.searchMax, MaxSteps: *f.searchMaxSteps, SLO: *f.slo, Pause: pause,
	}, true
}
