package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/loadtest/lean"
	"github.com/parley-im/parley/protocol"
)

// The fanout scenario: Conns subscriber connections subscribe to one live
// topic; one publisher connection publishes Rate values per second on an
// open-model schedule. Each value carries its sequence number and its
// intended send time (unix ns); every subscriber records, per sequence
// number, how long after the intended send time it received the value.
//
// Publishing goes over the publisher's websocket, as a "pub" frame without
// an id (no reply): the token is verified once at connect, and a publish
// costs one small websocket message. The HTTP API (POST /v1/topics/{topic})
// would cost an HTTP request, a JWT verification and a response per publish.
//
// With Config.Client "lean" (the default) the subscribers are lean
// connections: no goroutine and no client.Event per frame; their frames
// come to onLeanMessage on the pool's reactors, Conn.Tag indexing
// fanRun.subs. The publisher is always a full client.

// fanTopicPrefix is the topic namespace the scenario's tokens may use.
const fanTopicPrefix = "bench."

// fanDrain bounds the wait, after the last publish, for every live
// subscriber to receive the last value.
const fanDrain = 10 * time.Second

// subscribeWait bounds the wait for a sub reply: a full client's request
// times out after it; lean subscribing gives up when no reply came for it.
const subscribeWait = 30 * time.Second

// maxFanSlots bounds subscribers × publishes (8 bytes each in the tester).
const maxFanSlots = 64 << 20

// FanoutStats is the fanout scenario's result. Latencies run from a
// publish's intended send time (in its payload) to a subscriber's read, and
// cover publishes intended after the warm-up.
type FanoutStats struct {
	Subscribers int     `json:"subscribers"`
	Topic       string  `json:"topic"`
	PublishVia  string  `json:"publish_via"` // "websocket": pub frames without id
	TargetRate  float64 `json:"target_rate"` // publishes per second
	// Published counts pub frames written; Measured those intended after
	// the warm-up; AchievedRate is Measured per second of Duration.
	Published    int64   `json:"published"`
	Measured     int64   `json:"measured"`
	AchievedRate float64 `json:"achieved_rate"`
	// LateSends counts publishes that left more than 10 ms after their
	// intended time.
	LateSends     int64            `json:"late_sends"`
	PublishErrors map[string]int64 `json:"publish_errors,omitempty"`

	// Subscribing: how long it took to subscribe every subscriber, and the
	// latency of one sub request.
	SubscribeSeconds float64          `json:"subscribe_seconds"`
	Subscribe        Percentiles      `json:"subscribe_latency"`
	SubscribeErrors  map[string]int64 `json:"subscribe_errors,omitempty"`

	// Expected is Published × Subscribers; Received the distinct
	// (subscriber, sequence number) pairs received, so Expected = Received
	// + Coalesced + NotReceived.
	Expected int64 `json:"expected"`
	Received int64 `json:"received"`
	// Coalesced counts sequence numbers a subscriber never got although it
	// got a later one: latest-value semantics let the server replace a
	// pending value with a newer one for a slow subscriber (or it was
	// lost; the tester cannot tell the two apart).
	Coalesced int64 `json:"coalesced_or_missed"`
	// NotReceived counts sequence numbers a subscriber got neither
	// themselves nor anything later by the end of the drain.
	NotReceived int64 `json:"not_received"`
	Duplicates  int64 `json:"duplicates"`
	Reordered   int64 `json:"reordered"` // received after a later one
	// SubsMissing counts subscribers that missed at least one value;
	// MinPerSub and MaxPerSub are the fewest and most values one
	// subscriber received.
	SubsMissing int   `json:"subscribers_missing"`
	MinPerSub   int64 `json:"min_received_per_subscriber"`
	MaxPerSub   int64 `json:"max_received_per_subscriber"`
	// Incomplete counts measured publishes some subscriber never received
	// (they have no fan-out completion time).
	Incomplete int64 `json:"incomplete_publishes"`
	// Disconnected counts subscribers whose connection ended before the
	// end of the drain, by error kind in DisconnectKinds.
	Disconnected    int              `json:"disconnected"`
	DisconnectKinds map[string]int64 `json:"disconnect_kinds,omitempty"`
	// SubscriberErrors counts error frames the subscribers received, by
	// code; Unexpected counts frames they could not attribute.
	SubscriberErrors map[string]int64 `json:"subscriber_errors,omitempty"`
	Unexpected       int64            `json:"unexpected_frames"`
	// DrainSeconds is the wait after the last publish for the last value to
	// reach every live subscriber; DrainTimedOut is set if it did not.
	DrainSeconds  float64 `json:"drain_seconds"`
	DrainTimedOut bool    `json:"drain_timed_out,omitempty"`

	// LastMember is, per complete measured publish, the latency of the
	// last subscriber to receive it (fan-out completion); FirstMember of
	// the first; AllMembers every subscriber's latency of every measured
	// publish.
	LastMember  Percentiles `json:"last_member"`
	FirstMember Percentiles `json:"first_member"`
	AllMembers  Percentiles `json:"all_members"`
	// ServerStamp is the intended send time → the server's "ts" stamp on
	// the event (millisecond resolution): the publish leg alone.
	ServerStamp Percentiles `json:"intended_to_server_ts"`
	// LastBySeq and FirstBySeq are set by the agents of a distributed run
	// for the coordinator, which takes the maximum (minimum) over agents:
	// by sequence number, the latency in ns of the agent's last (first)
	// subscriber to receive it, −1 if one of them missed it, 0 if it was
	// not measured.
	LastBySeq  []int64 `json:"last_by_seq,omitempty"`
	FirstBySeq []int64 `json:"first_by_seq,omitempty"`

	// CPU use over the measured window (warm-up end to last publish) of
	// the server (ServerPID; nil without it) and of the load tester.
	ServerCPU *CPUWindow `json:"server_cpu,omitempty"`
	TesterCPU *CPUWindow `json:"tester_cpu_window,omitempty"`
}

