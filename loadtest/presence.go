package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// The presence scenario: Conns users, one connection each, in circles of
// presenceCircle. The server lets a user watch only users who share a
// conversation with them, so the first member of each circle creates a
// group of the circle, and every user watches the others of its circle.
// Then ChurnRate connections per second (default 10% of Conns) are closed
// (CloseNow: the server sees the TCP connection drop) on an open-model
// schedule, each reopened after a random 0..presenceOffMax, and the
// reopened connection watches its circle again (watches belong to a
// session).
//
// Every close and every reopen is a user-level transition (one device per
// user). A watcher should see each transition of each user it watches as
// a presence event. The server coalesces: a user's changes are published
// at most once per window (node.Config.PresenceCoalesce, default 1 s),
// with the state at the window's end, and a slow watcher keeps only the
// newest pending presence per user. So a close and reopen within the
// window produce no event at all, and a watcher may see only the latest of
// several changes. The accounting follows: per (watcher, watched user)
// and transition, in order,
//
//   - WatcherAway: the watcher had no session watching when it began;
//   - Observed: an event showed it (the latest transition to that state
//     when the event arrived); its latency runs from the close, or from the
//     reopened connection's hello, to the event (HistPresence), and so
//     includes the coalescing window;
//   - Coalesced: never shown, but the watcher later saw a newer state, or
//     the user ended where it was last shown (a net-zero flap);
//   - CutShort: still unseen when the watcher's own connection was churned;
//   - Missing: the watcher's last view of the user is wrong at the end.
//
// Expected = Observed + Coalesced + CutShort + Missing. OutOfOrder counts
// events showing an older state after a newer one was shown (an offline
// seen after the later online); Repeated events that showed what the
// watcher already knew (the first connect published after the watch's
// answer, for instance).

// HistPresence is a user's transition (its close, or its reopened
// connection's hello) → a watcher's presence event showing it. It is
// recorded when the run ends, once events are matched to transitions.
const HistPresence = "presence"

const (
	// presenceCircle is the users who share a conversation and watch each
	// other (each watches presenceCircle − 1).
	presenceCircle = 5
	// presenceOffMax bounds how long a churned connection stays closed:
	// uniformly random 0..presenceOffMax, so with the server's default 1 s
	// window about half the cycles are coalesced away.
	presenceOffMax = 2 * time.Second
	// presenceQuiet is the wait after the last transition for the
	// server's coalescing window to flush.
	presenceQuiet = 2 * time.Second
	// presenceDrain bounds the wait for the watchers to converge.
	presenceDrain = 8 * time.Second
	// streamPresence is the presence scenario's random stream.
	streamPresence uint64 = 10 << 56
)

// PresenceStats is the presence churn scenario's result.
type PresenceStats struct {
	Users      int     `json:"users"`
	Circles    int     `json:"circles"`
	WatchPairs int     `json:"watch_pairs"` // (watcher, watched) pairs
	ChurnRate  float64 `json:"churn_rate"`  // closes (and reopens) per second
	// Churns counts connections closed and reopened; Skipped churn slots
	// that found every user already away; LateChurns slots that left more
	// than 10 ms after their time.
	Churns     int64 `json:"churns"`
	Skipped    int64 `json:"skipped"`
	LateChurns int64 `json:"late_churns"`
	// Transitions counts user-level changes (closes and reopens);
	// TransitionPairs each times its user's watchers.
	Transitions     int64 `json:"transitions"`
	TransitionPairs int64 `json:"transition_pairs"`
	// TransitionPairs = WatcherAway + Expected; Expected = Observed +
	// Coalesced + CutShort + Missing (see the scenario's doc).
	WatcherAway int64 `json:"watcher_away"`
	Expected    int64 `json:"expected"`
	Observed    int64 `json:"observed"`
	Coalesced   int64 `json:"coalesced"`
	CutShort    int64 `json:"cut_short"`
	Missing     int64 `json:"missing"`
	// MissingAfterWatch counts the missing ones where the watcher's last
	// view was the watch's answer, no event after it. The answer is the
	// server's live state, while events come from its coalesced stream:
	// a watch answered inside a flap the server then coalesced away
	// (closed, watched, reopened within one window) shows a state that no
	// event ever corrects.
	MissingAfterWatch int64 `json:"missing_after_watch"`
	OutOfOrder        int64 `json:"out_of_order"`
	Repeated          int64 `json:"repeated"`
	Unmatched         int64 `json:"unmatched"` // events no transition explains
	// Latency covers observed transitions after the warm-up, Online and
	// Offline the two kinds.
	Latency Percentiles `json:"latency"`
	Online  Percentiles `json:"online_latency"`
	Offline Percentiles `json:"offline_latency"`
	// Reconnect is a reopen's dial start → hello; ReconnectFailed counts
	// users that gave up (by kind in FailedKinds), Retries retried dials.
	Reconnect       Percentiles      `json:"reconnect"`
	ReconnectFailed int64            `json:"reconnect_failed"`
	FailedKinds     map[string]int64 `json:"failed_kinds,omitempty"`
	Retries         map[string]int64 `json:"retries,omitempty"`
	WatchErrors     map[string]int64 `json:"watch_errors,omitempty"`
	// DrainSeconds is the wait after the last reopen for every watcher to
	// show every user's final state; DrainTimedOut is set if they did not.
	DrainSeconds  float64 `json:"drain_seconds"`
	DrainTimedOut bool    `json:"drain_timed_out,omitempty"`
}

