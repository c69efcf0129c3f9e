package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// The storm scenario, a reconnect storm: Conns connections in pairs, each
// pair a 1:1 conversation whose two users both send, Rate messages per
// second over all of them (stamped bodies, as in the group scenario).
// After the warm-up KillPercent of the connections are cut at once
// (CloseNow: no close frame, the server sees the TCP connection drop) while
// their peers keep sending to them. Each cut connection, like a mobile
// client, waits a random 0..stormJitter, dials again (backing off and
// retrying on 429, 5xx and reconnect close codes: see redial), then syncs
// from its gap-free position until it holds every message of its
// conversation up to the last_seq the server reported, and finally resends
// what it wrote before the cut and never saw acked (same cmid: the server
// answers with the original ack).
//
// A connection's recovery time runs from its cut to that catch-up
// (HistRecover); the storm's from the first cut to the last catch-up.
//
// Duplicates: a device stores messages by (conversation, seq), and sync
// may return a message it already received live (the protocol allows it);
// those count as Redelivered, not as duplicates. Duplicated counts a seq
// delivered twice live on one socket, which the server must never do.

// Reconnect policy (storm, presence): a client's full-jitter backoff,
// random(0, min(reconnectMaxDelay, reconnectBase × 2^attempt)), plus the
// wait a 429's retry_after_ms asks for, at most reconnectAttempts dials.
const (
	reconnectAttempts = 10
	reconnectBase     = 100 * time.Millisecond
	reconnectMaxDelay = 5 * time.Second
)

const (
	// stormJitter spreads the reconnects: each waits random 0..stormJitter.
	stormJitter = time.Second
	// stormSyncRounds bounds the sync round trips of one catch-up.
	stormSyncRounds = 50
	// stormRecoverMax bounds the wait for the last connection to recover.
	stormRecoverMax = 2 * time.Minute
	// streamStorm is the storm's random stream (victims, jitter, backoff).
	streamStorm uint64 = 9 << 56
)

// StormStats is the reconnect storm's result.
type StormStats struct {
	Conns      int     `json:"conns"`
	TargetRate float64 `json:"target_rate"` // background messages per second
	// Killed connections were cut at once; Reconnected got a hello again;
	// Failed gave up (by error kind in FailedKinds); CaughtUp synced to the
	// server's last_seq.
	Killed      int              `json:"killed"`
	Reconnected int              `json:"reconnected"`
	Failed      int              `json:"failed"`
	FailedKinds map[string]int64 `json:"failed_kinds,omitempty"`
	CaughtUp    int              `json:"caught_up"`
	// Retries counts failed dials that were retried, by kind (http_429,
	// close_4005, refused, ...).
	Retries map[string]int64 `json:"retries,omitempty"`
	// RecoverAll is the first cut → the last catch-up, seconds; Recover
	// each connection's cut → catch-up; Reconnect its cut → hello.
	RecoverAll float64     `json:"recover_all_seconds"`
	Recover    Percentiles `json:"recover"`
	Reconnect  Percentiles `json:"reconnect"`
	// SyncRounds counts sync requests; Synced the peer's messages they
	// brought that the device did not hold.
	SyncRounds int64 `json:"sync_rounds"`
	Synced     int64 `json:"synced"`

	Sent  int64 `json:"sent"`
	Acked int64 `json:"acked"`
	// Skipped counts sends due while their sender was cut (the schedule
	// runs on); Resent the unacked ones written again after the reconnect.
	Skipped int64 `json:"skipped"`
	Resent  int64 `json:"resent"`
	Unacked int64 `json:"unacked"`
	// Expected is Acked (one peer device each); Received the ones the peer
	// holds, live or synced; Lost those it does not although it
	// reconnected; Stranded those to a connection that never came back.
	Expected    int64 `json:"expected"`
	Received    int64 `json:"received"`
	Lost        int64 `json:"lost"`
	Stranded    int64 `json:"stranded"`
	Duplicated  int64 `json:"duplicated"`
	Redelivered int64 `json:"redelivered"`
	Reordered   int64 `json:"reordered"` // live, after a later seq on the same socket
	Unexpected  int64 `json:"unexpected"`
	// EndToEnd covers live deliveries of messages intended after the
	// warm-up; SendErrors error replies and failed writes by code.
	EndToEnd   Percentiles      `json:"end_to_end"`
	SendErrors map[string]int64 `json:"send_errors,omitempty"`
}