// CPUWindow is one process's CPU use over a window, in CPUs (1 = one core
// busy all the time). PeakCores is the busiest interval of at least 0.5 s
// between the 1 s samples.
type CPUWindow struct {
	PID         int     `json:"pid,omitempty"`
	Seconds     float64 `json:"cpu_seconds"`
	WallSeconds float64 `json:"wall_seconds"`
	Cores       float64 `json:"cores"`         // Seconds / WallSeconds
	PeakCores   float64 `json:"peak_1s_cores"` // busiest 1 s sample
	Unavailable string  `json:"unavailable,omitempty"`
}

// fanRun is the shared state of a fanout run.
type fanRun struct {
	cfg   *Config
	topic string
	slots int // sequence numbers the run may publish
	subs  []*fanSub
	got   []atomic.Int32 // by seq: subscribers that received it

	published atomic.Int64
	late      atomic.Int64
	pubErr    counts
	subErr    counts // error frames the subscribers received, other than sub replies
	unexp     atomic.Int64
	stampLat  *latency
	all, last *latency      // the recorder's HistFanoutAll and HistFanoutLast
	received  *atomic.Int64 // the recorder's CountReceived
	stamped   []atomic.Bool // by seq: ServerStamp recorded
	measure   atomic.Int64  // unix ns: intended times from here on are measured
	t0        time.Time     // the schedule's start; set before publishing
	disc      counts        // subscribers whose connection ended, by kind

	// Subscribing lean connections (subscribeLean and onLeanReply).
	subLat    *latency      // the recorder's HistSubscribe
	subSlots  chan struct{} // one per sub request awaiting its reply; cap MaxInFlight
	subErrs   counts        // sub requests that failed, by error code or kind
	subsStart time.Time     // set by subscribeLean before its first Send
}

// fanSub is one subscriber. Its connection's read goroutine (full client)
// or reactor (lean) is the only writer of its books.
type fanSub struct {
	mu      sync.Mutex
	lat     []int64 // guarded by mu; by seq: receive − intended, ns; 0 not received
	dup     int64   // guarded by mu
	reorder int64   // guarded by mu
	maxSeen int     // guarded by mu; -1 before any

	// subAt is its lean sub request's state: 0 not sent; > 0 awaiting the
	// reply since subAt−1 ns after fanRun.subsStart; subDone answered or
	// given up. Whoever swaps a positive value out owns the outcome.
	subAt atomic.Int64
}

// subDone is fanSub.subAt once the sub request has its outcome.
const subDone = -1

// newFanRun sets up the books of n subscribers and slots sequence numbers.
func newFanRun(cfg *Config, topic string, n, slots int) *fanRun {
	fr := &fanRun{
		cfg:      cfg,
		topic:    topic,
		slots:    slots,
		got:      make([]atomic.Int32, slots),
		stampLat: newLatency(),
		all:      cfg.Recorder.Hist(HistFanoutAll),
		last:     cfg.Recorder.Hist(HistFanoutLast),
		received: cfg.Recorder.Counter(CountReceived),
		stamped:  make([]atomic.Bool, slots),
		subLat:   cfg.Recorder.Hist(HistSubscribe),
		subSlots: make(chan struct{}, max(1, cfg.MaxInFlight)),
		subs:     make([]*fanSub, n),
	}
	for i := range fr.subs {
		fr.subs[i] = &fanSub{lat: make([]int64, slots), maxSeen: -1}
	}
	return fr
}