// presenceRun is the shared state of a presence run.
type presenceRun struct {
	cfg       *Config
	d         *dialer
	users     []*presUser
	rate      float64 // this agent's churn rate
	measure   int64   // unix ns: transitions from here on are measured
	lastTrans atomic.Int64
	churns    atomic.Int64
	skipped   atomic.Int64
	late      atomic.Int64
	reconn    *latency
	retries   counts
	failed    counts
	watchErr  counts
}

// presUser is one user: its connection, its transitions, and as a watcher
// what it saw of the users of its circle.
type presUser struct {
	idx    int
	slot   int // in this agent's users: its connection's index, so its gateway
	user   string
	tok    string
	watch  []*presPair          // static after set-up: one per other circle member
	byUser map[string]*presPair // static after set-up

	mu    sync.Mutex
	c     *client.Conn // guarded by mu; nil while closed
	sess  int32        // guarded by mu; the current connection's number
	busy  bool         // guarded by mu; in a churn cycle (or given up)
	trans []presTrans  // guarded by mu; [0] is the first connect
}

// presTrans is a user-level transition.
type presTrans struct {
	online bool
	begin  int64 // unix ns: the close, or the reopen's dial start
	ref    int64 // unix ns latency counts from: the close, or hello
}

// presPair is what one watcher saw of one watched user. Its fields are
// guarded by the watcher's mu.
type presPair struct {
	target   *presUser
	obs      []presObs
	view     bool  // the state last shown in session viewSess
	viewSess int32 // -1: nothing shown yet
}

// presObs is one observation of a pair: the watch's answer (a snapshot),
// a presence event, or the watcher's session ending.
type presObs struct {
	sess   int32
	kind   uint8
	online bool
	at     int64 // unix ns
}

const (
	obsSnapshot uint8 = iota
	obsEvent
	obsClose
)