// stormRun is the shared state of a storm run.
type stormRun struct {
	runClock
	cfg      *Config
	d        *dialer
	conns    []*stormConn // this agent's, by slot
	rate     float64      // this agent's share of Rate
	slots    int          // message numbers per connection
	e2e      *latency
	ack      *latency
	recover  *latency
	reconn   *latency
	sendErr  counts
	retries  counts
	failed   counts
	late     atomic.Int64
	unexp    atomic.Int64
	skipped  atomic.Int64
	resent   atomic.Int64
	syncs    atomic.Int64
	syncedN  atomic.Int64
	killed   []*stormConn
	cutStart time.Time
}

// stormConn is one user's connection: a sender to its peer and a receiver
// from it, in the conversation conv.
type stormConn struct {
	idx  int // in the run: the stamp's sender
	slot int // in this agent
	user string
	tok  string
	conv string
	peer *stormConn

	mu      sync.Mutex
	c       *client.Conn // guarded by mu; nil while cut
	sess    int32        // guarded by mu; the current connection's number
	sent    int          // guarded by mu; message numbers due so far (written or skipped)
	ackSeq  []uint64     // guarded by mu; by message number: its seq, 0 not acked
	errored seqBits      // guarded by mu
	skipped seqBits      // guarded by mu; due while cut, never written
	held    seqBits      // guarded by mu; seqs held: own acked, received, synced
	liveBy  []int32      // guarded by mu; by seq: 1 + the session that got it live
	topLive uint64       // guarded by mu; highest seq received live on sess
	dup     int64        // guarded by mu
	reorder int64        // guarded by mu
	redeliv int64        // guarded by mu

	// The storm, set by the connection's recovery goroutine.
	cutAt, helloAt, caughtAt time.Time // guarded by mu
	failed                   bool      // guarded by mu
}