// token is the token of this agent's i-th connection (the publisher is
// the last): from the tokens file, whose tokens must then carry the topic
// rights, or minted with them.
func (fr *fanRun) token(d *dialer, i int, user string, pub bool, ttl time.Duration) (string, error) {
	if fr.cfg.TokensFile != "" {
		tok, _, err := d.tokenFor(i, user, "d", ttl)
		return tok, err
	}
	return fanToken(fr.cfg, user, pub, ttl)
}

// fanToken mints a token for user with topic rights under fanTopicPrefix.
func fanToken(cfg *Config, user string, pub bool, ttl time.Duration) (string, error) {
	c := auth.Claims{Device: "d"}
	c.Subject = user
	if pub {
		c.Topics.Pub = []string{fanTopicPrefix + ">"}
	} else {
		c.Topics.Sub = []string{fanTopicPrefix + ">"}
	}
	return auth.Mint(cfg.Key, c, ttl, time.Now())
}

func runFanout(ctx context.Context, cfg *Config, r *Report) (*FanoutStats, error) {
	cfg = cfg.agentPart(false) // its share of the subscribers; agent 0 publishes
	N := cfg.Conns
	window := cfg.Warmup + cfg.Duration
	slots := int(math.Ceil(cfg.Rate*window.Seconds())) + 1
	if int64(N)*int64(slots) > maxFanSlots {
		return nil, fmt.Errorf("loadtest: fanout: %d subscribers × %d publishes is too much bookkeeping (max %d); shorten --duration or lower --rate", N, slots, maxFanSlots)
	}
	fr := newFanRun(cfg, fmt.Sprintf("%sfanout.lt%d", fanTopicPrefix, cfg.Seed), N, slots)
	fs := &FanoutStats{Subscribers: N, Topic: fr.topic, PublishVia: "websocket", TargetRate: cfg.Rate}
	if cfg.Rate > 40 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%.0f publishes/s from one connection is near the server's default limits (50 frames/s per connection, 100/s per user)", cfg.Rate))
	}
	ttl := window + time.Hour
	tokens := make([]string, N)
	d := newDialer(cfg)
	for i := range tokens {
		var err error
		if tokens[i], err = fr.token(d, i, userID(cfg, "f", i), false, ttl); err != nil {
			return nil, err
		}
	}

	useLean := cfg.Client == "lean"
	logf(cfg, "fanout: opening %d subscriber connections (%s client) at %.0f/s", N, cfg.Client, cfg.ConnectRate)
	var res *openResult
	if useLean {
		res = d.openLeanHooked(ctx, N, cfg.ConnectRate, tokens, true, leanHooks{onMessage: fr.onLeanMessage, onClose: fr.onLeanClose})
	} else {
		res = d.openAll(ctx, N, cfg.ConnectRate, tokens, func(i int) func(client.Event) {
			return fr.onSub(fr.subs[i], i == 0)
		}, true)
	}
	defer res.close()
	if err := allOpened(r, "fanout", cfg.ConnectRate, N, res); err != nil {
		return fs, err
	}

	logf(cfg, "fanout: subscribing %d connections to %s", N, fr.topic)
	subscribe := func() error { return fr.subscribeAll(ctx, res.conns, fs) }
	if useLean {
		subscribe = func() error { return fr.subscribeLean(ctx, res.lean, fs) }
	}
	if err := subscribe(); err != nil {
		return fs, err
	}
	logf(cfg, "fanout: subscribed in %.2f s (sub p99 %.1f ms)", fs.SubscribeSeconds, fs.Subscribe.P99)

	var pub *client.Conn // nil in agents other than 0
	if cfg.Agent == 0 {
		ptok, err := fr.token(d, N, userID(cfg, "fp", 0), true, ttl)
		if err != nil {
			return fs, err
		}
		// The publisher on the first URL; the subscribers round robin
		// over all of them.
		if pub, err = d.dialURL(ctx, 0, ptok, fr.onPub); err != nil {
			return fs, fmt.Errorf("loadtest: fanout: publisher: %w", err)
		}
		defer pub.CloseNow()
	}

	t0, err := cfg.scheduleStart(ctx, "fanout")
	if err != nil {
		return fs, err
	}
	measure := t0.Add(cfg.Warmup)
	end := t0.Add(window)
	fr.t0 = t0
	fr.measure.Store(measure.UnixNano())
	logf(cfg, "fanout: %d subscribers, %.1f publishes/s, warm-up %v, measuring %v", N, cfg.Rate, cfg.Warmup, cfg.Duration)

	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		if pub == nil {
			sleepUntil(ctx, end) // agent 0 publishes
			return
		}
		fr.publishLoop(ctx, pub, t0, end)
	}()
	// CPU over the measured window, sampled every second for the peak.
	sleepUntil(ctx, measure)
	var srv *cpuSampler
	if cfg.ServerPID > 0 {
		srv = newCPUSampler(cfg.ServerPID)
	}
	tst := newCPUSampler(os.Getpid())
	tick := time.NewTicker(time.Second)
	for done := false; !done; {
		select {
		case <-pubDone:
			done = true
		case <-tick.C:
			srv.sample()
			tst.sample()
		}
	}
	tick.Stop()
	fs.ServerCPU, fs.TesterCPU = srv.finish(), tst.finish()

	last := int(fr.published.Load()) - 1
	if pub == nil {
		last = fr.scheduled(end) - 1
	}
	drainStart := time.Now()
	logf(cfg, "fanout: %d published; waiting for the last value to reach every subscriber", last+1)
	fs.DrainTimedOut = !fr.drain(ctx, res.alive, last, fanDrain)
	fs.DrainSeconds = time.Since(drainStart).Seconds()

	// Disconnections, before our own closes: lean subscribers were
	// counted as they ended (onLeanClose).
	for _, c := range res.conns {
		if err := c.Err(); err != nil {
			fr.disc.add(errKind(err))
		}
	}
	if dk := fr.disc.snapshot(); len(dk) > 0 {
		fs.DisconnectKinds = dk
		for _, n := range dk {
			fs.Disconnected += int(n)
		}
	}
	if pub != nil && pub.Err() != nil {
		fr.pubErr.add("publisher_closed_" + errKind(pub.Err()))
	}
	fr.tally(fs, last+1, measure)
	if fs.Measured > 0 && cfg.Duration > 0 {
		fs.AchievedRate = float64(fs.Measured) / cfg.Duration.Seconds()
	}
	// The delivery books, for the summary and --slo loss, dup and
	// reorder. A value coalesced away is not lost: on a latest-value topic
	// the server may replace a slow subscriber's pending value with a
	// newer one, so only the values a subscriber got neither themselves
	// nor anything later count as lost (Expected = Received + Coalesced +
	// NotReceived).
	cfg.Recorder.addDelivery(fs.Expected, fs.NotReceived, fs.Duplicates, fs.Reordered)
	fr.warn(fs, r)
	return fs, ctx.Err()
}

