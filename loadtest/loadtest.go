package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/loadtest/lean"
	"github.com/parley-im/parley/protocol"
)

// Config describes one run. Zero values mean the documented defaults.
type Config struct {
	URL string // server base URL, e.g. ws://127.0.0.1:8080; required unless URLs is set
	// URLs are several servers (the gateways of a cluster): connection i
	// of a scenario goes to URLs[i mod len(URLs)] (chat: see Placement;
	// fanout's publisher goes to URLs[0]). Empty means URL alone.
	URLs     []string
	Key      []byte // HS256 key the server accepts, to mint tokens; required unless TokensFile is set
	Scenario string // Scenarios lists them; required

	// Conns is the number of connections (idle, presence, storm), of pairs
	// (chat: 2×Conns connections), of group members (group) or of
	// subscribers (fanout: plus one publisher). Default 100.
	Conns int
	// Rate is messages per second over all senders (chat, group; default
	// 1000; storm: default Conns/10) or publishes per second (fanout;
	// default 10). In the closed
	// model it only caps each chat sender at Rate/Conns; 0 (its default)
	// means no cap.
	Rate float64
	// ConnectRate is the scheduled connect rate for setting up
	// connections, connections per second. Default 1000.
	ConnectRate float64
	// Arrival is the connection arrival process (see Schedule): "constant"
	// (default: evenly spaced), "poisson" (exponential gaps with the same
	// mean, drawn from Seed), "ramp" (the rate rises linearly from 0 to
	// ConnectRate over Ramp, default 10 s, then stays) or "steps" (Steps'
	// rates, StepDuration each, the last one going on). Messages follow
	// MsgArrival, "constant" (senders take turns) or "poisson" (each
	// chat sender a Poisson process of Rate/Conns).
	Arrival    string
	MsgArrival string
	Ramp       time.Duration
	// Model is "open" (default: sends leave at scheduled times whatever the
	// replies do, latency counts from the scheduled time) or "closed" (each
	// chat sender waits for its ack or error, at most 10 s, then Think,
	// before its next send; Rate is then not a schedule but a cap, and
	// latency counts from the actual send, so a stall slows the senders
	// down instead of showing: closed-model latencies hide coordinated
	// omission, which is why the model is opt-in).
	Model string
	Think time.Duration
	// Steps are the connect scenario's target rates. Default 1000, 2000,
	// 4000, 8000, 12000.
	Steps []float64
	// StepDuration is each connect step's length. Default 3 s.
	StepDuration time.Duration
	// Duration is how long idle holds its connections after they are all
	// up, and how long the message scenarios measure after Warmup.
	// Default 10 s.
	Duration time.Duration
	// Warmup is the unmeasured lead-in. Default 2 s; negative means none.
	Warmup time.Duration
	// Settle is the pause after the last connect before memory is read
	// (idle). Default 3 s; negative means none.
	Settle time.Duration
	// GroupSize is the members per group (group scenario). Default 10.
	GroupSize int
	// BodySize pads message bodies to this many bytes (chat, group).
	// Default 0: the measurement stamp alone (~30 bytes).
	BodySize int
	// ChurnRate is presence churn: connections dropped and reopened per
	// second (presence; default 10% of Conns per second).
	ChurnRate float64
	// Placement is where chat puts a pair's two ends when there are
	// several URLs: "cross" (the default: pair k's sender on URL k mod n,
	// its receiver on URL (k+1) mod n, so every message crosses the
	// cluster) or "same" (both on URL k mod n). With one URL it changes
	// nothing; the other scenarios ignore it.
	Placement string
	// KillPercent is the share of connections the reconnect storm cuts at
	// once (storm; default 50).
	KillPercent float64
	// Client is "lean" (package lean: epoll, no goroutine per connection,
	// a few hundred bytes each; the default for idle, connect and fanout's
	// subscribers when every URL is ws://) or "full" (package client, one
	// read goroutine each; the other scenarios always use it).
	Client string
	// SourceAddrs are the local addresses to dial from, round robin. Empty
	// means the kernel's choice.
	SourceAddrs []netip.Addr
	// TokensFile, if set, holds one JWT per line (user from its sub
	// claim, device from did), used instead of minting: connection i of a
	// scenario takes the i-th token (blank lines and # comments skipped),
	// and a run that needs more tokens than the file holds fails.
	TokensFile string
	// ServerPID, if set, is the server process whose VmRSS and CPU are
	// read; ServerPIDs several (a cluster on this machine): idle sums
	// their VmRSS, fanout samples the CPU of ServerPID (the first) alone.
	ServerPID  int
	ServerPIDs []int
	// Seed makes user ids, conversation assignment, payloads and jitter
	// reproducible; runs with different seeds use different users.
	Seed int64
	// Agent and Agents split a distributed run: this process is agent
	// Agent (from 0) of Agents and runs its share of connections and
	// senders, with user ids that do not collide with the others'.
	Agent, Agents int
	// StartAt, if set, is when the run's schedule starts (agents start
	// together); connections are opened from then on.
	StartAt time.Time
	// MaxInFlight caps connection attempts in flight. Default 2000.
	MaxInFlight int
	// Recorder, if set, receives the run's measurements (the command
	// serves it to Prometheus and prints live progress from it); nil
	// means a private one.
	Recorder *Recorder
	// Log receives progress lines; nil discards them.
	Log io.Writer

	live *liveConns // set by measured
	// ready, if set, is the agents' barrier (RunAgent sets it): a scenario
	// calls it when its set-up is done and it returns, once every agent's
	// is, the common time the schedule starts.
	ready func(ctx context.Context, phase string) (time.Time, error)
}