func runStorm(ctx context.Context, cfg *Config, r *Report) (*StormStats, error) {
	P := cfg.Conns / 2
	if P < 1 {
		return nil, errors.New("loadtest: storm needs at least 2 connections")
	}
	window := cfg.Warmup + cfg.Duration
	sr := &stormRun{
		cfg: cfg, e2e: cfg.Recorder.Hist(HistE2E), ack: cfg.Recorder.Hist(HistAck),
		recover: cfg.Recorder.Hist(HistRecover), reconn: newLatency(),
	}
	sr.d = newDialer(cfg)
	lo, hi := cfg.share(P)
	for p := lo; p < hi; p++ {
		a := &stormConn{idx: 2 * p, slot: len(sr.conns), user: userID(cfg, "s", 2*p)}
		b := &stormConn{idx: 2*p + 1, slot: len(sr.conns) + 1, user: userID(cfg, "s", 2*p+1)}
		a.peer, b.peer = b, a
		a.conv = dmConv(a.user, b.user)
		b.conv = a.conv
		sr.conns = append(sr.conns, a, b)
	}
	N := len(sr.conns)
	ss := &StormStats{Conns: N}
	if N == 0 { // more agents than pairs
		_, err := cfg.scheduleStart(ctx, "storm")
		return ss, err
	}
	frac := float64(N) / float64(2*P)
	sr.rate = cfg.Rate * frac
	ss.TargetRate = sr.rate
	perConn := sr.rate / float64(N)
	sr.slots = int(math.Ceil(perConn*window.Seconds())) + 1
	if cfg.Model != "open" || cfg.Rate <= 0 {
		return ss, errors.New("loadtest: storm: the closed model is chat's alone; use the open model with a rate")
	}
	if perConn > 40 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%.0f msgs/s per connection is near the server's default limits (50 frames/s per connection, 100/s per user); use more connections or a lower rate", perConn))
	}
	tokens := make([]string, N)
	for i, sc := range sr.conns {
		var err error
		if sc.tok, sc.user, err = sr.d.tokenFor(i, sc.user, "d", window+stormRecoverMax+time.Hour); err != nil {
			return ss, err
		}
		tokens[i] = sc.tok
		sc.ackSeq = make([]uint64, sr.slots)
	}
	for _, sc := range sr.conns { // users may come from the tokens file
		sc.conv = dmConv(sc.user, sc.peer.user)
	}

	connectRate := cfg.ConnectRate * frac
	logf(cfg, "storm: opening %d connections at %.0f/s", N, connectRate)
	res := sr.d.openAll(ctx, N, connectRate, tokens, func(i int) func(client.Event) { return sr.onEvent(sr.conns[i], 0) }, true)
	for i, sc := range sr.conns {
		sc.c = res.conns[i]
	}
	defer closeCurrent(sr.conns)
	if err := allOpened(r, "storm", connectRate, N, res); err != nil {
		return ss, err
	}

	t0, err := sr.begin(ctx, cfg, "storm")
	if err != nil {
		return ss, err
	}
	end := t0.Add(window)
	logf(cfg, "storm: %d pairs, %.0f msgs/s, cutting %.0f%% after %v, sending for %v", N/2, sr.rate, cfg.KillPercent, cfg.Warmup, window)
	var senders sync.WaitGroup
	for _, sc := range sr.conns {
		senders.Go(func() { sr.sendLoop(ctx, sc, end) })
	}

	sleepUntil(ctx, t0.Add(cfg.Warmup))
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), streamStorm+uint64(cfg.Agent)<<32))
	kill := int(math.Round(cfg.KillPercent / 100 * float64(N)))
	for _, i := range rng.Perm(N)[:kill] {
		sr.killed = append(sr.killed, sr.conns[i])
	}
	logf(cfg, "storm: cutting %d connections", kill)
	// The recoveries end with the run even if one outlives stormRecoverMax.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var storm sync.WaitGroup
	sr.cutStart = time.Now()
	for _, sc := range sr.killed {
		jitter := time.Duration(rng.Int64N(int64(stormJitter)))
		vrng := rand.New(rand.NewPCG(uint64(cfg.Seed), streamStorm+uint64(cfg.Agent)<<32+uint64(sc.idx)+1))
		storm.Go(func() { sr.cutAndRecover(sctx, sc, jitter, vrng) })
	}
	if !waitGroupFor(ctx, &storm, stormRecoverMax) {
		r.Warnings = append(r.Warnings, fmt.Sprintf("storm: not every connection recovered within %v", stormRecoverMax))
	}
	logf(cfg, "storm: recovery over; waiting for the senders and deliveries")
	senders.Wait()
	pollUntil(ctx, 10*time.Second, sr.delivered)

	sr.tally(ss)
	cfg.Recorder.addDelivery(ss.Expected, ss.Lost, ss.Duplicated, ss.Reordered)
	if ss.CaughtUp < ss.Killed {
		r.Warnings = append(r.Warnings, fmt.Sprintf("storm: %d of %d cut connections caught up (%d failed to reconnect: %s)", ss.CaughtUp, ss.Killed, ss.Failed, fmtCounts(ss.FailedKinds)))
	}
	if ss.Lost+ss.Duplicated > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("storm: %d lost, %d duplicated", ss.Lost, ss.Duplicated))
	}
	return ss, ctx.Err()
}

// stormConns is how many connections this agent opens: its pairs'.
func stormConns(cfg *Config) int {
	lo, hi := cfg.share(cfg.Conns / 2)
	return 2 * (hi - lo)
}

// dmConv is the id of the 1:1 conversation of users a and b (protocol:
// "dm:" and the two ids sorted bytewise).
func dmConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