// subscribeAll subscribes every connection to the topic, a bounded number
// at a time.
func (fr *fanRun) subscribeAll(ctx context.Context, conns []*client.Conn, fs *FanoutStats) error {
	lat := fr.subLat
	errs := &fr.subErrs
	workers := min(256, fr.cfg.MaxInFlight, len(conns))
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(conns) || ctx.Err() != nil {
					return
				}
				sctx, cancel := context.WithTimeout(ctx, subscribeWait)
				t := time.Now()
				err := conns[i].Subscribe(sctx, fr.topic)
				cancel()
				if err != nil {
					var pe *protocol.Error
					if errors.As(err, &pe) {
						errs.add(pe.Code)
					} else {
						errs.add(errKind(err))
					}
					continue
				}
				lat.record(time.Since(t))
			}
		}()
	}
	wg.Wait()
	return fr.subscribed(ctx, len(conns), start, fs)
}

// subscribed fills in the subscribe figures of n requests started at
// start and fails the run unless all succeeded.
func (fr *fanRun) subscribed(ctx context.Context, n int, start time.Time, fs *FanoutStats) error {
	fs.SubscribeSeconds = time.Since(start).Seconds()
	fs.Subscribe = fr.subLat.percentiles()
	fs.SubscribeErrors = fr.subErrs.snapshot()
	if fs.Subscribe.Count != int64(n) {
		return fmt.Errorf("loadtest: fanout: %d of %d subscriptions failed (%s)", int64(n)-fs.Subscribe.Count, n, fmtCounts(fs.SubscribeErrors))
	}
	return ctx.Err()
}