func runPresence(ctx context.Context, cfg *Config, r *Report) (*PresenceStats, error) {
	sizes, lo, hi, first, err := agentGroups(cfg, presenceCircle)
	if err != nil {
		return nil, err
	}
	window := cfg.Warmup + cfg.Duration
	pr := &presenceRun{cfg: cfg, d: newDialer(cfg), reconn: newLatency()}
	var circles [][]*presUser
	for ci := lo; ci < hi; ci++ {
		var circle []*presUser
		for i := first; i < first+sizes[ci]; i++ {
			u := &presUser{idx: i, slot: len(pr.users), user: userID(cfg, "p", i), byUser: map[string]*presPair{}}
			if u.tok, u.user, err = pr.d.tokenFor(len(pr.users), u.user, "d", window+presenceDrain+time.Hour); err != nil {
				return nil, err
			}
			circle = append(circle, u)
			pr.users = append(pr.users, u)
		}
		for _, w := range circle {
			for _, t := range circle {
				if t != w {
					p := &presPair{target: t, viewSess: -1}
					w.watch = append(w.watch, p)
					w.byUser[t.user] = p
				}
			}
		}
		circles = append(circles, circle)
		first += sizes[ci]
	}
	N := len(pr.users)
	ps := &PresenceStats{Users: N, Circles: len(circles)}
	for _, u := range pr.users {
		ps.WatchPairs += len(u.watch)
	}
	if N == 0 { // more agents than circles
		_, err := cfg.scheduleStart(ctx, "presence")
		return ps, err
	}
	churn := cfg.ChurnRate
	if churn <= 0 {
		churn = 0.1 * float64(cfg.Conns)
	}
	frac := float64(N) / float64(cfg.Conns)
	pr.rate = churn * frac
	ps.ChurnRate = pr.rate

	tokens := make([]string, N)
	for i, u := range pr.users {
		tokens[i] = u.tok
	}
	connectRate := cfg.ConnectRate * frac
	logf(cfg, "presence: opening %d connections at %.0f/s", N, connectRate)
	opened := time.Now().UnixNano()
	res := pr.d.openAll(ctx, N, connectRate, tokens, func(i int) func(client.Event) { return pr.onEvent(pr.users[i], 0) }, true)
	for i, u := range pr.users {
		u.c = res.conns[i]
		u.trans = []presTrans{{online: true, begin: opened, ref: opened}}
	}
	defer closeCurrent(pr.users)
	if err := allOpened(r, "presence", connectRate, N, res); err != nil {
		return ps, err
	}
	if err := pr.setUp(ctx, circles); err != nil {
		return ps, err
	}

	t0, err := cfg.scheduleStart(ctx, "presence")
	if err != nil {
		return ps, err
	}
	pr.measure = t0.Add(cfg.Warmup).UnixNano()
	end := t0.Add(window)
	logf(cfg, "presence: %d users in %d circles, churning %.1f conns/s, warm-up %v, measuring %v", N, len(circles), pr.rate, cfg.Warmup, cfg.Duration)
	pr.churnLoop(ctx, t0, end)

	drain := time.Now()
	logf(cfg, "presence: churn over; waiting for the watchers to converge")
	ps.DrainTimedOut = !pollUntil(ctx, presenceDrain, func() bool {
		return time.Since(time.Unix(0, pr.lastTrans.Load())) >= presenceQuiet && pr.converged()
	})
	ps.DrainSeconds = time.Since(drain).Seconds()

	pr.tally(ps)
	// Repeats of a known state are harmless, not duplicates.
	cfg.Recorder.addDelivery(ps.Expected, ps.Missing, 0, ps.OutOfOrder)
	if ps.DrainTimedOut {
		r.Warnings = append(r.Warnings, fmt.Sprintf("presence: the watchers had not converged %v after the churn", presenceDrain))
	}
	if ps.Missing+ps.OutOfOrder > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("presence: %d transitions missing (%d of them after a watch answer no event corrected), %d events out of order", ps.Missing, ps.MissingAfterWatch, ps.OutOfOrder))
	}
	return ps, ctx.Err()
}

// setUp creates each circle's group (the server's contacts rule), then has
// every user watch its circle.
func (pr *presenceRun) setUp(ctx context.Context, circles [][]*presUser) error {
	errs := parallel(len(circles), func(i int) error {
		c := circles[i]
		users := make([]string, 0, len(c)-1)
		for _, u := range c[1:] {
			users = append(users, u.user)
		}
		var conv string
		return createGroup(ctx, c[0].c, fmt.Sprintf("lt%d-p%d", pr.cfg.Seed, c[0].idx), users, 1000, &conv)
	})
	if errs != nil {
		return fmt.Errorf("loadtest: presence: creating circles: %w", errs)
	}
	parallel(len(pr.users), func(i int) error {
		u := pr.users[i]
		pr.watchAll(ctx, u, u.c, 0)
		return nil
	})
	return ctx.Err()
}