// waitGroupFor waits for wg, at most d; it reports whether wg finished.
func waitGroupFor(ctx context.Context, wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (sr *stormRun) intended(sc *stormConn, k int) time.Time {
	return arrival(time.Unix(0, sr.start.Load()), sr.rate, chatSlot(sc.slot, k, len(sr.conns)))
}

// sendFrame is message k of sc; a resend is the same frame.
func (sr *stormRun) sendFrame(sc *stormConn, k int) protocol.Frame {
	at := sr.intended(sc, k).UnixNano()
	ks := strconv.Itoa(k)
	body := appendStamp(nil, stamp{run: sr.cfg.Seed, sender: sc.idx, k: k, at: at}, sr.cfg.BodySize, nil)
	return protocol.Frame{Type: protocol.TypeSend, ID: ks, To: sc.peer.user, CMID: fmt.Sprintf("lt%d-s%d-%s", sr.cfg.Seed, sc.idx, ks), Body: string(body)}
}

// sendLoop sends sc's messages on their schedule until end, skipping
// those due while sc is cut.
func (sr *stormRun) sendLoop(ctx context.Context, sc *stormConn, end time.Time) {
	intended := func(k int) time.Time { return sr.intended(sc, k) }
	onSchedule(ctx, sr.slots, intended, end, &sr.late, func(k int, _ time.Time) bool {
		c := sc.conn()
		written := c != nil && c.WriteFrame(ctx, sr.sendFrame(sc, k)) == nil // fails if cut while writing
		sc.mu.Lock()
		sc.sent = k + 1
		if !written {
			sc.skipped.set(k)
		}
		sc.mu.Unlock()
		if written {
			sr.cfg.Recorder.Add(CountSent, 1)
		} else {
			sr.skipped.Add(1)
		}
		return true
	})
}

// onEvent handles the events of sc's connection number sess.
func (sr *stormRun) onEvent(sc *stormConn, sess int32) func(client.Event) {
	return func(ev client.Event) {
		switch ev.Type {
		case protocol.TypeMessage:
			sr.onMessage(sc, sess, ev.Raw)
		case protocol.TypeAck, protocol.TypeError:
			sr.onReply(sc, ev)
		}
	}
}

func (sr *stormRun) onReply(sc *stormConn, ev client.Event) {
	now := time.Now()
	rp, k, ok := readReply(ev, sr.slots, &sr.sendErr, sr.cfg.Recorder)
	if !ok {
		return
	}
	if ev.Type == protocol.TypeError {
		sc.mu.Lock()
		sc.errored.set(k)
		sc.mu.Unlock()
		return
	}
	sc.mu.Lock()
	first := sc.ackSeq[k] == 0
	sc.ackSeq[k] = rp.Seq
	sc.held.set(int(rp.Seq))
	sc.mu.Unlock()
	if !first {
		return
	}
	sr.record(sr.ack, sr.intended(sc, k).UnixNano(), now)
	sr.cfg.Recorder.Add(CountAcked, 1)
}

func (sr *stormRun) onMessage(sc *stormConn, sess int32, raw []byte) {
	now := time.Now()
	st, ok := stampOf(raw)
	seq, ok2 := fanField(raw, `"seq":`)
	if !ok || !ok2 || st.run != sr.cfg.Seed || st.sender != sc.peer.idx || seq <= 0 || seq > math.MaxInt32 {
		sr.unexp.Add(1)
		return
	}
	sr.record(sr.e2e, st.at, now)
	sr.cfg.Recorder.Add(CountReceived, 1)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if int(seq) >= len(sc.liveBy) {
		sc.liveBy = append(sc.liveBy, make([]int32, int(seq)+1-len(sc.liveBy))...)
	}
	if sc.liveBy[seq] == sess+1 {
		sc.dup++
		return
	}
	sc.liveBy[seq] = sess + 1
	if sc.held.set(int(seq)) {
		sc.redeliv++
	}
	if sess == sc.sess {
		if uint64(seq) < sc.topLive {
			sc.reorder++
		}
		sc.topLive = max(sc.topLive, uint64(seq))
	}
}

// conn returns sc's current connection, nil while it is cut.
func (sc *stormConn) conn() *client.Conn {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.c
}

// peerAcked returns, by message number, the seqs of the messages sc's
// peer has sent so far (written or skipped), 0 for those not acked.
func (sc *stormConn) peerAcked() []uint64 {
	peer := sc.peer
	peer.mu.Lock()
	defer peer.mu.Unlock()
	return append([]uint64(nil), peer.ackSeq[:peer.sent]...)
}

// pendingLocked reports whether message k was written and is neither acked
// nor refused.
func (sc *stormConn) pendingLocked(k int) bool {
	return sc.ackSeq[k] == 0 && !sc.errored.has(k) && !sc.skipped.has(k)
}

// position is sc's gap-free position: the highest seq up to which it holds
// every message.
func (sc *stormConn) positionLocked() uint64 {
	q := 1
	for sc.held.has(q) {
		q++
	}
	return uint64(q - 1)
}

// cutAndRecover cuts sc, waits jitter, reconnects and catches up.
func (sr *stormRun) cutAndRecover(ctx context.Context, sc *stormConn, jitter time.Duration, rng *rand.Rand) {
	sc.mu.Lock()
	c, cutAt, next := sc.c, time.Now(), sc.sess+1
	sc.c, sc.cutAt = nil, cutAt
	sc.mu.Unlock()
	_ = c.CloseNow()

	sleep(ctx, time.Until(cutAt.Add(jitter)))
	intended := time.Now()
	c, err := redial(ctx, sr.d, sc.slot, sc.tok, sr.onEvent(sc, next), rng, &sr.retries)
	if err != nil {
		sr.failed.add(errKind(err))
		sc.mu.Lock()
		sc.failed = true
		sc.mu.Unlock()
		return
	}
	hello := time.Now()
	sr.cfg.Recorder.Hist(HistConnect).record(hello.Sub(intended))
	sr.reconn.record(hello.Sub(cutAt))
	sr.cfg.live.add(c)
	sc.mu.Lock()
	sc.c, sc.sess, sc.topLive, sc.helloAt = c, next, 0, hello
	sc.mu.Unlock()

	if sr.catchUp(ctx, sc, c) {
		now := time.Now()
		sr.recover.record(now.Sub(cutAt))
		sc.mu.Lock()
		sc.caughtAt = now
		sc.mu.Unlock()
	}
	sr.resend(ctx, sc, c)
}

// catchUp syncs sc's conversation until sc holds every message up to the
// last_seq the server reports, at most stormSyncRounds round trips.
func (sr *stormRun) catchUp(ctx context.Context, sc *stormConn, c *client.Conn) bool {
	for round := 0; round < stormSyncRounds && ctx.Err() == nil; round++ {
		sc.mu.Lock()
		pos := sc.positionLocked()
		sc.mu.Unlock()
		sr.syncs.Add(1)
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := c.Sync(rctx, map[string]uint64{sc.conv: pos}, 0)
		cancel()
		if err != nil {
			sr.sendErr.add("sync_" + errCode(err))
			return false
		}
		last, more := pos, s.More
		sc.mu.Lock()
		for _, cv := range s.Convs {
			if cv.Conv != sc.conv {
				continue
			}
			last, more = cv.LastSeq, more || cv.More
			for _, m := range cv.Messages {
				switch {
				case m.Seq > math.MaxInt32:
				case sc.held.set(int(m.Seq)):
					sc.redeliv++
				case m.From == sc.peer.user:
					sr.syncedN.Add(1)
					sr.cfg.Recorder.Add(CountReceived, 1)
				}
			}
		}
		done := sc.positionLocked() >= last
		sc.mu.Unlock()
		if done && !more {
			return true
		}
	}
	return false
}

// resend writes again what sc wrote and never saw acked or refused (the
// cut may have lost the ack), with the same cmid.
func (sr *stormRun) resend(ctx context.Context, sc *stormConn, c *client.Conn) {
	sc.mu.Lock()
	var ks []int
	for k := 0; k < sc.sent; k++ {
		if sc.pendingLocked(k) {
			ks = append(ks, k)
		}
	}
	sc.mu.Unlock()
	for _, k := range ks {
		if c.WriteFrame(ctx, sr.sendFrame(sc, k)) != nil {
			return
		}
		sr.resent.Add(1)
	}
}

// delivered reports whether every connected connection's writes are acked
// (or refused) and it holds every acked message of its peer.
func (sr *stormRun) delivered() bool {
	for _, sc := range sr.conns {
		acked := sc.peerAcked()
		sc.mu.Lock()
		up := sc.c != nil
		ok := !up
		if up {
			ok = true
			for k := 0; k < sc.sent && ok; k++ {
				ok = !sc.pendingLocked(k)
			}
			for _, q := range acked {
				if q != 0 && !sc.held.has(int(q)) {
					ok = false
					break
				}
			}
		}
		sc.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

func (sr *stormRun) tally(ss *StormStats) {
	for _, sc := range sr.conns {
		acked := sc.peerAcked()
		sc.mu.Lock()
		ss.Sent += int64(sc.sent - sc.skipped.count())
		for k := 0; k < sc.sent; k++ {
			if sc.pendingLocked(k) {
				ss.Unacked++
			}
		}
		for _, q := range acked {
			switch {
			case q == 0:
				continue
			case sc.held.has(int(q)):
				ss.Received++
			case sc.failed:
				ss.Stranded++
			default:
				ss.Lost++
			}
			ss.Expected++
		}
		ss.Duplicated += sc.dup
		ss.Redelivered += sc.redeliv
		ss.Reordered += sc.reorder
		sc.mu.Unlock()
	}
	ss.Acked = ss.Expected
	ss.Killed = len(sr.killed)
	var last time.Time
	for _, sc := range sr.killed {
		sc.mu.Lock()
		switch {
		case sc.failed:
			ss.Failed++
		case !sc.helloAt.IsZero():
			ss.Reconnected++
		}
		if !sc.caughtAt.IsZero() {
			ss.CaughtUp++
			if sc.caughtAt.After(last) {
				last = sc.caughtAt
			}
		}
		sc.mu.Unlock()
	}
	if !last.IsZero() {
		ss.RecoverAll = last.Sub(sr.cutStart).Seconds()
	}
	ss.FailedKinds = sr.failed.snapshot()
	ss.Retries = sr.retries.snapshot()
	ss.Recover = sr.recover.percentiles()
	ss.Reconnect = sr.reconn.percentiles()
	ss.SyncRounds = sr.syncs.Load()
	ss.Synced = sr.syncedN.Load()
	ss.Skipped = sr.skipped.Load()
	ss.Resent = sr.resent.Load()
	ss.Unexpected = sr.unexp.Load()
	ss.EndToEnd = sr.e2e.percentiles()
	ss.SendErrors = sr.sendErr.snapshot()
}

// redial dials connection i (to its gateway: see dialer.urlFor) with tok
// again the way a client reconnects: it retries what
// retryable allows, after a full-jitter backoff (and at least the server's
// retry_after_ms), at most reconnectAttempts dials, counting each retried
// failure by kind in retries.
func redial(ctx context.Context, d *dialer, i int, tok string, onEvent func(client.Event), rng *rand.Rand, retries *counts) (*client.Conn, error) {
	for attempt := 0; ; attempt++ {
		c, err := d.dial(ctx, i, tok, onEvent)
		if err == nil {
			return c, nil
		}
		kind := errKind(err)
		d.cfg.Recorder.Add(PrefixConnErr+kind, 1)
		wait, again := retryable(err)
		if !again || attempt+1 >= reconnectAttempts || ctx.Err() != nil {
			return nil, err
		}
		retries.add(kind)
		backoff := min(reconnectMaxDelay, reconnectBase<<attempt)
		sleep(ctx, wait+time.Duration(rng.Int64N(int64(backoff)+1)))
	}
}

// retryable reports whether a client should dial again after err (HTTP
// 429 and 5xx, close codes that invite a reconnect, network errors), and
// the least wait the server asked for.
func retryable(err error) (time.Duration, bool) {
	var ue *client.UpgradeError
	var ce *client.CloseError
	switch {
	case errors.As(err, &ue):
		if ue.StatusCode != http.StatusTooManyRequests && ue.StatusCode < 500 {
			return 0, false
		}
		var body struct {
			Error struct {
				RetryAfterMS int64 `json:"retry_after_ms"`
			} `json:"error"`
		}
		_ = json.Unmarshal([]byte(ue.Body), &body)
		return time.Duration(body.Error.RetryAfterMS) * time.Millisecond, true
	case errors.As(err, &ce):
		return ce.ReconnectAfter, ce.ShouldReconnect()
	case errors.Is(err, context.Canceled):
		return 0, false
	}
	return 0, true
}

// writeStorm writes the reconnect storm part of the human summary.
func writeStorm(w io.Writer, s *StormStats) {
	fmt.Fprintf(w, "  storm: %d conns, %.0f msg/s background; cut %d, reconnected %d, caught up %d, failed %d; all recovered in %.2f s; %d sync rounds brought %d messages\n",
		s.Conns, s.TargetRate, s.Killed, s.Reconnected, s.CaughtUp, s.Failed, s.RecoverAll, s.SyncRounds, s.Synced)
	if len(s.Retries) > 0 || len(s.FailedKinds) > 0 {
		fmt.Fprintf(w, "  reconnect retries: %s; failures: %s\n", fmtCounts(s.Retries), fmtCounts(s.FailedKinds))
	}
	writePct(w, "recover   ", s.Recover)
	if s.Reconnect.Count > 0 { // a coordinator's merged report leaves it to the agents'
		writePct(w, "reconnect ", s.Reconnect)
	}
	fmt.Fprintf(w, "  messages: sent %d acked %d skipped while cut %d resent %d unacked %d; expected %d received %d lost %d stranded %d dup %d redelivered %d reordered %d unexpected %d\n",
		s.Sent, s.Acked, s.Skipped, s.Resent, s.Unacked, s.Expected, s.Received, s.Lost, s.Stranded, s.Duplicated, s.Redelivered, s.Reordered, s.Unexpected)
	if len(s.SendErrors) > 0 {
		fmt.Fprintf(w, "  send errors: %s\n", fmtCounts(s.SendErrors))
	}
	writePct(w, "end-to-end", s.EndToEnd)
}