// subscribeLean subscribes every lean connection with a sub frame whose id
// is its index; onLeanReply takes the replies. At most MaxInFlight requests
// await their reply at once; the wait for one gives up after
// subscribeWait without any reply, and what is still unanswered then
// counts as "timeout".
func (fr *fanRun) subscribeLean(ctx context.Context, conns []*lean.Conn, fs *FanoutStats) error {
	start := time.Now()
	fr.subsStart = start // before the first Send, which orders it before every reply
	stall := time.NewTimer(subscribeWait)
	defer stall.Stop()
	acquire := func() bool {
		select {
		case fr.subSlots <- struct{}{}:
			return true
		default:
		}
		stall.Reset(subscribeWait) // since the last reply, at the latest
		select {
		case fr.subSlots <- struct{}{}:
			return true
		case <-stall.C:
		case <-ctx.Done():
		}
		return false
	}
	buf := make([]byte, 0, 64+len(fr.topic))
	gaveUp := false
	for i, c := range conns {
		if gaveUp = !acquire(); gaveUp {
			break
		}
		buf = append(buf[:0], `{"type":"sub","id":"`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, `","topic":`...)
		buf = protocol.AppendString(buf, fr.topic)
		buf = append(buf, '}')
		s := fr.subs[i]
		s.subAt.Store(int64(time.Since(start)) + 1)
		if err := c.Send(buf); err != nil && s.subAt.Swap(subDone) > 0 {
			fr.subErrs.add(lean.ErrKind(err))
			<-fr.subSlots
		}
	}
	// The replies are in once every slot is free again.
	for k := 0; k < cap(fr.subSlots) && !gaveUp; k++ {
		gaveUp = !acquire()
	}
	for _, s := range fr.subs {
		switch at := s.subAt.Swap(subDone); {
		case ctx.Err() != nil:
		case at > 0:
			fr.subErrs.add("timeout")
		case at == 0:
			fr.subErrs.add("not_sent") // the wait gave up before its turn
		}
	}
	return fr.subscribed(ctx, len(conns), start, fs)
}

// Frame type prefixes the lean subscribers' frames are sorted by (the
// server writes the type first).
var (
	rawEvent  = []byte(`{"type":"event",`)
	rawResult = []byte(`{"type":"result"`)
	rawError  = []byte(`{"type":"error"`)
)

// onLeanMessage is the lean subscribers' lean.Config.OnMessage: c.Tag
// indexes fr.subs. It runs on a reactor, so an event costs what onEvent
// costs and nothing more.
func (fr *fanRun) onLeanMessage(c *lean.Conn, frame []byte) {
	i := int(c.Tag)
	if i < 0 || i >= len(fr.subs) {
		fr.unexp.Add(1)
		return
	}
	switch {
	case bytes.HasPrefix(frame, rawEvent):
		fr.onEvent(fr.subs[i], i == 0, frame)
	case bytes.HasPrefix(frame, rawResult), bytes.HasPrefix(frame, rawError):
		fr.onLeanReply(fr.subs[i], i, frame)
	default:
		fr.unexp.Add(1)
	}
}

// onLeanReply handles a result or error frame of lean subscriber i: the
// reply to its sub request (id i) records the subscribe latency or error
// and frees a slot; any other error frame is a subscriber error. Once per
// subscriber, so it may decode with encoding/json.
func (fr *fanRun) onLeanReply(s *fanSub, i int, frame []byte) {
	var reply struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Code string `json:"code"`
	}
	if json.Unmarshal(frame, &reply) != nil {
		fr.unexp.Add(1)
		return
	}
	isErr := reply.Type == protocol.TypeError
	if reply.ID != strconv.Itoa(i) {
		if isErr {
			fr.subErr.add(reply.Code)
		} else {
			fr.unexp.Add(1)
		}
		return
	}
	at := s.subAt.Swap(subDone)
	if at <= 0 { // after subscribeLean gave up, or a second reply
		fr.unexp.Add(1)
		return
	}
	if isErr {
		fr.subErrs.add(reply.Code)
	} else {
		fr.subLat.record(time.Since(fr.subsStart) - time.Duration(at-1))
	}
	fr.freeSlot()
}

// freeSlot frees a sub request's slot without ever blocking the reactor.
func (fr *fanRun) freeSlot() {
	select {
	case <-fr.subSlots:
	default:
	}
}