// Version is the build's version, for reports (the command sets it).
var Version = "dev"

// Placements are the values Config.Placement accepts ("" is the default).
var Placements = []string{"cross", "same"}

// Scenarios are the scenario names Config.Scenario accepts.
var Scenarios = []string{"idle", "connect", "chat", "group", "fanout", "presence", "storm"}

func (c *Config) defaults() error {
	if len(c.URLs) == 0 && c.URL != "" {
		c.URLs = []string{c.URL}
	}
	if len(c.URLs) == 0 {
		return errors.New("loadtest: URL is required")
	}
	if c.URL == "" {
		c.URL = c.URLs[0]
	}
	if len(c.Key) == 0 && c.TokensFile == "" {
		return errors.New("loadtest: Key or TokensFile is required")
	}
	if c.Agents <= 0 {
		c.Agents = 1
	}
	if c.Agent < 0 || c.Agent >= c.Agents {
		return fmt.Errorf("loadtest: agent %d of %d", c.Agent, c.Agents)
	}
	if c.Arrival == "" {
		c.Arrival = "constant"
	}
	if c.MsgArrival == "" {
		c.MsgArrival = "constant"
	}
	if c.Model == "" {
		c.Model = "open"
	}
	if c.Model != "open" && c.Model != "closed" {
		return fmt.Errorf("loadtest: model %q: want open or closed", c.Model)
	}
	if c.GroupSize <= 0 {
		c.GroupSize = 10
	}
	switch c.Placement {
	case "":
		if len(c.URLs) > 1 && c.Scenario == "chat" {
			c.Placement = "cross"
		}
	case "cross", "same":
	default:
		return fmt.Errorf("loadtest: placement %q: want cross or same", c.Placement)
	}
	if c.ServerPID == 0 && len(c.ServerPIDs) > 0 {
		c.ServerPID = c.ServerPIDs[0]
	}
	if c.KillPercent <= 0 {
		c.KillPercent = 50
	}
	if c.KillPercent > 100 {
		return fmt.Errorf("loadtest: kill percent %v is over 100", c.KillPercent)
	}
	if c.Client == "" {
		c.Client = "full"
		switch c.Scenario {
		case "idle", "connect", "fanout": // fanout: the subscribers; its publisher is a full client
			if plainWS(c.URLs) {
				c.Client = "lean"
			}
		}
	}
	if c.Client != "lean" && c.Client != "full" {
		return fmt.Errorf("loadtest: client %q: want lean or full", c.Client)
	}
	if c.Recorder == nil {
		c.Recorder = NewRecorder(time.Now())
	}
	if !slices.Contains(Scenarios, c.Scenario) {
		return fmt.Errorf("loadtest: scenario %q: want one of %s", c.Scenario, strings.Join(Scenarios, ", "))
	}
	if c.Conns <= 0 {
		c.Conns = 100
	}
	if c.Rate <= 0 && c.Scenario == "fanout" {
		c.Rate = 10
	}
	if c.Rate <= 0 && c.Scenario == "storm" {
		c.Rate = max(1, float64(c.Conns)/10) // background traffic: one message per 10 s per connection
	}
	if c.Rate <= 0 && c.Model == "open" {
		c.Rate = 1000 // the closed model's (chat's) Rate is a cap: 0 is none
	}
	if c.ConnectRate <= 0 {
		c.ConnectRate = 1000
	}
	if len(c.Steps) == 0 {
		c.Steps = []float64{1000, 2000, 4000, 8000, 12000}
	}
	if c.StepDuration <= 0 {
		c.StepDuration = 3 * time.Second
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	} else if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.Settle == 0 {
		c.Settle = 3 * time.Second
	} else if c.Settle < 0 {
		c.Settle = 0
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 2000
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c.checkSchedule()
}

// fdOverhead is the files a run needs besides its connections (binary,
// listeners of an in-process test server, epoll, /proc reads, logs).
const fdOverhead = 64

// ParseAddrRange parses "127.0.0.2-127.0.0.50", a single address or a
// comma-separated list of either into addresses.
func ParseAddrRange(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("loadtest: source address %q: %w", part, err)
		}
		b := a
		if isRange {
			if b, err = netip.ParseAddr(strings.TrimSpace(hi)); err != nil {
				return nil, fmt.Errorf("loadtest: source address %q: %w", part, err)
			}
		}
		if b.Less(a) {
			return nil, fmt.Errorf("loadtest: source range %q is backwards", part)
		}
		for x := a; ; x = x.Next() {
			out = append(out, x)
			if len(out) > 1<<16 {
				return nil, fmt.Errorf("loadtest: source range %q is too large", part)
			}
			if x == b {
				break
			}
		}
	}
	return out, nil
}

