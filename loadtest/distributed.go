package loadtest

// Distributed runs. One process may hold about 19,000 sockets (its
// open-file limit), so 100,000 connections take several agent processes
// under one coordinator, on one machine or several:
//
//   - Each agent registers (POST /v1/register) and gets its index and the
//     run's Config. Once all have registered the coordinator names a
//     common start, StartAt = now + StartDelay, which the agents learn by
//     long-polling the "start" barrier (POST /v1/barrier).
//   - Each agent runs its share of the scenario (Config.Agent, Agents,
//     share) and streams every per-second interval with its raw
//     histograms (POST /v1/tick). The coordinator merges the intervals by
//     tick number into one timeline, and absorbs histograms and counters
//     into its recorder. HdrHistograms of one geometry merge exactly: the
//     merged histogram is the histogram of all the agents' values.
//   - A scenario whose agents must act in step (chat and fanout once their
//     connections are up, connect at every step) waits at a named barrier
//     and schedules from the common time it returns.
//   - At the end each agent posts its report with its cumulative
//     histograms (POST /v1/report): the run's totals are exact even if a
//     tick was lost on the way. The coordinator merges the reports into
//     one, with each agent's own in Report.Agents: metrics, counters and
//     timeline for every scenario, and the idle, connect, chat and fanout
//     statistics (group, presence and storm keep theirs per agent).
//
// The wire format is JSON over plain HTTP (a loopback or a trusted LAN:
// the run's Config, signing key included, goes to the agents in clear).
// Histograms travel as the HdrHistogram V2 compressed encoding, base64
// (Histogram.Encode with V2CompressedEncodingCookieBase), and must have the
// recorder's geometry (1 µs to 5 min, 3 digits). Every body is
// size-limited, every wait bounded, every agent index checked.
//
// Clocks: fanout's publisher (agent 0) puts its wall-clock intended send
// time in each value and every agent's subscribers subtract it from their
// own wall clock, so agents on several machines need synchronised clocks
// (chrony or PTP; the report warns when agents came from several hosts).
// The other scenarios measure within one process.

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// DistributedScenarios are the scenarios that split their work over
// agents (Config.share, agentPart) and so can run under a coordinator.
var DistributedScenarios = []string{"idle", "connect", "chat", "fanout", "group", "presence", "storm"}

// Bounds of the protocol.
const (
	maxSmallBody   = 64 << 10  // register, barrier
	maxTickBody    = 8 << 20   // one interval's histograms
	maxReportBody  = 256 << 20 // an agent's report with its timeline
	maxNames       = 256       // histograms, counters or gauges in one message
	maxNameLen     = 128       //
	maxBarriers    = 256       // named barriers in one run
	maxTickSeq     = 10_000_000
	longPoll       = 20 * time.Second       // a barrier request's longest wait
	barrierLead    = 500 * time.Millisecond // a released barrier's start is this far ahead
	rowLag         = 10                     // seconds a timeline row waits for a late agent
	tickQueue      = 64                     // an agent's ticks waiting to be sent
	tickMaxAge     = 5 * time.Second        // a tick not sent by then is dropped
	registerWait   = time.Minute            // an agent's retries to reach the coordinator
	agentRetryWait = 30 * time.Second       // an agent's retries of a barrier or its report
)