// onLeanClose is the lean subscribers' lean.Config.OnClose: a connection
// that ended other than by the run's own close is a disconnection, and
// fails its sub request if that still awaits its reply.
func (fr *fanRun) onLeanClose(c *lean.Conn, code int, err error) {
	if errors.Is(err, lean.ErrClosed) {
		return
	}
	kind := lean.ErrKind(err)
	if code != 0 {
		kind = fmt.Sprintf("close_%d", code)
	}
	fr.disc.add(kind)
	if i := int(c.Tag); i >= 0 && i < len(fr.subs) && fr.subs[i].subAt.Swap(subDone) > 0 {
		fr.subErrs.add(kind)
		fr.freeSlot()
	}
}

// onSub records a full client subscriber's events.
func (fr *fanRun) onSub(s *fanSub, stamp bool) func(client.Event) {
	return func(ev client.Event) {
		if ev.Type != protocol.TypeEvent {
			if e := ev.AsError(); e != nil {
				fr.subErr.add(e.Code)
			} else {
				fr.unexp.Add(1)
			}
			return
		}
		fr.onEvent(s, stamp, ev.Raw)
	}
}

// onEvent records an event frame (its JSON, valid during the call) that
// subscriber s received; stamp: it is the subscriber that measures the
// server's stamps. It runs on the connection's read goroutine or reactor,
// so it only parses two numbers and stores one, and allocates nothing.
func (fr *fanRun) onEvent(s *fanSub, stamp bool, raw []byte) {
	now := time.Now().UnixNano()
	seq, sent, ok := parseFanEvent(raw)
	if !ok || seq < 0 || seq >= fr.slots {
		fr.unexp.Add(1)
		return
	}
	d := now - sent
	if d < 1 {
		d = 1 // 0 means "not received"
	}
	s.mu.Lock()
	first := s.lat[seq] == 0
	if first {
		s.lat[seq] = d
		if seq < s.maxSeen {
			s.reorder++
		}
		s.maxSeen = max(s.maxSeen, seq)
	} else {
		s.dup++
	}
	s.mu.Unlock()
	if first {
		fr.received.Add(1)
		n := fr.got[seq].Add(1)
		if sent >= fr.measure.Load() {
			fr.all.record(time.Duration(d))
			if int(n) == len(fr.subs) {
				fr.last.record(time.Duration(d))
			}
		}
	}
	if stamp && first && sent >= fr.measure.Load() && !fr.stamped[seq].Swap(true) {
		if ts, ok := fanField(raw, `,"ts":`); ok {
			fr.stampLat.record(time.Duration(ts*int64(time.Millisecond) - sent))
		}
	}
}

// onPub counts what the server says to the publisher: only errors, since
// its pub frames carry no id.
func (fr *fanRun) onPub(ev client.Event) {
	if e := ev.AsError(); e != nil {
		fr.pubErr.add(e.Code)
	}
}

// publishLoop publishes on the open-model schedule t0 + k/Rate until end.
func (fr *fanRun) publishLoop(ctx context.Context, c *client.Conn, t0, end time.Time) {
	buf := make([]byte, 0, 64)
	sched := func(k int) time.Time { return arrival(t0, fr.cfg.Rate, int64(k)) }
	onSchedule(ctx, fr.slots, sched, end, &fr.late, func(k int, at time.Time) bool {
		buf = append(buf[:0], `{"seq":`...)
		buf = strconv.AppendInt(buf, int64(k), 10)
		buf = append(buf, `,"sent":`...)
		buf = strconv.AppendInt(buf, at.UnixNano(), 10)
		buf = append(buf, '}')
		f := protocol.Frame{Type: protocol.TypePublish, Topic: fr.topic, Data: json.RawMessage(buf)}
		if err := c.WriteFrame(ctx, f); err != nil {
			fr.pubErr.add("write")
			return false
		}
		fr.published.Store(int64(k + 1))
		fr.cfg.Recorder.Add(CountSent, 1)
		return true
	})
}