// Run runs cfg's scenario until it ends or ctx is cancelled.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	lo, hi := cfg.share(cfg.Conns) // this agent's part; all without agents
	need, conns := hi-lo, hi-lo
	switch cfg.Scenario {
	case "chat":
		need, conns = 2*(hi-lo), 2*(hi-lo)
	case "connect":
		need = cfg.MaxInFlight
	case "fanout": // agent 0 holds the publisher
		need, conns = hi-lo+1, hi-lo+1
		if cfg.Agent > 0 {
			conns--
		}
	case "group": // whole groups per agent
		need, conns = groupConns(&cfg, cfg.GroupSize), groupConns(&cfg, cfg.GroupSize)
	case "presence":
		need, conns = groupConns(&cfg, presenceCircle), groupConns(&cfg, presenceCircle)
	case "storm": // whole pairs per agent
		need, conns = stormConns(&cfg), stormConns(&cfg)
	}
	if err := waitStart(ctx, cfg.StartAt); err != nil {
		return nil, err
	}
	return measured(&cfg, need, conns, func(r *Report) error {
		switch cfg.Scenario {
		case "idle":
			return runIdle(ctx, &cfg, r)
		case "connect":
			return runConnect(ctx, &cfg, r)
		case "chat":
			return runChat(ctx, &cfg, r)
		case "fanout":
			fs, err := runFanout(ctx, &cfg, r)
			r.Fanout = fs
			return err
		case "group":
			gs, err := runGroup(ctx, &cfg, r)
			r.Group = gs
			return err
		case "presence":
			ps, err := runPresence(ctx, &cfg, r)
			r.Presence = ps
			return err
		case "storm":
			ss, err := runStorm(ctx, &cfg, r)
			r.Storm = ss
			return err
		}
		return nil
	})
}

// plainWS reports whether every URL is ws:// (or http://): the lean client
// speaks no TLS.
func plainWS(urls []string) bool {
	for _, u := range urls {
		if !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "http://") {
			return false
		}
	}
	return true
}

// preflightInput describes a run that holds files sockets at once, spread
// round robin over the URLs (chat's placements and fanout's publisher on
// the first URL keep the spread even to within one connection).
func (c *Config) preflightInput(files int) PreflightInput {
	in := PreflightInput{Conns: files, SourceAddrs: c.SourceAddrs, NoPortBind: true}
	n := len(c.URLs)
	for j, raw := range c.URLs {
		if u, err := url.Parse(raw); err == nil {
			share := files / n
			if j < files%n {
				share++
			}
			in.TargetConns = append(in.TargetConns, share)
			port := u.Port()
			switch {
			case port != "":
			case u.Scheme == "wss" || u.Scheme == "https":
				port = "443"
			default:
				port = "80"
			}
			in.Targets = append(in.Targets, net.JoinHostPort(u.Hostname(), port))
		}
	}
	return in
}