// parallel runs fn(0..n-1) on up to 64 goroutines; a worker stops at its
// first error, and parallel returns them joined.
func parallel(n int, fn func(i int) error) error {
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for w := min(64, n); w > 0; w-- {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// watchAll has u's connection number sess watch u's circle and records the
// answer as each pair's snapshot.
func (pr *presenceRun) watchAll(ctx context.Context, u *presUser, c *client.Conn, sess int32) {
	users := make([]string, len(u.watch))
	for i, p := range u.watch {
		users[i] = p.target.user
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	res, err := c.Watch(rctx, users)
	cancel()
	now := time.Now().UnixNano()
	if err != nil {
		pr.watchErr.add(errCode(err))
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, st := range res.Presence {
		if p := u.byUser[st.User]; p != nil {
			p.obs = append(p.obs, presObs{sess: sess, kind: obsSnapshot, online: st.Online, at: now})
			p.view, p.viewSess = st.Online, sess
		}
	}
}

// onEvent records the presence events of u's connection number sess.
func (pr *presenceRun) onEvent(u *presUser, sess int32) func(client.Event) {
	return func(ev client.Event) {
		if ev.Type != protocol.TypePresence {
			return
		}
		now := time.Now().UnixNano()
		st, err := ev.Presence()
		p := u.byUser[st.User]
		if err != nil || p == nil {
			return
		}
		pr.cfg.Recorder.Add(CountReceived, 1)
		u.mu.Lock()
		p.obs = append(p.obs, presObs{sess: sess, kind: obsEvent, online: st.Online, at: now})
		p.view, p.viewSess = st.Online, sess
		u.mu.Unlock()
	}
}

// churnLoop closes and reopens connections on the schedule from t0 until
// end, and waits for the last reopen.
func (pr *presenceRun) churnLoop(ctx context.Context, t0, end time.Time) {
	seed, stream := uint64(pr.cfg.Seed), streamPresence+uint64(pr.cfg.Agent)<<32
	rng := rand.New(rand.NewPCG(seed, stream))
	order := rng.Perm(len(pr.users))
	next := 0
	var wg sync.WaitGroup
	at := func(k int) time.Time { return arrival(t0, pr.rate, int64(k)) }
	onSchedule(ctx, math.MaxInt32, at, end, &pr.late, func(k int, _ time.Time) bool {
		var u *presUser
		for tries := 0; tries < len(order) && u == nil; tries++ {
			c := pr.users[order[next%len(order)]]
			next++
			c.mu.Lock()
			if !c.busy {
				c.busy, u = true, c
			}
			c.mu.Unlock()
		}
		if u == nil {
			pr.skipped.Add(1)
			return true
		}
		off := time.Duration(rng.Int64N(int64(presenceOffMax)))
		crng := rand.New(rand.NewPCG(seed, stream+uint64(k)+1))
		wg.Go(func() { pr.churn(ctx, u, off, crng) })
		return true
	})
	wg.Wait()
}

// churn closes u's connection, waits off and reopens it.
func (pr *presenceRun) churn(ctx context.Context, u *presUser, off time.Duration, rng *rand.Rand) {
	pr.churns.Add(1)
	u.mu.Lock()
	c, now, next := u.c, time.Now().UnixNano(), u.sess+1
	u.c = nil
	u.trans = append(u.trans, presTrans{online: false, begin: now, ref: now})
	for _, p := range u.watch {
		p.obs = append(p.obs, presObs{sess: u.sess, kind: obsClose, at: now})
	}
	u.mu.Unlock()
	pr.lastTrans.Store(now)
	_ = c.CloseNow()

	sleep(ctx, off)
	start := time.Now()
	c, err := redial(ctx, pr.d, u.slot, u.tok, pr.onEvent(u, next), rng, &pr.retries)
	if err != nil {
		pr.failed.add(errKind(err))
		return // stays busy: never churned again
	}
	hello := time.Now()
	pr.cfg.Recorder.Hist(HistConnect).record(hello.Sub(start))
	pr.reconn.record(hello.Sub(start))
	pr.cfg.live.add(c)
	u.mu.Lock()
	u.c, u.sess = c, next
	u.trans = append(u.trans, presTrans{online: true, begin: start.UnixNano(), ref: hello.UnixNano()})
	u.mu.Unlock()
	pr.lastTrans.Store(hello.UnixNano())
	pr.watchAll(ctx, u, c, next)
	u.mu.Lock()
	u.busy = false
	u.mu.Unlock()
}

// converged reports whether every connected watcher's current session
// shows every watched user's current state.
func (pr *presenceRun) converged() bool {
	for _, w := range pr.users {
		for _, p := range w.watch {
			t := p.target
			t.mu.Lock()
			state := t.trans[len(t.trans)-1].online
			t.mu.Unlock()
			w.mu.Lock()
			ok := w.c == nil || (p.viewSess == w.sess && p.view == state)
			w.mu.Unlock()
			if !ok {
				return false
			}
		}
	}
	return true
}

// conn returns u's current connection, nil while it is closed.
func (u *presUser) conn() *client.Conn {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.c
}

// presCounts is the accounting of one or more (watcher, user) pairs.
type presCounts struct {
	pairs, away, expected, observed, coalesced, cutShort, missing int64
	missingAfterWatch, outOfOrder, repeated, unmatched            int64
}

func (a *presCounts) add(b presCounts) {
	a.pairs += b.pairs
	a.away += b.away
	a.expected += b.expected
	a.observed += b.observed
	a.coalesced += b.coalesced
	a.cutShort += b.cutShort
	a.missing += b.missing
	a.missingAfterWatch += b.missingAfterWatch
	a.outOfOrder += b.outOfOrder
	a.repeated += b.repeated
	a.unmatched += b.unmatched
}

// latestTrans is the index of the latest transition to state that began
// by at, -1 if none.
func latestTrans(trans []presTrans, online bool, at int64) int {
	for i := len(trans) - 1; i >= 0; i-- {
		if trans[i].online == online && trans[i].begin <= at {
			return i
		}
	}
	return -1
}

// accountPair matches one watcher's observations of one user (obs, in the
// order they were recorded) to the user's transitions (trans[0] being the
// first connect, not counted), as the scenario's doc describes, and calls
// seen for each observed transition with its latency.
func accountPair(trans []presTrans, obs []presObs, seen func(t presTrans, lat time.Duration)) presCounts {
	var pc presCounts
	n := len(trans)
	pc.pairs = int64(n - 1)
	// Sessions in order, each: its snapshot, events in arrival order, close.
	type session struct {
		snap   *presObs
		events []presObs
		close  int64 // 0: open at the end
	}
	var sessions []*session
	bySess := map[int32]*session{}
	for i := range obs {
		o := &obs[i]
		s := bySess[o.sess]
		if s == nil {
			s = &session{}
			bySess[o.sess] = s
			sessions = append(sessions, s)
		}
		switch o.kind {
		case obsSnapshot:
			s.snap = o
		case obsEvent:
			s.events = append(s.events, *o)
		case obsClose:
			s.close = o.at
		}
	}
	prevEnd := 0
	for _, s := range sessions {
		if s.snap == nil { // the watch failed: not watching
			continue
		}
		end := n - 1
		if s.close != 0 {
			end = latestBefore(trans, s.close)
		}
		// The watch answer is the state the server last published, which
		// lags a transition still inside the coalescing window: view is
		// what the watcher believes, start where this session's count
		// begins (transitions before prevEnd belong to the last session).
		view := s.snap.online
		start := max(latestTrans(trans, view, s.snap.at), prevEnd)
		end = max(end, start)
		pc.expected += int64(end - start)
		last, lastEv := start, -1
		for _, ev := range s.events {
			c := latestTrans(trans, ev.online, ev.at)
			switch {
			case c < 0:
				pc.unmatched++
			case c < lastEv:
				pc.outOfOrder++
			case c == last && view != trans[c].online:
				// The answer lagged (start's transition was not yet
				// published): this event brings the watcher up to start.
				lastEv, view = c, trans[c].online
			case c <= last:
				pc.repeated++
			default:
				pc.coalesced += int64(c - last - 1)
				pc.observed++
				if seen != nil {
					seen(trans[c], time.Duration(ev.at-trans[c].ref))
				}
				last, lastEv, view = c, c, trans[c].online
			}
		}
		switch tail := int64(end - last); {
		case tail == 0:
		case s.close != 0:
			pc.cutShort += tail
		case trans[end].online == view:
			pc.coalesced += tail
		default:
			pc.missing++
			if lastEv < 0 {
				pc.missingAfterWatch++
			}
			pc.coalesced += tail - 1
		}
		prevEnd = end
	}
	pc.away = pc.pairs - pc.expected
	return pc
}

// latestBefore is the index of the last transition that began before at.
func latestBefore(trans []presTrans, at int64) int {
	i := len(trans) - 1
	for i > 0 && trans[i].begin >= at {
		i--
	}
	return i
}

func (pr *presenceRun) tally(ps *PresenceStats) {
	all, on, off := pr.cfg.Recorder.Hist(HistPresence), newLatency(), newLatency()
	trans := make(map[*presUser][]presTrans, len(pr.users))
	for _, t := range pr.users {
		t.mu.Lock()
		trans[t] = append([]presTrans(nil), t.trans...)
		t.mu.Unlock()
		ps.Transitions += int64(len(trans[t]) - 1)
	}
	var pc presCounts
	for _, w := range pr.users {
		for _, p := range w.watch {
			w.mu.Lock()
			obs := append([]presObs(nil), p.obs...)
			w.mu.Unlock()
			pc.add(accountPair(trans[p.target], obs, func(tr presTrans, lat time.Duration) {
				if tr.begin < pr.measure {
					return
				}
				all.record(lat)
				if tr.online {
					on.record(lat)
				} else {
					off.record(lat)
				}
			}))
		}
	}
	ps.TransitionPairs, ps.WatcherAway, ps.Expected = pc.pairs, pc.away, pc.expected
	ps.Observed, ps.Coalesced, ps.CutShort, ps.Missing = pc.observed, pc.coalesced, pc.cutShort, pc.missing
	ps.MissingAfterWatch = pc.missingAfterWatch
	ps.OutOfOrder, ps.Repeated, ps.Unmatched = pc.outOfOrder, pc.repeated, pc.unmatched
	ps.Latency, ps.Online, ps.Offline = all.percentiles(), on.percentiles(), off.percentiles()
	ps.Churns, ps.Skipped, ps.LateChurns = pr.churns.Load(), pr.skipped.Load(), pr.late.Load()
	ps.Reconnect = pr.reconn.percentiles()
	ps.FailedKinds = pr.failed.snapshot()
	for _, v := range ps.FailedKinds {
		ps.ReconnectFailed += v
	}
	ps.Retries = pr.retries.snapshot()
	ps.WatchErrors = pr.watchErr.snapshot()
}

// writePresence writes the presence part of the human summary.
func writePresence(w io.Writer, p *PresenceStats) {
	fmt.Fprintf(w, "  presence: %d users in %d circles (%d watch pairs), churn %.1f/s: %d closed and reopened (%d skipped, %d late), %d transitions; drain %.2f s",
		p.Users, p.Circles, p.WatchPairs, p.ChurnRate, p.Churns, p.Skipped, p.LateChurns, p.Transitions, p.DrainSeconds)
	if p.DrainTimedOut {
		fmt.Fprint(w, " (timed out)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  transitions × watchers %d: watcher away %d, expected %d = observed %d + coalesced %d + cut short %d + missing %d (after a watch %d); out of order %d, repeated %d, unmatched %d\n",
		p.TransitionPairs, p.WatcherAway, p.Expected, p.Observed, p.Coalesced, p.CutShort, p.Missing, p.MissingAfterWatch, p.OutOfOrder, p.Repeated, p.Unmatched)
	if len(p.Retries) > 0 || p.ReconnectFailed > 0 || len(p.WatchErrors) > 0 {
		fmt.Fprintf(w, "  reconnect retries: %s; failed: %s; watch errors: %s\n", fmtCounts(p.Retries), fmtCounts(p.FailedKinds), fmtCounts(p.WatchErrors))
	}
	writePct(w, "presence  ", p.Latency)
	writePct(w, "  online  ", p.Online)
	writePct(w, "  offline ", p.Offline)
	writePct(w, "reconnect ", p.Reconnect)
}