// drain waits until every live subscriber (alive counts them) has the
// last value (so every earlier one was either received or coalesced), or
// until timeout. It reports whether they all got it.
func (fr *fanRun) drain(ctx context.Context, alive func() int, last int, timeout time.Duration) bool {
	if last < 0 {
		return true
	}
	deadline := time.Now().Add(timeout)
	for {
		if int(fr.got[last].Load()) >= alive() {
			return true
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return false
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// tally computes the counts and distributions of the first n sequence
// numbers.
func (fr *fanRun) tally(fs *FanoutStats, n int, measure time.Time) {
	fs.Published = int64(n)
	fs.Expected = int64(n) * int64(len(fr.subs))
	fs.PublishErrors = fr.pubErr.snapshot()
	fs.LateSends = fr.late.Load()
	fs.SubscriberErrors = fr.subErr.snapshot()
	fs.Unexpected = fr.unexp.Load()
	fs.MinPerSub = math.MaxInt64
	all, lastM, firstM := newLatency(), newLatency(), newLatency()
	measured := make([]bool, n)
	for k := range measured {
		measured[k] = !arrival(fr.t0, fr.cfg.Rate, int64(k)).Before(measure)
		if measured[k] {
			fs.Measured++
		}
	}
	maxLat := make([]int64, n)
	minLat := make([]int64, n)
	complete := make([]bool, n)
	for k := range complete {
		complete[k] = true
		minLat[k] = math.MaxInt64
	}
	for _, s := range fr.subs {
		s.mu.Lock()
		var got int64
		missed := false
		for k := 0; k < n; k++ {
			d := s.lat[k]
			if d == 0 {
				complete[k] = false
				missed = true
				if k < s.maxSeen {
					fs.Coalesced++
				} else {
					fs.NotReceived++
				}
				continue
			}
			got++
			if measured[k] {
				all.record(time.Duration(d))
				maxLat[k] = max(maxLat[k], d)
				minLat[k] = min(minLat[k], d)
			}
		}
		fs.Duplicates += s.dup
		fs.Reordered += s.reorder
		s.mu.Unlock()
		fs.Received += got
		fs.MinPerSub = min(fs.MinPerSub, got)
		fs.MaxPerSub = max(fs.MaxPerSub, got)
		if missed {
			fs.SubsMissing++
		}
	}
	if len(fr.subs) == 0 {
		fs.MinPerSub = 0
	}
	if fr.cfg.Agents > 1 {
		fs.LastBySeq, fs.FirstBySeq = make([]int64, n), make([]int64, n)
	}
	for k := 0; k < n; k++ {
		if !measured[k] {
			continue
		}
		if !complete[k] {
			fs.Incomplete++
			if fs.LastBySeq != nil {
				fs.LastBySeq[k], fs.FirstBySeq[k] = -1, -1
			}
			continue
		}
		if fs.LastBySeq != nil {
			fs.LastBySeq[k], fs.FirstBySeq[k] = maxLat[k], minLat[k]
		}
		lastM.record(time.Duration(maxLat[k]))
		firstM.record(time.Duration(minLat[k]))
	}
	fs.AllMembers = all.percentiles()
	fs.LastMember = lastM.percentiles()
	fs.FirstMember = firstM.percentiles()
	fs.ServerStamp = fr.stampLat.percentiles()
}

func (fr *fanRun) warn(fs *FanoutStats, r *Report) {
	if fs.Coalesced+fs.NotReceived > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d of %d values did not reach their subscriber (%d coalesced or missed, %d not received); %d subscribers affected, %d publishes without a completion time",
			fs.Coalesced+fs.NotReceived, fs.Expected, fs.Coalesced, fs.NotReceived, fs.SubsMissing, fs.Incomplete))
	}
	if fs.Disconnected > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d subscribers were disconnected (%s)", fs.Disconnected, fmtCounts(fs.DisconnectKinds)))
	}
	if fs.DrainTimedOut {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the last value had not reached every live subscriber %v after the last publish", fanDrain))
	}
	if len(fs.PublishErrors) > 0 {
		r.Warnings = append(r.Warnings, "publish errors: "+fmtCounts(fs.PublishErrors))
	}
	if c := fs.TesterCPU; c != nil && c.Cores >= 0.85*float64(r.GOMAXPROCS) {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the load tester used %.2f of %d CPUs during the measured window: its latencies include its own queueing", c.Cores, r.GOMAXPROCS))
	}
}

// parseFanEvent reads seq and sent from an event frame whose data is the
// publisher's compact {"seq":N,"sent":T}; other shapes go through
// encoding/json.
func parseFanEvent(b []byte) (seq int, sent int64, ok bool) {
	if i := bytes.Index(b, []byte(`"data":{"seq":`)); i >= 0 {
		s, ok1 := fanField(b[i:], `"seq":`)
		t, ok2 := fanField(b[i:], `,"sent":`)
		if ok1 && ok2 && s <= math.MaxInt32 {
			return int(s), t, true
		}
	}
	var ev struct {
		Data struct {
			Seq  *int   `json:"seq"`
			Sent *int64 `json:"sent"`
		} `json:"data"`
	}
	if json.Unmarshal(b, &ev) != nil || ev.Data.Seq == nil || ev.Data.Sent == nil {
		return 0, 0, false
	}
	return *ev.Data.Seq, *ev.Data.Sent, true
}