// measured runs a scenario that needs files open sockets and reports conns
// connections: it fills in the report's common part around scenario,
// including the tester's own CPU use and the warning when it saturated.
func measured(cfg *Config, files, conns int, scenario func(*Report) error) (*Report, error) {
	if _, _, err := RaiseFileLimit(); err != nil {
		logf(cfg, "could not raise the open-file limit: %v", err)
	}
	if err := Preflight(cfg.preflightInput(files)); err != nil {
		return nil, err
	}
	rec := cfg.Recorder
	cfg.live = newLiveConns(rec, len(cfg.URLs))
	rec.Gauge(GaugeOpen, cfg.live.open)
	rec.Gauge(GaugeTarget, func() int64 { return int64(conns) })
	rec.Run()
	stopSweep := cfg.live.sweepEvery(500 * time.Millisecond)
	r := &Report{
		Tool:       "parley loadtest " + Version,
		Scenario:   cfg.Scenario,
		URL:        cfg.URL,
		Start:      time.Now().UTC(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Conns:      conns,
		Seed:       cfg.Seed,
	}
	cpu0, wall0 := cpuTime(), time.Now()
	err := scenario(r)
	stopSweep()
	rec.Stop()
	rec.fill(r)
	r.URLs = cfg.live.spread(cfg.URLs)
	r.CPU = cpuUse(cpu0, cpuTime(), time.Since(wall0), r.GOMAXPROCS)
	if r.CPU.Saturated {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the load tester used %.0f%% of its %d CPUs over the run: its latency and rate figures include its own queueing", 100*r.CPU.Utilization, r.GOMAXPROCS))
	}
	r.End = time.Now().UTC()
	return r, err
}

// dialer opens authenticated connections from the configured source
// addresses to the configured URLs.
type dialer struct {
	cfg *Config
	// urlFor is the index in cfg.URLs of connection i's server, i being
	// the connection's index in its scenario (in openAll's tokens): i mod
	// len(URLs) unless the scenario places its connections (chat). Static
	// after the scenario sets it, before its first dial.
	urlFor  func(i int) int
	next    atomic.Uint64 // dials so far: they take the source addresses in turn
	sem     chan struct{}
	batches atomic.Uint64 // openAll calls so far: each draws its own arrivals
	file    tokenFile     // Config.TokensFile, loaded on first use
}

func newDialer(cfg *Config) *dialer {
	n := len(cfg.URLs)
	return &dialer{cfg: cfg, sem: make(chan struct{}, cfg.MaxInFlight), urlFor: func(i int) int { return i % n }}
}

func (d *dialer) token(user, device string, ttl time.Duration) (string, error) {
	c := auth.Claims{Device: device}
	c.Subject = user
	return auth.Mint(d.cfg.Key, c, ttl, time.Now())
}

// dial opens connection i (see urlFor) with token tok; a reconnect passes
// the connection's index again, so a client returns to its gateway.
func (d *dialer) dial(ctx context.Context, i int, tok string, onEvent func(client.Event)) (*client.Conn, error) {
	return d.dialURL(ctx, d.urlFor(i), tok, onEvent)
}

// dialURL opens a connection to cfg.URLs[u] with token tok.
func (d *dialer) dialURL(ctx context.Context, u int, tok string, onEvent func(client.Event)) (*client.Conn, error) {
	if onEvent == nil {
		onEvent = func(client.Event) {}
	}
	p := &pinger{rtt: d.cfg.Recorder.Hist(HistPing)}
	opts := client.Options{
		Token:       tok,
		DialTimeout: 15 * time.Second,
		OnEvent: func(ev client.Event) {
			if ev.Type == protocol.TypePong {
				p.pong()
				return
			}
			onEvent(ev)
		},
		QueueSize: 1,
	}
	opts.URL = d.cfg.URLs[u]
	if n := len(d.cfg.SourceAddrs); n > 0 {
		k := int(d.next.Add(1) - 1)
		a := d.cfg.SourceAddrs[k%n]
		opts.LocalAddr = &net.TCPAddr{IP: a.AsSlice()}
		opts.DialControl = lean.ControlNoPort // ports per 4-tuple, not per source address
	}
	c, err := client.Dial(ctx, opts)
	if err == nil && d.cfg.live != nil {
		d.cfg.live.pingers.Store(c, p)
		d.cfg.live.openedOn(u)
	}
	return c, err
}

// pinger measures one connection's ping round trip: the server answers a
// client's ping with a pong that carries no id, so a connection has at
// most one ping in flight and the next pong answers it.
type pinger struct {
	rtt    *latency
	sentAt atomic.Int64 // unix ns of the ping in flight, 0 if none
}

func (p *pinger) pong() {
	if at := p.sentAt.Swap(0); at != 0 {
		p.rtt.record(time.Duration(time.Now().UnixNano() - at))
	}
}

// pingSample is how many connections are pinged per second at most.
const pingSample = 50

// openResult is the outcome of openAll.
type openResult struct {
	conns   []*client.Conn // index i holds connection i, nil if it failed
	ok      atomic.Int64
	errs    counts
	samples sync.Map     // error kind → first error text
	lat     *latency     // from the intended arrival to hello
	last    atomic.Int64 // unix ns of the last hello
	elapsed time.Duration

	// With Config.Client "lean", lean[i] holds connection i instead.
	lean  []*lean.Conn
	pools []*lean.Pool
}

// close closes every connection that is still open, bounded in time.
func (res *openResult) close() {
	closeAll(res.conns)
	for _, p := range res.pools {
		_ = p.Close()
	}
}

// alive counts the connections still open.
func (res *openResult) alive() int {
	n := alive(res.conns)
	for _, p := range res.pools {
		n += int(p.Stats().Open)
	}
	return n
}

// openAll opens n connections on an open-model schedule (Config.Arrival)
// at rate per second, with tokens[i] and wiring events with onEvent(i).
// keep false closes each connection right after hello (the connect
// scenario).
func (d *dialer) openAll(ctx context.Context, n int, rate float64, tokens []string, onEvent func(i int) func(client.Event), keep bool) *openResult {
	if d.cfg.Client == "lean" && onEvent == nil {
		return d.openLean(ctx, n, rate, tokens, keep)
	}
	res := &openResult{lat: newLatency()}
	if keep {
		res.conns = make([]*client.Conn, n)
	}
	d.schedule(ctx, n, rate, res, func(i int, at time.Time, done func()) {
		go func() {
			defer done()
			var fn func(client.Event)
			if onEvent != nil {
				fn = onEvent(i)
			}
			c, err := d.dial(ctx, i, tokens[i], fn)
			if err != nil {
				res.failed(d.cfg.Recorder, errKind(err), err)
				return
			}
			res.opened(d.cfg.Recorder, at, keep)
			if keep {
				d.cfg.live.add(c)
				res.conns[i] = c
			} else {
				_ = c.CloseNow()
			}
		}()
	})
	return res
}

// schedule starts n connection attempts at the arrival times of
// Config.Arrival at rate per second, at most MaxInFlight in flight: start
// must begin attempt i and call done when it has ended. It returns when
// every attempt has, and sets res.elapsed.
func (d *dialer) schedule(ctx context.Context, n int, rate float64, res *openResult, start func(i int, at time.Time, done func())) {
	var wg sync.WaitGroup
	t0 := time.Now().Add(10 * time.Millisecond)
	sched := d.cfg.connSchedule(t0, rate, d.batches.Add(1))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := 0; i < n; i++ {
		at := sched.At(i)
		if dt := time.Until(at); dt > 0 {
			timer.Reset(dt)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			res.errs.add("cancelled")
			continue
		}
		select {
		case d.sem <- struct{}{}:
		case <-ctx.Done():
			res.errs.add("cancelled")
			continue
		}
		wg.Add(1)
		start(i, at, func() {
			<-d.sem
			wg.Done()
		})
	}
	wg.Wait()
	if l := res.last.Load(); l > 0 {
		res.elapsed = time.Unix(0, l).Sub(t0)
	}
}

// opened records a connection attempt scheduled at at that got its hello
// just now.
func (res *openResult) opened(rec *Recorder, at time.Time, keep bool) {
	now := time.Now()
	res.lat.record(now.Sub(at))
	rec.Hist(HistConnect).record(now.Sub(at))
	if !keep {
		rec.Add(CountConnOK, 1)
		rec.Add(CountConnClose, 1)
	}
	res.ok.Add(1)
	res.last.Store(now.UnixNano())
}

// failed records a connection attempt that failed with err, of kind.
func (res *openResult) failed(rec *Recorder, kind string, err error) {
	res.errs.add(kind)
	res.samples.LoadOrStore(kind, err.Error())
	rec.Add(PrefixConnErr+kind, 1)
}

// errKind classifies a dial error for the report.
func errKind(err error) string {
	var ue *client.UpgradeError
	var ce *client.CloseError
	var errno syscall.Errno
	switch {
	case errors.As(err, &ue):
		return fmt.Sprintf("http_%d", ue.StatusCode)
	case errors.As(err, &ce):
		return fmt.Sprintf("close_%d", ce.Code)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &errno):
		switch errno {
		case syscall.EADDRNOTAVAIL:
			return "addr_not_available"
		case syscall.ECONNREFUSED:
			return "refused"
		case syscall.ECONNRESET:
			return "reset"
		case syscall.EMFILE, syscall.ENFILE:
			return "too_many_files"
		}
		return "errno_" + errno.Error()
	}
	if strings.Contains(err.Error(), "EOF") {
		return "eof"
	}
	return "other"
}