// CoordinatorConfig describes a coordinator. Zero values mean the
// documented defaults.
type CoordinatorConfig struct {
	// Listen is the address the agents reach the coordinator on, e.g.
	// "127.0.0.1:7070" (agents on this machine) or ":7070" (a LAN).
	// Required unless Listener is set.
	Listen string
	// Listener, if set, is used instead of Listen.
	Listener net.Listener
	// Agents is how many agents the run takes. Required.
	Agents int
	// Config is the run, sent to every agent. Agent, Agents, StartAt are
	// set per agent; SourceAddrs is used by agents that have none of their
	// own; TokensFile must name a file present on every agent. Recorder,
	// if set, receives the merged intervals as they come (live progress
	// through its OnTick, Prometheus); Log is not sent.
	Config Config
	// StartDelay is the time from the last registration to the common
	// start. Default 3 s.
	StartDelay time.Duration
	// RegisterTimeout bounds the wait for every agent to register.
	// Default 2 minutes.
	RegisterTimeout time.Duration
	// AgentTimeout is how long an agent may stay silent (no tick, no
	// request) after the start before the coordinator gives up on it.
	// Default 15 s.
	AgentTimeout time.Duration
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// AgentConfig describes an agent.
type AgentConfig struct {
	// Coordinator is the coordinator's base URL, http://host:port.
	// Required.
	Coordinator string
	// Name names the agent in the coordinator's log and report. Default
	// the host name.
	Name string
	// SourceAddrs are this agent's local addresses to dial from; empty
	// means the run's (Config.SourceAddrs).
	SourceAddrs []netip.Addr
	// URLs, if set, are the servers this agent connects to instead of the
	// run's (Config.URLs): agents placed in front of their own gateways,
	// e.g. when the gateways are not one cluster.
	URLs []string
	// Log receives log lines; nil discards them.
	Log io.Writer
	// Progress, if set, receives this agent's progress line every second
	// (NewProgress).
	Progress io.Writer
}

// Wire messages.
type (
	registerRequest struct {
		ID   string `json:"id"` // random per agent: a retried registration gets the same index
		Name string `json:"name"`
	}
	registerReply struct {
		Run    string          `json:"run"` // the run's id, sent back in every request
		Agent  int             `json:"agent"`
		Agents int             `json:"agents"`
		Config json.RawMessage `json:"config"`
	}
	barrierRequest struct {
		Run   string `json:"run"`
		Agent int    `json:"agent"`
		Name  string `json:"name"`
	}
	barrierReply struct {
		Released bool      `json:"released"` // false: ask again
		At       time.Time `json:"at"`       // the common start, once released
	}
	tickMessage struct {
		Run      string            `json:"run"`
		Agent    int               `json:"agent"`
		Seq      int               `json:"seq"` // the agent's tick number, from 1
		T        float64           `json:"t"`   // seconds since StartAt
		Counters map[string]int64  `json:"counters,omitempty"`
		Gauges   map[string]int64  `json:"gauges,omitempty"`
		Hists    map[string]string `json:"hists,omitempty"`
	}
	reportMessage struct {
		Run    string            `json:"run"`
		Agent  int               `json:"agent"`
		Ticks  int               `json:"ticks"` // ticks the agent made: seq 1..Ticks
		Report *Report           `json:"report,omitempty"`
		Hists  map[string]string `json:"hists,omitempty"` // cumulative
		Error  string            `json:"error,omitempty"`
	}
)

// encodeHist encodes h for the wire.
func encodeHist(h *hdrhistogram.Histogram) (string, error) {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	return string(b), err
}

// histHeader is the geometry part (significant digits, lowest and highest
// trackable value) of the encoding's inner header, as the recorder's
// histograms have it.
var histHeader = sync.OnceValue(func() []byte {
	s, err := encodeHist(newHist())
	if err != nil {
		panic(err)
	}
	hdr, err := innerHeader(s)
	if err != nil {
		panic(err)
	}
	return hdr[12:32]
})

// innerHeader returns the first 40 bytes of an encoded histogram's
// compressed part, without inflating the rest.
func innerHeader(s string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(raw) < 8 {
		return nil, errors.New("histogram too short")
	}
	zr, err := zlib.NewReader(bytes.NewReader(raw[8:]))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	hdr := make([]byte, 40)
	if _, err := io.ReadFull(zr, hdr); err != nil {
		return nil, err
	}
	return hdr, nil
}

// decodeHist decodes a histogram from the wire. It checks the geometry
// before decoding, since decoding allocates what the geometry says.
func decodeHist(s string) (*hdrhistogram.Histogram, error) {
	hdr, err := innerHeader(s)
	if err != nil {
		return nil, fmt.Errorf("histogram: %w", err)
	}
	if !bytes.Equal(hdr[12:32], histHeader()) {
		return nil, errors.New("histogram: not the recorder's geometry (1 µs to 5 min, 3 digits)")
	}
	h, err := hdrhistogram.Decode([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("histogram: %w", err)
	}
	return h, nil
}

func encodeHists(hs map[string]*hdrhistogram.Histogram) (map[string]string, error) {
	out := make(map[string]string, len(hs))
	for name, h := range hs {
		s, err := encodeHist(h)
		if err != nil {
			return nil, err
		}
		out[name] = s
	}
	return out, nil
}

func decodeHists(in map[string]string) (map[string]*hdrhistogram.Histogram, error) {
	if len(in) > maxNames {
		return nil, fmt.Errorf("%d histograms", len(in))
	}
	out := make(map[string]*hdrhistogram.Histogram, len(in))
	for name, s := range in {
		if len(name) > maxNameLen {
			return nil, errors.New("histogram name too long")
		}
		h, err := decodeHist(s)
		if err != nil {
			return nil, fmt.Errorf("%.40s: %w", name, err)
		}
		out[name] = h
	}
	return out, nil
}

func checkNames[V any](m map[string]V) error {
	if len(m) > maxNames {
		return fmt.Errorf("%d names", len(m))
	}
	for name := range m {
		if len(name) > maxNameLen {
			return errors.New("name too long")
		}
	}
	return nil
}

// ---- Coordinator ----

// RunCoordinator runs a distributed run: it waits for cc.Agents agents to
// register, starts them together, merges their intervals as they stream
// in, and returns the merged report once every agent has reported or gone
// silent for AgentTimeout. It fails if not every agent registers within
// RegisterTimeout. If agents failed or went silent, the report says so
// and the error counts them; if ctx ends, it returns what it has.
func RunCoordinator(ctx context.Context, cc CoordinatorConfig) (*Report, error) {
	c, err := newCoordinator(cc)
	if err != nil {
		return nil, err
	}
	ln := cc.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cc.Listen); err != nil {
			return nil, fmt.Errorf("loadtest: coordinator: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           c.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute, // a large report on a slow link
		WriteTimeout:      longPoll + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(c.log, "loadtest coordinator: http: ", 0),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // http.ErrServerClosed after Shutdown
	}()
	defer func() {
		close(c.quit) // ends the long polls
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
		<-served
	}()
	c.logf("coordinator: waiting for %d agents on %s (%s, %d conns)", c.cfg.Agents, ln.Addr(), c.cfg.Config.Scenario, c.cfg.Config.Conns)
	if err := c.waitRegistered(ctx); err != nil {
		return nil, err
	}
	werr := c.waitDone(ctx)
	c.emit(true)
	rep, err := c.report()
	return rep, errors.Join(werr, err)
}

// coordinator is the coordinator's state. Lock order: mu, then a
// Recorder's.
type coordinator struct {
	cfg  CoordinatorConfig // static after newCoordinator
	run  string            // static: the run's random id
	conf []byte            // static: the run's Config as JSON
	live *Recorder         // static: absorbs the ticks as they come
	log  io.Writer         // static
	quit chan struct{}     // closed when RunCoordinator returns

	mu       sync.Mutex
	agents   []*agentState            // guarded by mu; by index
	startAt  time.Time                // guarded by mu; zero until all registered
	barriers map[string]*barrier      // guarded by mu
	rows     map[int]*tickRow         // guarded by mu; the merged timeline by tick seq
	maxSeq   int                      // guarded by mu; the highest seq seen
	late     int                      // guarded by mu; ticks that came after their row closed
	gauges   map[string]*atomic.Int64 // guarded by mu (the map); the sum of the agents' latest values, read by live's gauges
	// changed is closed and replaced at every change waiters care about
	// (a registration, an arrival at a barrier, an agent done or given
	// up). Guarded by mu.
	changed chan struct{}

	emitMu  sync.Mutex // held while handing rows to live's OnTick functions
	emitted int        // guarded by emitMu; rows up to this seq are emitted
}

// agentState is what the coordinator knows of one agent. Guarded by
// coordinator.mu.
type agentState struct {
	id, name, host string
	lastSeen       time.Time
	seqs           map[int]bool // ticks received
	hists          map[string]*hdrhistogram.Histogram
	counters       map[string]int64 // the sums of its ticks
	gauges         map[string]int64 // its last tick's
	done           bool             // posted its report
	dead           bool             // silent for AgentTimeout
	ticks          int              // from its report: ticks it made
	report         *Report          // nil if it sent none
	final          map[string]*hdrhistogram.Histogram
	err            string // the error it ended with
}

// barrier is a named meeting point of the live agents.
type barrier struct {
	arrived map[int]bool
	at      time.Time // zero until every live agent has arrived
}

// tickRow is one second of the merged timeline.
type tickRow struct {
	from   map[int]bool                       // agents whose tick is in
	hists  map[string]*hdrhistogram.Histogram // merged; nil once closed
	iv     Interval                           // Latency is set when closed
	closed bool
}

func newCoordinator(cc CoordinatorConfig) (*coordinator, error) {
	if cc.Agents < 1 {
		return nil, fmt.Errorf("loadtest: coordinator: %d agents", cc.Agents)
	}
	if cc.Listen == "" && cc.Listener == nil {
		return nil, errors.New("loadtest: coordinator: no address to listen on")
	}
	if cc.StartDelay <= 0 {
		cc.StartDelay = 3 * time.Second
	}
	if cc.RegisterTimeout <= 0 {
		cc.RegisterTimeout = 2 * time.Minute
	}
	if cc.AgentTimeout <= 0 {
		cc.AgentTimeout = 15 * time.Second
	}
	if cc.Log == nil {
		cc.Log = io.Discard
	}
	run := cc.Config
	if !slices.Contains(DistributedScenarios, run.Scenario) {
		return nil, fmt.Errorf("loadtest: coordinator: scenario %q does not run distributed (%s do)", run.Scenario, strings.Join(DistributedScenarios, ", "))
	}
	run.Agent, run.Agents, run.StartAt, run.Recorder, run.Log = 0, 0, time.Time{}, nil, nil
	check := run // defaults fills in; the agents get the config as given
	if err := check.defaults(); err != nil {
		return nil, err
	}
	if run.Scenario != "connect" && check.Conns < cc.Agents {
		return nil, fmt.Errorf("loadtest: coordinator: %d conns over %d agents leaves some without any", check.Conns, cc.Agents)
	}
	conf, err := json.Marshal(run)
	if err != nil {
		return nil, fmt.Errorf("loadtest: coordinator: the run's config: %w", err)
	}
	live := cc.Config.Recorder
	if live == nil {
		live = NewRecorder(time.Now())
	}
	c := &coordinator{
		cfg: cc, run: randomID(), conf: conf, live: live, log: cc.Log,
		quit:     make(chan struct{}),
		barriers: map[string]*barrier{},
		rows:     map[int]*tickRow{},
		gauges:   map[string]*atomic.Int64{},
		changed:  make(chan struct{}),
	}
	return c, nil
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (c *coordinator) logf(format string, args ...any) {
	fmt.Fprintf(c.log, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

// notifyLocked wakes everyone waiting for a change.
func (c *coordinator) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// liveLocked reports whether agent i still takes part: neither done nor
// given up.
func (c *coordinator) liveLocked(i int) bool {
	a := c.agents[i]
	return !a.done && !a.dead
}

func (c *coordinator) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/register", c.serveRegister)
	mux.HandleFunc("POST /v1/barrier", c.serveBarrier)
	mux.HandleFunc("POST /v1/tick", c.serveTick)
	mux.HandleFunc("POST /v1/report", c.serveReport)
	return mux
}

// readJSON decodes r's body, at most limit bytes, into v, or answers the
// request with an error and returns false.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit)).Decode(v)
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
	} else {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
	}
	return false
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// agentLocked returns the agent a request names, or the HTTP status and
// message to refuse it with.
func (c *coordinator) agentLocked(run string, i int) (*agentState, int, string) {
	if run != c.run {
		return nil, http.StatusConflict, "not this run"
	}
	if i < 0 || i >= len(c.agents) {
		return nil, http.StatusNotFound, "no such agent"
	}
	a := c.agents[i]
	a.lastSeen = time.Now()
	if a.dead {
		a.dead = false
		c.logf("coordinator: agent %d (%s) is back", i, a.name)
	}
	return a, 0, ""
}

func (c *coordinator) serveRegister(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	if !readJSON(w, r, maxSmallBody, &req) {
		return
	}
	if req.ID == "" || len(req.ID) > 64 || len(req.Name) > 128 {
		http.Error(w, "bad id or name", http.StatusBadRequest)
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	c.mu.Lock()
	i := slices.IndexFunc(c.agents, func(a *agentState) bool { return a.id == req.ID })
	if i < 0 {
		if len(c.agents) >= c.cfg.Agents {
			c.mu.Unlock()
			http.Error(w, "every agent has registered", http.StatusConflict)
			return
		}
		i = len(c.agents)
		c.agents = append(c.agents, &agentState{
			id: req.ID, name: req.Name, host: host, lastSeen: time.Now(), seqs: map[int]bool{},
			hists: map[string]*hdrhistogram.Histogram{}, counters: map[string]int64{}, gauges: map[string]int64{},
		})
		if len(c.agents) == c.cfg.Agents {
			c.startAt = time.Now().Add(c.cfg.StartDelay)
		}
		c.notifyLocked()
		c.logf("coordinator: agent %d registered (%s from %s), %d of %d", i, req.Name, host, len(c.agents), c.cfg.Agents)
	}
	c.mu.Unlock()
	writeJSON(w, registerReply{Run: c.run, Agent: i, Agents: c.cfg.Agents, Config: c.conf})
}

// serveBarrier answers once the barrier is released, or after longPoll
// with Released false (the agent asks again).
func (c *coordinator) serveBarrier(w http.ResponseWriter, r *http.Request) {
	var req barrierRequest
	if !readJSON(w, r, maxSmallBody, &req) {
		return
	}
	if !validName(req.Name) {
		http.Error(w, "bad barrier name", http.StatusBadRequest)
		return
	}
	poll := time.NewTimer(longPoll)
	defer poll.Stop()
	for {
		c.mu.Lock()
		_, code, msg := c.agentLocked(req.Run, req.Agent)
		var at time.Time
		if code == 0 {
			at, code, msg = c.barrierLocked(req.Name, req.Agent)
		}
		changed := c.changed
		c.mu.Unlock()
		switch {
		case code != 0:
			http.Error(w, msg, code)
			return
		case !at.IsZero():
			writeJSON(w, barrierReply{Released: true, At: at})
			return
		}
		select {
		case <-changed:
		case <-poll.C:
			writeJSON(w, barrierReply{})
			return
		case <-c.quit:
			http.Error(w, "the coordinator has stopped", http.StatusServiceUnavailable)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// barrierLocked records agent's arrival at the named barrier and returns
// its start time, zero while some live agent has not arrived. "start" is
// the run's start, released when every agent has registered.
func (c *coordinator) barrierLocked(name string, agent int) (time.Time, int, string) {
	if name == "start" {
		return c.startAt, 0, ""
	}
	b := c.barriers[name]
	if b == nil {
		if len(c.barriers) >= maxBarriers {
			return time.Time{}, http.StatusTooManyRequests, "too many barriers"
		}
		b = &barrier{arrived: map[int]bool{}}
		c.barriers[name] = b
	}
	if !b.arrived[agent] {
		b.arrived[agent] = true
		c.notifyLocked()
	}
	if b.at.IsZero() && len(c.agents) == c.cfg.Agents {
		all := true
		for i := range c.agents {
			all = all && (b.arrived[i] || !c.liveLocked(i))
		}
		if all {
			b.at = time.Now().Add(barrierLead)
			c.logf("coordinator: every agent is at %s", name)
		}
	}
	return b.at, 0, ""
}

func (c *coordinator) serveTick(w http.ResponseWriter, r *http.Request) {
	var m tickMessage
	if !readJSON(w, r, maxTickBody, &m) {
		return
	}
	hists, err := decodeHists(m.Hists)
	if err == nil {
		err = errors.Join(checkNames(m.Counters), checkNames(m.Gauges))
	}
	if err == nil && (m.Seq < 1 || m.Seq > maxTickSeq) {
		err = fmt.Errorf("seq %d", m.Seq)
	}
	if err != nil {
		http.Error(w, "bad tick: "+err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	a, code, msg := c.agentLocked(m.Run, m.Agent)
	if code != 0 {
		c.mu.Unlock()
		http.Error(w, msg, code)
		return
	}
	fresh := c.addTickLocked(a, m.Agent, &m, hists)
	c.mu.Unlock()
	if fresh {
		c.live.Absorb(c.liveHists(hists), m.Counters)
	}
	w.WriteHeader(http.StatusNoContent)
}

// addTickLocked merges an agent's tick into its sums and the timeline. It
// returns false for a tick already merged (a retry).
func (c *coordinator) addTickLocked(a *agentState, agent int, m *tickMessage, hists map[string]*hdrhistogram.Histogram) bool {
	if a.seqs[m.Seq] {
		return false
	}
	a.seqs[m.Seq] = true
	for name, h := range hists {
		if a.hists[name] == nil {
			a.hists[name] = newHist()
		}
		a.hists[name].Merge(h)
	}
	for name, d := range m.Counters {
		a.counters[name] += d
	}
	for name, v := range m.Gauges {
		g := c.gauges[name]
		if g == nil {
			g = new(atomic.Int64)
			c.gauges[name] = g
			c.live.Gauge(name, g.Load) // c.mu, then the recorder's: the lock order
		}
		g.Add(v - a.gauges[name])
		a.gauges[name] = v
	}
	row := c.rows[m.Seq]
	if row == nil {
		row = &tickRow{from: map[int]bool{}, hists: map[string]*hdrhistogram.Histogram{}, iv: Interval{Counters: map[string]int64{}}}
		c.rows[m.Seq] = row
	}
	row.from[agent] = true
	row.iv.T = max(row.iv.T, m.T)
	for name, d := range m.Counters {
		row.iv.Counters[name] += d
	}
	if len(m.Gauges) > 0 && row.iv.Gauges == nil {
		row.iv.Gauges = map[string]int64{}
	}
	for name, v := range m.Gauges {
		row.iv.Gauges[name] += v
	}
	if row.closed {
		c.late++
	} else {
		for name, h := range c.liveHists(hists) {
			if row.hists[name] == nil {
				row.hists[name] = newHist()
			}
			row.hists[name].Merge(h)
		}
	}
	c.maxSeq = max(c.maxSeq, m.Seq)
	c.closeRowsLocked(false)
	return true
}

// liveHists leaves out, in a distributed fanout, the agents' per-second
// last-member latencies: each agent's is over its own subscribers only.
// The run's comes from FanoutStats.LastBySeq at the end.
func (c *coordinator) liveHists(hs map[string]*hdrhistogram.Histogram) map[string]*hdrhistogram.Histogram {
	if c.cfg.Config.Scenario != "fanout" || c.cfg.Agents == 1 || hs[HistFanoutLast] == nil {
		return hs
	}
	out := make(map[string]*hdrhistogram.Histogram, len(hs))
	for name, h := range hs {
		if name != HistFanoutLast {
			out[name] = h
		}
	}
	return out
}

// closeRowsLocked closes the timeline rows every live agent has sent, and
// those rowLag seconds behind the newest (all of them if force): their
// percentiles are computed and their histograms dropped.
func (c *coordinator) closeRowsLocked(force bool) {
	for seq, row := range c.rows {
		if row.closed {
			continue
		}
		complete := true
		for i, a := range c.agents {
			expected := !a.dead && !(a.done && seq > a.ticks)
			complete = complete && (row.from[i] || !expected)
		}
		if !force && !complete && seq > c.maxSeq-rowLag {
			continue
		}
		for name, h := range row.hists {
			if h.TotalCount() == 0 {
				continue
			}
			if row.iv.Latency == nil {
				row.iv.Latency = map[string]Percentiles{}
			}
			row.iv.Latency[name] = percentilesOf(h)
		}
		row.hists, row.closed = nil, true
	}
}

// emit hands the closed rows, in order, to the live recorder's timeline
// and OnTick functions (live progress). A second no agent sent is
// skipped once it is rowLag behind the newest; all closes and emits
// everything.
func (c *coordinator) emit(all bool) {
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	for {
		c.mu.Lock()
		if all {
			c.closeRowsLocked(true)
		}
		seq := c.emitted + 1
		row := c.rows[seq]
		for row == nil && (seq <= c.maxSeq-rowLag || all && seq <= c.maxSeq) {
			seq++
			row = c.rows[seq]
		}
		ready := row != nil && row.closed
		var iv Interval
		if ready {
			iv = cloneInterval(row.iv)
			c.emitted = seq
		}
		c.mu.Unlock()
		if !ready {
			return
		}
		c.live.replay(Tick{Interval: iv})
	}
}

func cloneInterval(iv Interval) Interval {
	out := Interval{T: iv.T}
	if iv.Latency != nil {
		out.Latency = make(map[string]Percentiles, len(iv.Latency))
		for k, v := range iv.Latency {
			out.Latency[k] = v
		}
	}
	out.Counters = make(map[string]int64, len(iv.Counters))
	for k, v := range iv.Counters {
		out.Counters[k] = v
	}
	if iv.Gauges != nil {
		out.Gauges = make(map[string]int64, len(iv.Gauges))
		for k, v := range iv.Gauges {
			out.Gauges[k] = v
		}
	}
	return out
}

// replay appends an interval recorded elsewhere (the coordinator's merged
// one) to the timeline and hands it to the OnTick functions, as tick does.
func (r *Recorder) replay(tk Tick) {
	r.mu.Lock()
	r.timeline = append(r.timeline, tk.Interval)
	fns := slices.Clone(r.onTick)
	r.mu.Unlock()
	for _, fn := range fns {
		fn(tk)
	}
}

func (c *coordinator) serveReport(w http.ResponseWriter, r *http.Request) {
	var m reportMessage
	if !readJSON(w, r, maxReportBody, &m) {
		return
	}
	final, err := decodeHists(m.Hists)
	if err == nil && m.Report != nil {
		err = checkNames(m.Report.Counters)
	}
	if err == nil && (m.Ticks < 0 || m.Ticks > maxTickSeq) {
		err = fmt.Errorf("ticks %d", m.Ticks)
	}
	if err != nil {
		http.Error(w, "bad report: "+err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	a, code, msg := c.agentLocked(m.Run, m.Agent)
	if code == 0 && !a.done {
		a.done, a.dead = true, false
		a.ticks, a.report, a.final, a.err = m.Ticks, m.Report, final, m.Error
		c.closeRowsLocked(false)
		c.notifyLocked()
		c.logf("coordinator: agent %d (%s) done%s", m.Agent, a.name, errSuffix(m.Error))
	}
	c.mu.Unlock()
	if code != 0 {
		http.Error(w, msg, code)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func errSuffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// waitRegistered waits until every agent has registered.
func (c *coordinator) waitRegistered(ctx context.Context) error {
	timeout := time.NewTimer(c.cfg.RegisterTimeout)
	defer timeout.Stop()
	for {
		c.mu.Lock()
		n, changed := len(c.agents), c.changed
		c.mu.Unlock()
		if n == c.cfg.Agents {
			c.logf("coordinator: all %d agents registered; the run starts in %v", n, c.cfg.StartDelay)
			return nil
		}
		select {
		case <-changed:
		case <-timeout.C:
			return fmt.Errorf("loadtest: coordinator: %d of %d agents registered within %v", n, c.cfg.Agents, c.cfg.RegisterTimeout)
		case <-ctx.Done():
			return fmt.Errorf("loadtest: coordinator: %d of %d agents registered: %w", n, c.cfg.Agents, ctx.Err())
		}
	}
}

// waitDone waits until every agent has reported or gone silent for
// AgentTimeout, emitting the timeline as it fills.
func (c *coordinator) waitDone(ctx context.Context) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		c.mu.Lock()
		now, running := time.Now(), 0
		for i, a := range c.agents {
			if a.done || a.dead {
				continue
			}
			if since := now.Sub(later(a.lastSeen, c.startAt)); since > c.cfg.AgentTimeout {
				a.dead = true
				c.notifyLocked()
				c.logf("coordinator: agent %d (%s) silent for %v: giving up on it", i, a.name, since.Round(time.Second))
				continue
			}
			running++
		}
		changed := c.changed
		c.mu.Unlock()
		c.emit(false)
		if running == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// report merges the agents' reports and intervals into the run's.
func (c *coordinator) report() (*Report, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeRowsLocked(true)
	run := c.cfg.Config
	rec := NewRecorder(c.startAt)
	rep := &Report{
		Tool:     "parley loadtest " + Version,
		Scenario: run.Scenario,
		URL:      run.URL,
		Seed:     run.Seed,
		Start:    c.startAt.UTC(),
		End:      time.Now().UTC(),
		Agents:   make([]*Report, len(c.agents)),
	}
	if rep.URL == "" && len(run.URLs) > 0 {
		rep.URL = run.URLs[0]
	}
	var failed int
	hosts := map[string]bool{}
	for i, a := range c.agents {
		hosts[a.host] = true
		rep.Agents[i] = a.report
		// The agent's own totals if it sent them, else the sum of the
		// ticks it sent.
		hists, counters := a.hists, a.counters
		if a.done && a.report != nil {
			hists, counters = a.final, a.report.Counters
		}
		rec.Absorb(c.liveHists(hists), counters)
		who := fmt.Sprintf("agent %d (%s)", i, a.name)
		switch {
		case a.err != "":
			failed++
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s failed: %s", who, a.err))
		case a.dead:
			failed++
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s went silent and sent no report: the run counts only the %d intervals it sent", who, len(a.seqs)))
		case !a.done:
			failed++
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s had not reported when the coordinator stopped", who))
		}
		if a.report != nil {
			for _, s := range a.report.Warnings {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("agent %d: %s", i, s))
			}
		}
		want := a.ticks
		if !a.done {
			want = maxKey(a.seqs)
		}
		if missing := missingSeqs(a.seqs, want); len(missing) > 0 {
			s := fmt.Sprintf("%s: %d of %d per-second intervals missing from the timeline (%s)", who, len(missing), want, fmtSeqs(missing))
			if a.done && a.report != nil {
				s += "; its totals are complete"
			}
			rep.Warnings = append(rep.Warnings, s)
		}
	}
	if c.late > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d agent intervals came too late for the timeline's per-second latencies (they are in the totals)", c.late))
	}
	if run.Scenario == "fanout" && len(hosts) > 1 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("agents ran on %d hosts: fan-out latencies subtract agent 0's clock from each agent's, so they are only as good as the hosts' clock synchronisation (chrony, PTP)", len(hosts)))
	}

	seqs := make([]int, 0, len(c.rows))
	for seq := range c.rows {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	timeline := make([]Interval, 0, len(seqs))
	for _, seq := range seqs {
		timeline = append(timeline, cloneInterval(c.rows[seq].iv))
	}
	rec.SetTimeline(timeline)

	reps := rep.Agents // by index; nil for agents without a report
	mergeCommon(rep, reps)
	if len(hosts) == 1 {
		rep.Server = mergeServerMemory(reps)
		// The agents shared one machine's CPUs: their sum is not the
		// machine's, and their CPU time together is what saturates it.
		rep.GOMAXPROCS = 0
		for _, r := range reps {
			if r != nil {
				rep.GOMAXPROCS = max(rep.GOMAXPROCS, r.GOMAXPROCS)
			}
		}
		rep.CPU = cpuUse(0, time.Duration(rep.CPU.Seconds*float64(time.Second)), time.Duration(rep.CPU.WallSeconds*float64(time.Second)), rep.GOMAXPROCS)
		if rep.CPU.Saturated {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("the agents together used %.0f%% of this machine's %d CPUs: latencies include their own queueing", 100*rep.CPU.Utilization, rep.GOMAXPROCS))
		}
	}
	if run.Scenario == "fanout" {
		rep.Fanout = mergeFanout(reps, rec, c.cfg.Agents)
	}
	rec.fill(rep)
	switch run.Scenario {
	case "chat":
		rep.Chat = mergeChat(reps, rep.Metrics)
	case "group":
		rep.Group = mergeGroup(reps, rep.Metrics)
	case "storm":
		rep.Storm = mergeStorm(reps, rep.Metrics)
	case "fanout":
		if f := rep.Fanout; f != nil {
			f.LastMember = rep.Metrics[HistFanoutLast]
			f.AllMembers = rep.Metrics[HistFanoutAll]
			f.Subscribe = rep.Metrics[HistSubscribe]
		}
	}
	if rep.Connect != nil && run.Scenario != "connect" {
		rep.Connect.Latency = rep.Metrics[HistConnect] // exact: the only source of connect latencies
	}
	if failed > 0 {
		return rep, fmt.Errorf("loadtest: coordinator: %d of %d agents failed or sent no report", failed, c.cfg.Agents)
	}
	return rep, nil
}

func maxKey(m map[int]bool) int {
	n := 0
	for k := range m {
		n = max(n, k)
	}
	return n
}

// missingSeqs returns the seqs in 1..n that have is lacking.
func missingSeqs(have map[int]bool, n int) []int {
	var out []int
	for s := 1; s <= n; s++ {
		if !have[s] {
			out = append(out, s)
		}
	}
	return out
}

func fmtSeqs(s []int) string {
	var b strings.Builder
	for i, v := range s {
		if i == 10 {
			fmt.Fprintf(&b, ", ... (%d more)", len(s)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, v)
	}
	return b.String()
}

// mergeCommon sums what the scenarios share: connections, the connect
// set-up and steps, the tester's CPU, idle drops. Tester memory stays
// with each agent.
func mergeCommon(rep *Report, reps []*Report) {
	var connects []*ConnectStats
	for _, r := range reps {
		if r == nil {
			continue
		}
		if rep.URL == "" {
			rep.URL = r.URL
		}
		rep.Conns += r.Conns
		rep.URLs = mergeURLs(rep.URLs, r.URLs)
		rep.Dropped += r.Dropped
		rep.GOMAXPROCS += r.GOMAXPROCS
		rep.CPU.Seconds += r.CPU.Seconds
		rep.CPU.WallSeconds = max(rep.CPU.WallSeconds, r.CPU.WallSeconds)
		rep.CPU.Saturated = rep.CPU.Saturated || r.CPU.Saturated
		if r.Connect != nil {
			connects = append(connects, r.Connect)
		}
		for j := range r.Steps {
			if j >= len(rep.Steps) {
				rep.Steps = append(rep.Steps, ConnectStats{})
			}
			rep.Steps[j] = *mergeConnect([]*ConnectStats{&rep.Steps[j], &r.Steps[j]})
		}
	}
	if rep.CPU.WallSeconds > 0 && rep.GOMAXPROCS > 0 {
		rep.CPU.Utilization = rep.CPU.Seconds / (rep.CPU.WallSeconds * float64(rep.GOMAXPROCS))
	}
	if len(connects) > 0 {
		rep.Connect = mergeConnect(connects)
	}
	for _, s := range rep.Steps {
		if s.Met {
			rep.LastMet = s.TargetRate
		}
	}
}

// mergeURLs adds an agent's connections per URL to the run's, by URL
// (agents may have URLs of their own).
func mergeURLs(into, from []URLConns) []URLConns {
	for _, f := range from {
		j := slices.IndexFunc(into, func(u URLConns) bool { return u.URL == f.URL })
		if j < 0 {
			into = append(into, URLConns{URL: f.URL})
			j = len(into) - 1
		}
		into[j].Opened += f.Opened
	}
	return into
}

// mergeServerMemory combines the agents' readings of the server's memory
// (agents on the server's machine, started together): from the earliest
// reading before connecting to the latest after, over all the agents'
// connections. Each agent's own figure divides the growth the others
// caused too by its connections alone. Nil unless every agent read the
// same process (or the same processes, summed).
func mergeServerMemory(reps []*Report) *Memory {
	var out *Memory
	for _, r := range reps {
		if r == nil || r.Server == nil || r.Server.Unavailable != "" || (out != nil && (r.Server.PID != out.PID || !slices.Equal(r.Server.PIDs, out.PIDs))) {
			return nil
		}
		m := r.Server
		if out == nil {
			out = &Memory{PID: m.PID, PIDs: m.PIDs, BeforeKiB: m.BeforeKiB, AfterKiB: m.AfterKiB}
		}
		out.BeforeKiB, out.AfterKiB = min(out.BeforeKiB, m.BeforeKiB), max(out.AfterKiB, m.AfterKiB)
		out.Conns += m.Conns
	}
	if out != nil {
		out.finish(out.Conns)
	}
	return out
}

// mergeConnect sums connect statistics of agents that ran at the same
// time. Latency is bounded, not exact: each percentile is the highest of
// the agents' (the merged distribution's is no higher), count and min,
// max, mean are exact. The run's exact connect latency is
// Metrics[HistConnect].
func mergeConnect(ss []*ConnectStats) *ConnectStats {
	out := &ConnectStats{}
	var errs int64
	var lat []Percentiles
	for _, s := range ss {
		out.TargetRate += s.TargetRate
		out.Attempted += s.Attempted
		out.OK += s.OK
		out.AchievedRate += s.AchievedRate
		out.Errors = addCounts(out.Errors, s.Errors)
		for k, v := range s.ErrorSamples {
			if out.ErrorSamples == nil {
				out.ErrorSamples = map[string]string{}
			}
			if _, ok := out.ErrorSamples[k]; !ok {
				out.ErrorSamples[k] = v
			}
		}
		lat = append(lat, s.Latency)
	}
	for _, v := range out.Errors {
		errs += v
	}
	out.Met = out.TargetRate > 0 && out.AchievedRate >= 0.95*out.TargetRate && float64(errs) <= 0.001*float64(out.Attempted)
	out.Latency = boundPercentiles(lat)
	return out
}

// boundPercentiles merges distributions known only by their percentiles:
// exact count, min, max and mean; each percentile the highest of the
// parts', an upper bound of the merged one's.
func boundPercentiles(ps []Percentiles) Percentiles {
	var out Percentiles
	var sum float64
	for _, p := range ps {
		if p.Count == 0 {
			continue
		}
		if out.Count == 0 || p.Min < out.Min {
			out.Min = p.Min
		}
		out.Count += p.Count
		sum += p.Mean * float64(p.Count)
		out.P50, out.P90, out.P99 = max(out.P50, p.P50), max(out.P90, p.P90), max(out.P99, p.P99)
		out.P999, out.P9999, out.Max = max(out.P999, p.P999), max(out.P9999, p.P9999), max(out.Max, p.Max)
	}
	if out.Count > 0 {
		out.Mean = sum / float64(out.Count)
	}
	return out
}

func addCounts(dst, src map[string]int64) map[string]int64 {
	for k, v := range src {
		if dst == nil {
			dst = map[string]int64{}
		}
		dst[k] += v
	}
	return dst
}

// mergeChat sums the agents' chat statistics; the latencies are the
// merged histograms'.
func mergeChat(reps []*Report, metrics map[string]Percentiles) *ChatStats {
	var out *ChatStats
	for _, r := range reps {
		if r == nil || r.Chat == nil {
			continue
		}
		if out == nil {
			out = &ChatStats{}
		}
		c := r.Chat
		out.Placement = c.Placement
		out.Pairs += c.Pairs
		out.TargetRate += c.TargetRate
		out.AchievedRate += c.AchievedRate
		out.Sent += c.Sent
		out.Acked += c.Acked
		out.SendErrors = addCounts(out.SendErrors, c.SendErrors)
		out.Received += c.Received
		out.Lost += c.Lost
		out.Duplicated += c.Duplicated
		out.Reordered += c.Reordered
		out.Unacked += c.Unacked
		out.LateSends += c.LateSends
	}
	if out != nil {
		out.EndToEnd, out.Ack = metrics[HistE2E], metrics[HistAck]
	}
	return out
}

// mergeGroup sums the agents' group statistics (groups stay whole within
// one agent).
func mergeGroup(reps []*Report, metrics map[string]Percentiles) *GroupStats {
	var out *GroupStats
	for _, r := range reps {
		if r == nil || r.Group == nil {
			continue
		}
		if out == nil {
			out = &GroupStats{}
		}
		g := r.Group
		out.Groups += g.Groups
		out.Members += g.Members
		out.GroupSize = max(out.GroupSize, g.GroupSize)
		out.CreateSeconds = max(out.CreateSeconds, g.CreateSeconds)
		out.TargetRate += g.TargetRate
		out.AchievedRate += g.AchievedRate
		out.Sent += g.Sent
		out.Acked += g.Acked
		out.Expected += g.Expected
		out.Received += g.Received
		out.Lost += g.Lost
		out.Duplicated += g.Duplicated
		out.Reordered += g.Reordered
		out.Unacked += g.Unacked
		out.Unexpected += g.Unexpected
		out.LateSends += g.LateSends
		out.SendErrors = addCounts(out.SendErrors, g.SendErrors)
	}
	if out != nil {
		out.EndToEnd, out.Ack = metrics[HistE2E], metrics[HistAck]
	}
	return out
}

// mergeStorm sums the agents' reconnect-storm statistics. The agents cut
// at the same time (their schedules start together), so the storm's
// recovery is the slowest agent's; per-connection recovery comes from the
// merged HistRecover. Reconnect latencies stay in the agents' reports.
func mergeStorm(reps []*Report, metrics map[string]Percentiles) *StormStats {
	var out *StormStats
	for _, r := range reps {
		if r == nil || r.Storm == nil {
			continue
		}
		if out == nil {
			out = &StormStats{}
		}
		st := r.Storm
		out.Conns += st.Conns
		out.TargetRate += st.TargetRate
		out.Killed += st.Killed
		out.Reconnected += st.Reconnected
		out.Failed += st.Failed
		out.FailedKinds = addCounts(out.FailedKinds, st.FailedKinds)
		out.CaughtUp += st.CaughtUp
		out.Retries = addCounts(out.Retries, st.Retries)
		out.RecoverAll = max(out.RecoverAll, st.RecoverAll)
		out.SyncRounds += st.SyncRounds
		out.Synced += st.Synced
		out.Sent += st.Sent
		out.Acked += st.Acked
		out.Skipped += st.Skipped
		out.Resent += st.Resent
		out.Unacked += st.Unacked
		out.Expected += st.Expected
		out.Received += st.Received
		out.Lost += st.Lost
		out.Stranded += st.Stranded
		out.Duplicated += st.Duplicated
		out.Redelivered += st.Redelivered
		out.Reordered += st.Reordered
		out.Unexpected += st.Unexpected
		out.SendErrors = addCounts(out.SendErrors, st.SendErrors)
	}
	if out != nil {
		out.Recover, out.EndToEnd = metrics[HistRecover], metrics[HistE2E]
	}
	return out
}

// mergeFanout sums the agents' fan-out statistics. The publisher's figures
// are agent 0's. With several agents, a publish's completion (last member)
// is the latest of the agents' last members, recorded into rec's
// HistFanoutLast; a publish some agent's subscriber missed, or whose agent
// sent no report, has none and counts as incomplete.
func mergeFanout(reps []*Report, rec *Recorder, agents int) *FanoutStats {
	var out *FanoutStats
	for i, r := range reps {
		if r == nil || r.Fanout == nil {
			continue
		}
		f := r.Fanout
		if out == nil {
			out = &FanoutStats{Topic: f.Topic, PublishVia: f.PublishVia, TargetRate: f.TargetRate, MinPerSub: math.MaxInt64}
		}
		if i == 0 { // the publisher
			out.Published, out.Measured, out.AchievedRate = f.Published, f.Measured, f.AchievedRate
			out.LateSends, out.PublishErrors = f.LateSends, f.PublishErrors
			out.ServerStamp, out.ServerCPU = f.ServerStamp, f.ServerCPU
			out.FirstMember = f.FirstMember // a single agent's; merged below otherwise
		}
		out.Subscribers += f.Subscribers
		out.SubscribeSeconds = max(out.SubscribeSeconds, f.SubscribeSeconds)
		out.SubscribeErrors = addCounts(out.SubscribeErrors, f.SubscribeErrors)
		out.Expected += f.Expected
		out.Received += f.Received
		out.Coalesced += f.Coalesced
		out.NotReceived += f.NotReceived
		out.Duplicates += f.Duplicates
		out.Reordered += f.Reordered
		out.SubsMissing += f.SubsMissing
		out.MinPerSub = min(out.MinPerSub, f.MinPerSub)
		out.MaxPerSub = max(out.MaxPerSub, f.MaxPerSub)
		out.Incomplete = max(out.Incomplete, f.Incomplete)
		out.Disconnected += f.Disconnected
		out.DisconnectKinds = addCounts(out.DisconnectKinds, f.DisconnectKinds)
		out.SubscriberErrors = addCounts(out.SubscriberErrors, f.SubscriberErrors)
		out.Unexpected += f.Unexpected
		out.DrainSeconds = max(out.DrainSeconds, f.DrainSeconds)
		out.DrainTimedOut = out.DrainTimedOut || f.DrainTimedOut
	}
	if out == nil {
		return nil
	}
	if agents > 1 {
		first := newLatency()
		out.Incomplete = mergeBySeq(reps, rec.Hist(HistFanoutLast), first)
		out.FirstMember = first.percentiles()
	}
	return out
}

// mergeBySeq records, for every measured publish, the latest of the
// agents' last members into last and the earliest first member into
// first, and returns how many measured publishes were incomplete.
func mergeBySeq(reps []*Report, last, first *latency) (incomplete int64) {
	n := 0
	for _, r := range reps {
		if r != nil && r.Fanout != nil {
			n = max(n, len(r.Fanout.LastBySeq))
		}
	}
	for k := 0; k < n; k++ {
		measured, complete := false, true
		var hi, lo int64 = 0, math.MaxInt64
		for _, r := range reps {
			if r == nil || r.Fanout == nil || k >= len(r.Fanout.LastBySeq) || k >= len(r.Fanout.FirstBySeq) {
				complete = false
				continue
			}
			switch v := r.Fanout.LastBySeq[k]; {
			case v == 0: // not measured
			case v < 0:
				measured, complete = true, false
			default:
				measured = true
				hi, lo = max(hi, v), min(lo, r.Fanout.FirstBySeq[k])
			}
		}
		switch {
		case !measured:
		case !complete:
			incomplete++
		default:
			last.record(time.Duration(hi))
			first.record(time.Duration(lo))
		}
	}
	return incomplete
}

// ---- Agent ----

// RunAgent runs one agent of a distributed run: it registers with the
// coordinator, waits for the common start, runs its share of the run while
// streaming its per-second intervals, and sends its report. It returns
// its own report.
func RunAgent(ctx context.Context, ac AgentConfig) (*Report, error) {
	if ac.Coordinator == "" {
		return nil, errors.New("loadtest: agent: no coordinator URL")
	}
	if ac.Name == "" {
		ac.Name, _ = os.Hostname()
	}
	if ac.Log == nil {
		ac.Log = io.Discard
	}
	a := &agentClient{
		base: strings.TrimRight(ac.Coordinator, "/"),
		hc:   &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}},
		log:  ac.Log,
	}
	defer a.hc.CloseIdleConnections()
	reg, err := a.register(ctx, ac.Name)
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(reg.Config, &cfg); err != nil {
		return nil, fmt.Errorf("loadtest: agent: the run's config: %w", err)
	}
	a.run, a.agent = reg.Run, reg.Agent
	cfg.Agent, cfg.Agents = reg.Agent, reg.Agents
	if len(ac.SourceAddrs) > 0 {
		cfg.SourceAddrs = ac.SourceAddrs
	}
	if len(ac.URLs) > 0 {
		cfg.URLs, cfg.URL = ac.URLs, ac.URLs[0]
	}
	cfg.Log = ac.Log
	a.logf("agent %d of %d: %s, %d conns in all; waiting for the start", reg.Agent, reg.Agents, cfg.Scenario, cfg.Conns)
	if cfg.StartAt, err = a.barrier(ctx, "start"); err != nil {
		return nil, err
	}
	cfg.Recorder = NewRecorder(cfg.StartAt)
	if ac.Progress != nil {
		cfg.Recorder.OnTick(NewProgress(ac.Progress, cfg.Recorder, cfg.Scenario))
	}
	ts := newTickSender(a)
	cfg.Recorder.OnTick(ts.enqueue)
	cfg.ready = a.barrier
	rep, runErr := Run(ctx, cfg)
	ticks, dropped := ts.close()
	msg := reportMessage{Run: a.run, Agent: a.agent, Ticks: ticks, Report: rep}
	if runErr != nil {
		msg.Error = runErr.Error()
	}
	if rep != nil {
		if dropped > 0 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d of %d per-second intervals could not be sent to the coordinator", dropped, ticks))
		}
		if msg.Hists, err = encodeHists(cfg.Recorder.Histograms()); err != nil {
			return rep, errors.Join(runErr, err)
		}
	}
	// The coordinator waits for the report even when this agent was
	// interrupted.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), agentRetryWait)
	defer cancel()
	err = a.retry(pctx, func(ctx context.Context) error { return a.post(ctx, "/v1/report", msg, nil) })
	if err != nil {
		err = fmt.Errorf("loadtest: agent: sending the report: %w", err)
	}
	return rep, errors.Join(runErr, err)
}

// agentClient talks to the coordinator.
type agentClient struct {
	base  string
	hc    *http.Client
	log   io.Writer
	run   string // static after register
	agent int    // static after register
}

func (a *agentClient) logf(format string, args ...any) {
	fmt.Fprintf(a.log, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

// statusError is a coordinator's refusal: retrying will not help.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return fmt.Sprintf("coordinator: %d %s", e.code, e.msg) }

// post sends in as JSON to path and decodes the reply into out, if any.
func (a *agentClient) post(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxReportBody)
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(body, 512))
		return &statusError{resp.StatusCode, strings.TrimSpace(string(msg))}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, body)
		return nil
	}
	return json.NewDecoder(body).Decode(out)
}

// retry calls fn until it succeeds, the coordinator refuses, or ctx ends.
func (a *agentClient) retry(ctx context.Context, fn func(context.Context) error) error {
	for {
		err := fn(ctx)
		var se *statusError
		if err == nil || errors.As(err, &se) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// register registers with the coordinator, retrying while it is not up
// yet, for registerWait at most.
func (a *agentClient) register(ctx context.Context, name string) (*registerReply, error) {
	rctx, cancel := context.WithTimeout(ctx, registerWait)
	defer cancel()
	req := registerRequest{ID: randomID(), Name: name}
	var reply registerReply
	err := a.retry(rctx, func(ctx context.Context) error {
		return a.post(ctx, "/v1/register", req, &reply)
	})
	if err != nil {
		return nil, fmt.Errorf("loadtest: agent: registering with %s: %w", a.base, err)
	}
	if reply.Agent < 0 || reply.Agent >= reply.Agents {
		return nil, fmt.Errorf("loadtest: agent: the coordinator made this agent %d of %d", reply.Agent, reply.Agents)
	}
	return &reply, nil
}

// barrier waits until every live agent has reached the named barrier and
// returns their common start. The coordinator bounds the wait (it gives up
// on silent agents); the agent gives up on an unreachable coordinator
// after agentRetryWait.
func (a *agentClient) barrier(ctx context.Context, name string) (time.Time, error) {
	req := barrierRequest{Run: a.run, Agent: a.agent, Name: name}
	failing := time.Time{} // since when requests fail
	for {
		var reply barrierReply
		rctx, cancel := context.WithTimeout(ctx, longPoll+10*time.Second)
		err := a.post(rctx, "/v1/barrier", req, &reply)
		cancel()
		var se *statusError
		switch {
		case err == nil && reply.Released:
			return reply.At, nil
		case err == nil:
			failing = time.Time{}
			continue
		case ctx.Err() != nil:
			return time.Time{}, ctx.Err()
		case errors.As(err, &se):
			return time.Time{}, fmt.Errorf("loadtest: agent: barrier %s: %w", name, err)
		}
		if failing.IsZero() {
			failing = time.Now()
		} else if time.Since(failing) > agentRetryWait {
			return time.Time{}, fmt.Errorf("loadtest: agent: barrier %s: %w", name, err)
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// tickSender sends an agent's ticks to the coordinator in order, from one
// goroutine. The recorder's ticking goroutine never waits for it: a tick
// that finds the queue full, or cannot be sent within tickMaxAge, is
// dropped and counted (the coordinator still gets the agent's totals
// with its report).
type tickSender struct {
	a       *agentClient
	q       chan queuedTick
	done    chan struct{}
	dropped atomic.Int64

	mu     sync.Mutex
	seq    int  // guarded by mu; ticks so far
	closed bool // guarded by mu
}

type queuedTick struct {
	seq int
	at  time.Time
	tk  Tick
}

func newTickSender(a *agentClient) *tickSender {
	s := &tickSender{a: a, q: make(chan queuedTick, tickQueue), done: make(chan struct{})}
	go s.loop()
	return s
}

// enqueue is the recorder's OnTick function.
func (s *tickSender) enqueue(tk Tick) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	if s.closed {
		s.dropped.Add(1)
		return
	}
	select {
	case s.q <- queuedTick{seq: s.seq, at: time.Now(), tk: tk}:
	default:
		s.dropped.Add(1)
	}
}

func (s *tickSender) loop() {
	defer close(s.done)
	for qt := range s.q {
		m := tickMessage{Run: s.a.run, Agent: s.a.agent, Seq: qt.seq, T: qt.tk.T, Counters: qt.tk.Counters, Gauges: qt.tk.Gauges}
		var err error
		if m.Hists, err = encodeHists(qt.tk.Hists); err == nil {
			ctx, cancel := context.WithDeadline(context.Background(), qt.at.Add(tickMaxAge))
			err = s.a.retry(ctx, func(ctx context.Context) error { return s.a.post(ctx, "/v1/tick", m, nil) })
			cancel()
		}
		if err != nil {
			if s.dropped.Add(1) == 1 {
				s.a.logf("agent %d: tick %d not sent: %v", s.a.agent, qt.seq, err)
			}
		}
	}
}

// close stops taking ticks and waits for the queued ones to be sent or
// dropped, which takes tickMaxAge at most. It returns the number of ticks
// and how many were dropped.
func (s *tickSender) close() (ticks int, dropped int64) {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.q)
	}
	ticks = s.seq
	s.mu.Unlock()
	<-s.done
	return ticks, s.dropped.Load()
}

// ---- Scenario helpers ----

// agentPart returns the part of cfg this agent runs: its share of Conns
// (connections, pairs or subscribers) and, in proportion, of ConnectRate,
// and of Rate if perConn (a chat pair's rate goes with the pair). Without
// agents it returns cfg itself.
func (c *Config) agentPart(perConn bool) *Config {
	if c.Agents <= 1 || c.Conns <= 0 {
		return c
	}
	lo, hi := c.share(c.Conns)
	p := *c
	p.Conns = hi - lo
	frac := float64(p.Conns) / float64(c.Conns)
	p.ConnectRate = c.ConnectRate * frac
	if perConn {
		p.Rate = c.Rate * frac
	}
	return &p
}

// scheduleStart returns when a scenario's schedule starts once its set-up
// is done: in a moment, or, in a distributed run, at the common time the
// agents agree on when every one of them has reached phase.
func (c *Config) scheduleStart(ctx context.Context, phase string) (time.Time, error) {
	if c.ready == nil {
		return time.Now().Add(100 * time.Millisecond), nil
	}
	return c.ready(ctx, phase)
}

// together waits, in a distributed run, until every agent has reached
// phase and then until their common start. Without agents it returns at
// once.
func (c *Config) together(ctx context.Context, phase string) error {
	if c.ready == nil {
		return nil
	}
	at, err := c.ready(ctx, phase)
	if err != nil {
		return err
	}
	sleepUntil(ctx, at)
	return ctx.Err()
}

// waitStart waits until at (Config.StartAt), if set, or ctx ends.
func waitStart(ctx context.Context, at time.Time) error {
	if at.IsZero() {
		return nil
	}
	sleepUntil(ctx, at)
	return ctx.Err()
}

// scheduled returns how many publishes the schedule from fr.t0 holds
// before end: what an agent that does not publish expects.
func (fr *fanRun) scheduled(end time.Time) int {
	n := 0
	for n < fr.slots && arrival(fr.t0, fr.cfg.Rate, int64(n)).Before(end) {
		n++
	}
	return n
}