// fanField parses the non-negative integer after the first key in b.
func fanField(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	j := 0
	for j < len(b) && j < 19 && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b[:j]), 10, 64)
	return v, err == nil
}

// cpuSampler measures a process's CPU use from /proc/<pid>/stat over a
// window, with the busiest interval between samples. A nil sampler does
// nothing.
type cpuSampler struct {
	pid              int
	t0, tPrev, tLast time.Time
	c0, cPrev, cLast time.Duration
	peak             float64
	err              error
}

func newCPUSampler(pid int) *cpuSampler {
	s := &cpuSampler{pid: pid, t0: time.Now()}
	s.c0, s.err = cpuTimeOf(pid)
	s.tPrev, s.cPrev = s.t0, s.c0
	s.tLast, s.cLast = s.t0, s.c0
	return s
}

func (s *cpuSampler) sample() {
	if s == nil || s.err != nil {
		return
	}
	c, err := cpuTimeOf(s.pid)
	if err != nil {
		s.err = err
		return
	}
	now := time.Now()
	// /proc counts in 10 ms ticks: a short interval would give a bogus peak.
	if dt := now.Sub(s.tPrev); dt >= 500*time.Millisecond {
		s.peak = max(s.peak, (c-s.cPrev).Seconds()/dt.Seconds())
		s.tPrev, s.cPrev = now, c
	}
	s.tLast, s.cLast = now, c
}

func (s *cpuSampler) finish() *CPUWindow {
	if s == nil {
		return nil
	}
	s.sample()
	w := &CPUWindow{PID: s.pid}
	if s.err != nil {
		w.Unavailable = s.err.Error()
		return w
	}
	w.Seconds = (s.cLast - s.c0).Seconds()
	w.WallSeconds = s.tLast.Sub(s.t0).Seconds()
	if w.WallSeconds > 0 {
		w.Cores = w.Seconds / w.WallSeconds
	}
	w.PeakCores = max(s.peak, w.Cores)
	return w
}

// cpuTimeOf returns process pid's user+system CPU time (/proc/<pid>/stat).
func cpuTimeOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

func sleepUntil(ctx context.Context, t time.Time) { sleep(ctx, time.Until(t)) }

// writeFanout writes the fan-out part of the human summary.
func writeFanout(w io.Writer, f *FanoutStats) {
	{
		fmt.Fprintf(w, "  fanout: %d subscribers on %s, publish via %s, target %.1f/s, achieved %.1f/s; published %d (measured %d), late %d\n",
			f.Subscribers, f.Topic, f.PublishVia, f.TargetRate, f.AchievedRate, f.Published, f.Measured, f.LateSends)
		fmt.Fprintf(w, "  subscribe: all in %.2f s", f.SubscribeSeconds)
		if len(f.SubscribeErrors) > 0 {
			fmt.Fprintf(w, ", errors %s", fmtCounts(f.SubscribeErrors))
		}
		fmt.Fprintln(w)
		writePct(w, "  sub latency", f.Subscribe)
		fmt.Fprintf(w, "  delivery: expected %d received %d coalesced/missed %d not received %d dup %d reordered %d; per subscriber %d..%d; %d subscribers missed some; %d incomplete publishes; %d disconnected; drain %.2f s\n",
			f.Expected, f.Received, f.Coalesced, f.NotReceived, f.Duplicates, f.Reordered, f.MinPerSub, f.MaxPerSub, f.SubsMissing, f.Incomplete, f.Disconnected, f.DrainSeconds)
		if len(f.SubscriberErrors) > 0 || f.Unexpected > 0 {
			fmt.Fprintf(w, "  subscriber errors: %s; unexpected frames %d\n", fmtCounts(f.SubscriberErrors), f.Unexpected)
		}
		writePct(w, "last member ", f.LastMember)
		writePct(w, "first member", f.FirstMember)
		writePct(w, "all members ", f.AllMembers)
		writePct(w, "to server ts", f.ServerStamp)
		for _, c := range []struct {
			name string
			c    *CPUWindow
		}{{"server", f.ServerCPU}, {"tester", f.TesterCPU}} {
			switch {
			case c.c == nil:
			case c.c.Unavailable != "":
				fmt.Fprintf(w, "  %s CPU (measured window): unavailable (%s)\n", c.name, c.c.Unavailable)
			default:
				fmt.Fprintf(w, "  %s CPU (measured window): %.2f cores avg, %.2f peak 1 s (%.1f s over %.1f s)\n", c.name, c.c.Cores, c.c.PeakCores, c.c.Seconds, c.c.WallSeconds)
			}
		}
	}
}