// closeAll closes every connection, in parallel batches, bounded in time.
func closeAll(conns []*client.Conn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(c *client.Conn) {
			defer wg.Done()
			_ = c.CloseNow()
			<-sem
		}(c)
	}
	wg.Wait()
}

// closeCurrent closes, like closeAll, the connection each of conns holds
// now: storm's and presence's users replace theirs as they reconnect.
func closeCurrent[T interface{ conn() *client.Conn }](conns []T) {
	cs := make([]*client.Conn, 0, len(conns))
	for _, c := range conns {
		cs = append(cs, c.conn())
	}
	closeAll(cs)
}

func alive(conns []*client.Conn) int {
	n := 0
	for _, c := range conns {
		if c != nil && c.Err() == nil {
			n++
		}
	}
	return n
}

func logf(cfg *Config, format string, args ...any) {
	fmt.Fprintf(cfg.Log, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

// onSchedule calls send(k, at) for k = 0, 1, ... < n at the open-model
// send times at(k), until at(k) reaches end, ctx ends or send returns false,
// counting in late the sends that left more than lateSend after their time.
// It returns how many sends were dropped: due before end, but never
// attempted because send returned false (the connection failed).
func onSchedule(ctx context.Context, n int, at func(k int) time.Time, end time.Time, late *atomic.Int64, send func(k int, at time.Time) bool) (dropped int) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for k := 0; k < n; k++ {
		when := at(k)
		if !when.Before(end) {
			return 0
		}
		if dt := time.Until(when); dt > 0 {
			t.Reset(dt)
			select {
			case <-t.C:
			case <-ctx.Done():
				return 0
			}
		}
		if time.Since(when) > lateSend {
			late.Add(1)
		}
		if !send(k, when) {
			for k++; k < n && at(k).Before(end); k++ {
				dropped++
			}
			return dropped
		}
	}
	return 0
}

// share returns this agent's part [lo, hi) of n items (connections,
// pairs, members) split evenly over the agents.
func (c *Config) share(n int) (lo, hi int) {
	return n * c.Agent / c.Agents, n * (c.Agent + 1) / c.Agents
}

// liveConns tracks a run's established connections of package client, so
// that connections the server closes are counted by close code while the
// run goes on.
type liveConns struct {
	rec   *Recorder
	mu    sync.Mutex
	conns []*client.Conn // guarded by mu; still open at the last sweep
	next  int            // guarded by mu; where the next ping sample starts
	// pingers maps a *client.Conn to its *pinger.
	pingers sync.Map
	// opened and ended are the recorder's CountConnOK and CountConnClose.
	opened, ended *atomic.Int64
	// perURL counts the connections that got their hello, by index in
	// Config.URLs (reconnects included). Sized by newLiveConns.
	perURL []atomic.Int64
}

// openedOn counts a connection to URL u that got its hello.
func (l *liveConns) openedOn(u int) {
	if l != nil && u >= 0 && u < len(l.perURL) {
		l.perURL[u].Add(1)
	}
}

// URLConns is how many connections one server got.
type URLConns struct {
	URL string `json:"url"`
	// Opened counts the connections that got their hello there,
	// reconnects included.
	Opened int64 `json:"opened"`
}

// spread returns the connections opened per URL, for the report; a
// distributed agent with URLs of its own reports its own.
func (l *liveConns) spread(urls []string) []URLConns {
	out := make([]URLConns, len(urls))
	for u, raw := range urls {
		out[u] = URLConns{URL: raw}
		if l != nil && u < len(l.perURL) {
			out[u].Opened = l.perURL[u].Load()
		}
	}
	return out
}

func (l *liveConns) add(c *client.Conn) {
	l.rec.Add(CountConnOK, 1)
	l.mu.Lock()
	l.conns = append(l.conns, c)
	l.mu.Unlock()
}

// closedOne counts a connection that ended; err is why (nil or
// client.ErrClosed: the load tester closed it).
func (l *liveConns) closedOne(err error) {
	l.rec.Add(CountConnClose, 1)
	if err != nil && !errors.Is(err, client.ErrClosed) {
		l.rec.Add(PrefixClose+errKind(err), 1)
	}
}

// open is the connections open now: every connection opened (connect's,
// closed right after hello, included) less every one that ended. It is a
// gauge, read while the recorder is locked, so it reads the counters it
// resolved beforehand.
func (l *liveConns) open() int64 { return l.opened.Load() - l.ended.Load() }

func newLiveConns(rec *Recorder, urls int) *liveConns {
	return &liveConns{rec: rec, opened: rec.Counter(CountConnOK), ended: rec.Counter(CountConnClose), perURL: make([]atomic.Int64, urls)}
}

// leanOpened counts a lean connection that got its hello.
func (l *liveConns) leanOpened() {
	l.rec.Add(CountConnOK, 1)
}

// leanClosed counts a lean connection that ended (lean.Config.OnClose).
func (l *liveConns) leanClosed(code int, err error) {
	l.rec.Add(CountConnClose, 1)
	switch {
	case errors.Is(err, lean.ErrClosed):
	case code != 0:
		l.rec.Add(fmt.Sprintf("%sclose_%d", PrefixClose, code), 1)
	default:
		l.rec.Add(PrefixClose+lean.ErrKind(err), 1)
	}
}

// sweep counts and forgets the connections that ended since the last one.
func (l *liveConns) sweep() {
	l.mu.Lock()
	keep := l.conns[:0]
	var ended []error
	var endedConns []*client.Conn
	for _, c := range l.conns {
		if err := c.Err(); err != nil {
			ended = append(ended, err)
			endedConns = append(endedConns, c)
			continue
		}
		keep = append(keep, c)
	}
	clear(l.conns[len(keep):])
	l.conns = keep
	l.mu.Unlock()
	for _, c := range endedConns {
		l.pingers.Delete(c)
	}
	for _, err := range ended {
		l.closedOne(err)
	}
}

// ping sends a ping on up to pingSample connections, taking turns, that
// have none in flight; their pongs go to HistPing. A ping is one small
// frame, far below the server's per-connection rate limit.
func (l *liveConns) ping() {
	l.mu.Lock()
	n := min(pingSample, len(l.conns))
	sample := make([]*client.Conn, 0, n)
	for i := 0; i < n; i++ {
		sample = append(sample, l.conns[(l.next+i)%len(l.conns)])
	}
	if len(l.conns) > 0 {
		l.next = (l.next + n) % len(l.conns)
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, c := range sample {
		v, ok := l.pingers.Load(c)
		if !ok {
			continue
		}
		p := v.(*pinger)
		if !p.sentAt.CompareAndSwap(0, time.Now().UnixNano()) {
			continue // the last one is still out
		}
		if c.WriteFrame(ctx, protocol.Frame{Type: protocol.TypePing}) != nil {
			p.sentAt.Store(0)
		}
	}
}

// sweepEvery sweeps every d until the returned stop is called (which
// sweeps once more).
func (l *liveConns) sweepEvery(d time.Duration) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.sweep()
				l.ping()
			case <-quit:
				l.sweep()
				return
			}
		}
	}()
	return func() { close(quit); <-done }
}
