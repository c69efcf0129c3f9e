package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// The group scenario: Conns members in groups of GroupSize, one connection
// (one device) each. The first member of each group creates it over its
// websocket ("create" with the others as members; "add" for members beyond
// one frame's 1000), so the run needs no service token. Every member sends
// into its group and receives the others' messages; the members together
// send Rate messages per second on an open-model schedule (MsgArrival, as
// chat's senders: constant, taking turns, or a Poisson process each). The
// closed model is chat's alone.
//
// Each body is a stamp, "<run id> <sender> <n> <intended unix ns>" (run id =
// Seed, sender = the member's index in the run, n = its message number),
// padded to BodySize with seeded printable characters. Receivers read the
// stamp straight from the frame's bytes and keep, per sender, which numbers
// arrived: lost (acked, never received by a member), duplicated and
// reordered messages. The sending session gets its ack and no echo, so a
// message is expected Acked × (members − 1) times.

// maxGroupBits bounds the receivers' books: one bit per (receiver, sender,
// message number), about (GroupSize − 1) × Rate × (Warmup + Duration) bits.
const maxGroupBits = 1 << 33

// Random streams of the group scenario (see schedule.go), + agent<<32 +
// member.
const (
	streamGroupSends uint64 = 11 << 56
	streamGroupBody  uint64 = 12 << 56
)

// GroupStats is the group scenario's result. Latencies cover messages
// intended after the warm-up.
type GroupStats struct {
	Groups    int `json:"groups"`
	Members   int `json:"members"`
	GroupSize int `json:"group_size"` // the largest group's; the last may be smaller
	// CreateSeconds is how long creating the groups took.
	CreateSeconds float64 `json:"create_seconds"`
	TargetRate    float64 `json:"target_rate"`
	AchievedRate  float64 `json:"achieved_rate"` // acked messages per second in the measured window
	Sent          int64   `json:"sent"`
	Acked         int64   `json:"acked"`
	// Expected is each acked message times its group's other members;
	// Received the distinct (member, message) deliveries; Lost the expected
	// ones never received.
	Expected   int64 `json:"expected"`
	Received   int64 `json:"received"`
	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"` // a member received a message again
	Reordered  int64 `json:"reordered"`  // received after a later one of the same sender
	Unacked    int64 `json:"unacked"`    // sent, no ack or error by the end
	// Unexpected counts messages that carry no stamp of this run's members.
	Unexpected int64            `json:"unexpected"`
	LateSends  int64            `json:"late_sends"`
	SendErrors map[string]int64 `json:"send_errors,omitempty"`
	EndToEnd   Percentiles      `json:"end_to_end"`
	Ack        Percentiles      `json:"send_to_ack"`
}

// groupRun is the shared state of a group run.
type groupRun struct {
	runClock
	cfg     *Config
	groups  []*chatGroup
	members []*groupMember // this agent's, by slot
	rate    float64        // this agent's share of Rate
	slots   int            // message numbers per sender
	e2e     *latency
	ack     *latency
	sendErr counts
	late    atomic.Int64
	unexp   atomic.Int64
}

// chatGroup is one group conversation; its members are the run's members
// first .. first+len(members)-1.
type chatGroup struct {
	idx     int
	first   int
	conv    string // set once created, before any send
	members []*groupMember
}

// groupMember is one member: a sender and a receiver on one connection.
type groupMember struct {
	idx  int // in the run: the stamp's sender
	slot int // in this agent: connection and schedule slot
	pos  int // in its group
	user string
	g    *chatGroup

	mu      sync.Mutex
	sent    int        // guarded by mu; messages written
	at      []int64    // guarded by mu; by message number: intended unix ns
	acked   seqBits    // guarded by mu; by message number
	errored seqBits    // guarded by mu
	from    []seqTrack // guarded by mu; by the sender's position in the group
}

// groupSizes splits n members into groups of size; a remainder of at least
// two forms a smaller last group, and a lone remainder takes one member
// from the group before it (size 2 groups: joins it).
func groupSizes(n, size int) ([]int, error) {
	if n < 2 || size < 2 {
		return nil, fmt.Errorf("loadtest: groups need at least 2 members (members %d, group size %d)", n, size)
	}
	out := make([]int, 0, n/size+1)
	for left := n; left > 0; left -= size {
		out = append(out, min(size, left))
	}
	if last := len(out) - 1; out[last] == 1 {
		if size > 2 {
			out[last-1]--
			out[last]++
		} else {
			out[last-1]++
			out = out[:last]
		}
	}
	return out, nil
}

// agentGroups splits cfg.Conns members into groups of size and returns
// the sizes, this agent's groups [lo, hi) (groups stay whole in one agent)
// and the run index of its first member.
func agentGroups(cfg *Config, size int) (sizes []int, lo, hi, first int, err error) {
	if sizes, err = groupSizes(cfg.Conns, size); err != nil {
		return nil, 0, 0, 0, err
	}
	lo, hi = cfg.share(len(sizes))
	for _, s := range sizes[:lo] {
		first += s
	}
	return sizes, lo, hi, first, nil
}

// groupConns is how many connections this agent opens for members in
// groups of size (0 if they cannot be split).
func groupConns(cfg *Config, size int) int {
	sizes, lo, hi, _, err := agentGroups(cfg, size)
	n := 0
	if err == nil {
		for _, s := range sizes[lo:hi] {
			n += s
		}
	}
	return n
}

func runGroup(ctx context.Context, cfg *Config, r *Report) (*GroupStats, error) {
	sizes, lo, hi, first, err := agentGroups(cfg, cfg.GroupSize)
	if err != nil {
		return nil, err
	}
	window := cfg.Warmup + cfg.Duration
	gr := &groupRun{cfg: cfg, e2e: cfg.Recorder.Hist(HistE2E), ack: cfg.Recorder.Hist(HistAck)}
	for gi := lo; gi < hi; gi++ {
		g := &chatGroup{idx: gi, first: first}
		for p := 0; p < sizes[gi]; p++ {
			m := &groupMember{idx: first + p, slot: len(gr.members), pos: p, user: userID(cfg, "g", first+p), g: g, from: make([]seqTrack, sizes[gi])}
			g.members = append(g.members, m)
			gr.members = append(gr.members, m)
		}
		gr.groups = append(gr.groups, g)
		first += sizes[gi]
	}
	N := len(gr.members)
	gs := &GroupStats{Groups: len(gr.groups), Members: N, GroupSize: slices.Max(sizes)}
	if cfg.Model != "open" || cfg.Rate <= 0 {
		return gs, errors.New("loadtest: group: the closed model is chat's alone; use the open model with a rate")
	}
	if N == 0 { // more agents than groups
		_, err := cfg.scheduleStart(ctx, "group")
		return gs, err
	}
	frac := float64(N) / float64(cfg.Conns)
	gr.rate = cfg.Rate * frac
	gs.TargetRate = gr.rate
	perSender := gr.rate / float64(N)
	gr.slots = sendSlots(cfg, window)
	for _, m := range gr.members {
		m.at = make([]int64, gr.slots)
	}
	if bits := float64(cfg.GroupSize-1) * gr.rate * window.Seconds(); bits > maxGroupBits {
		return gs, fmt.Errorf("loadtest: group: %.0f receiver bits of bookkeeping is too much (max %d); lower --rate, --group-size or --duration", bits, int64(maxGroupBits))
	}
	if perSender > 40 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%.0f msgs/s per member is near the server's default limits (50 frames/s per connection, 100/s per user); use more members", perSender))
	}

	d := newDialer(cfg)
	tokens := make([]string, N)
	for i, m := range gr.members {
		if tokens[i], m.user, err = d.tokenFor(i, m.user, "d", window+time.Hour); err != nil {
			return gs, err
		}
	}
	connectRate := cfg.ConnectRate * frac
	logf(cfg, "group: opening %d connections at %.0f/s", N, connectRate)
	res := d.openAll(ctx, N, connectRate, tokens, func(i int) func(client.Event) { return gr.onEvent(gr.members[i]) }, true)
	defer closeAll(res.conns)
	if err := allOpened(r, "group", connectRate, N, res); err != nil {
		return gs, err
	}
	t := time.Now()
	if err := gr.createAll(ctx, res.conns); err != nil {
		return gs, err
	}
	gs.CreateSeconds = time.Since(t).Seconds()

	t0, err := gr.begin(ctx, cfg, "group")
	if err != nil {
		return gs, err
	}
	end := t0.Add(window)
	logf(cfg, "group: %d groups of up to %d, %.0f msgs/s (%.2f per member), warm-up %v, measuring %v", len(gr.groups), gs.GroupSize, gr.rate, perSender, cfg.Warmup, cfg.Duration)
	var wg sync.WaitGroup
	for _, m := range gr.members {
		wg.Go(func() { gr.sendLoop(ctx, m, res.conns[m.slot], end) })
	}
	wg.Wait()
	logf(cfg, "group: sends done; waiting for acks and deliveries")
	pollUntil(ctx, 10*time.Second, gr.delivered)

	gr.tally(gs)
	cfg.Recorder.addDelivery(gs.Expected, gs.Lost, gs.Duplicated, gs.Reordered)
	if dead := N - alive(res.conns); dead > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d connections ended during the run", dead))
	}
	if gs.Lost+gs.Duplicated+gs.Unacked > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("group: %d lost, %d duplicated, %d unacked", gs.Lost, gs.Duplicated, gs.Unacked))
	}
	return gs, ctx.Err()
}

// createAll creates every group, its first member as owner, a bounded
// number at a time.
func (gr *groupRun) createAll(ctx context.Context, conns []*client.Conn) error {
	const perFrame = 1000 // protocol limit on a members list
	var (
		mu       sync.Mutex
		firstErr error
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for w := min(64, len(gr.groups)); w > 0; w-- {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(gr.groups) || ctx.Err() != nil {
					return
				}
				g := gr.groups[i]
				users := make([]string, 0, len(g.members)-1)
				for _, m := range g.members[1:] {
					users = append(users, m.user)
				}
				err := createGroup(ctx, conns[g.members[0].slot], fmt.Sprintf("lt%d-g%d", gr.cfg.Seed, g.idx), users, perFrame, &g.conv)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("loadtest: group %d: %w", g.idx, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// createGroup creates a group with users as members through owner's
// connection, perFrame members a frame, and stores its id in conv.
func createGroup(ctx context.Context, owner *client.Conn, title string, users []string, perFrame int, conv *string) error {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n := min(perFrame, len(users))
	c, err := owner.Create(rctx, title, users[:n])
	if err != nil {
		return err
	}
	for ; n < len(users); n += perFrame {
		if err := owner.Add(rctx, c.ID, users[n:min(n+perFrame, len(users))]); err != nil {
			return err
		}
	}
	*conv = c.ID
	return nil
}

// schedule returns m's send schedule from T0: Rate/Conns messages per
// second, constant with the members taking turns or a Poisson process.
func (gr *groupRun) schedule(m *groupMember) Schedule {
	start := time.Unix(0, gr.start.Load())
	perSender := gr.rate / float64(len(gr.members))
	if gr.cfg.MsgArrival == "poisson" {
		return PoissonSchedule(start, perSender, gr.cfg.Seed, streamGroupSends+uint64(gr.cfg.Agent)<<32+uint64(m.idx))
	}
	return ConstantSchedule(start.Add(seconds(float64(m.slot)/gr.rate)), perSender)
}

// onEvent handles one member's events: its acks and errors as a sender,
// the others' messages as a receiver.
func (gr *groupRun) onEvent(m *groupMember) func(client.Event) {
	return func(ev client.Event) {
		switch ev.Type {
		case protocol.TypeMessage:
			gr.onMessage(m, ev.Raw)
		case protocol.TypeAck, protocol.TypeError:
			gr.onReply(m, ev)
		}
	}
}

func (gr *groupRun) onReply(m *groupMember, ev client.Event) {
	now := time.Now()
	_, k, ok := readReply(ev, gr.slots, &gr.sendErr, gr.cfg.Recorder)
	if !ok {
		return
	}
	if ev.Type == protocol.TypeError {
		m.mu.Lock()
		m.errored.set(k)
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	at := m.at[k]
	m.acked.set(k)
	m.mu.Unlock()
	gr.record(gr.ack, at, now)
	gr.cfg.Recorder.Add(CountAcked, 1)
}

func (gr *groupRun) onMessage(m *groupMember, raw []byte) {
	now := time.Now()
	st, ok := stampOf(raw)
	pos := st.sender - m.g.first
	if !ok || st.run != gr.cfg.Seed || pos < 0 || pos >= len(m.from) || pos == m.pos || st.k >= gr.slots {
		gr.unexp.Add(1)
		return
	}
	gr.record(gr.e2e, st.at, now)
	gr.cfg.Recorder.Add(CountReceived, 1)
	m.mu.Lock()
	m.from[pos].see(st.k)
	m.mu.Unlock()
}

// sendLoop sends member m's messages on their schedule until end.
func (gr *groupRun) sendLoop(ctx context.Context, m *groupMember, c *client.Conn, end time.Time) {
	var buf []byte
	rng := rand.New(rand.NewPCG(uint64(gr.cfg.Seed), streamGroupBody+uint64(gr.cfg.Agent)<<32+uint64(m.idx)))
	cmid := fmt.Sprintf("lt%d-g%d-", gr.cfg.Seed, m.idx)
	dropped := onSchedule(ctx, gr.slots, gr.schedule(m).At, end, &gr.late, func(k int, at time.Time) bool {
		buf = appendStamp(buf[:0], stamp{run: gr.cfg.Seed, sender: m.idx, k: k, at: at.UnixNano()}, gr.cfg.BodySize, rng)
		m.mu.Lock()
		m.at[k] = at.UnixNano()
		m.mu.Unlock()
		ks := strconv.Itoa(k)
		f := protocol.Frame{Type: protocol.TypeSend, ID: ks, Conv: m.g.conv, CMID: cmid + ks, Body: string(buf)}
		if !writeSend(ctx, c, f, &gr.sendErr, gr.cfg.Recorder) {
			return false
		}
		m.mu.Lock()
		m.sent = k + 1
		m.mu.Unlock()
		return true
	})
	if dropped > 0 {
		gr.cfg.Recorder.Add(CountDropped, int64(dropped))
	}
}

// delivered reports whether every sent message is acked (or refused) and
// every acked one received by every other member of its group.
func (gr *groupRun) delivered() bool {
	for _, g := range gr.groups {
		for _, s := range g.members {
			s.mu.Lock()
			sent, acked, errored := s.sent, s.acked.clone(), s.errored.clone()
			s.mu.Unlock()
			for k := 0; k < sent; k++ {
				if !acked.has(k) && !errored.has(k) {
					return false
				}
			}
			for _, m := range g.members {
				if m == s {
					continue
				}
				m.mu.Lock()
				got := m.from[s.pos].got
				missing := false
				for k := 0; k < sent && !missing; k++ {
					missing = acked.has(k) && !got.has(k)
				}
				m.mu.Unlock()
				if missing {
					return false
				}
			}
		}
	}
	return true
}

// tally fills in gs from the members' books.
func (gr *groupRun) tally(gs *GroupStats) {
	measure := gr.measure.Load()
	var inWindow int64
	for _, g := range gr.groups {
		for _, s := range g.members {
			s.mu.Lock()
			sent, acked, errored, at := s.sent, s.acked.clone(), s.errored.clone(), s.at
			s.mu.Unlock()
			gs.Sent += int64(sent)
			for k := 0; k < sent; k++ {
				switch {
				case acked.has(k):
					gs.Acked++
					gs.Expected += int64(len(g.members) - 1)
					if at[k] >= measure {
						inWindow++
					}
				case !errored.has(k):
					gs.Unacked++
				}
			}
			for _, m := range g.members {
				if m == s {
					continue
				}
				m.mu.Lock()
				tr := &m.from[s.pos]
				gs.Received += int64(tr.got.count())
				gs.Duplicated += tr.dup
				gs.Reordered += tr.reorder
				for k := 0; k < sent; k++ {
					if acked.has(k) && !tr.got.has(k) {
						gs.Lost++
					}
				}
				m.mu.Unlock()
			}
		}
	}
	if gr.cfg.Duration > 0 {
		gs.AchievedRate = float64(inWindow) / gr.cfg.Duration.Seconds()
	}
	gs.LateSends = gr.late.Load()
	gs.SendErrors = gr.sendErr.snapshot()
	gs.Unexpected = gr.unexp.Load()
	gs.EndToEnd = gr.e2e.percentiles()
	gs.Ack = gr.ack.percentiles()
}

// writeGroup writes the group part of the human summary.
func writeGroup(w io.Writer, g *GroupStats) {
	fmt.Fprintf(w, "  group: %d groups of up to %d (%d members, created in %.2f s), target %.0f msg/s, achieved %.0f msg/s; sent %d acked %d unacked %d late sends %d\n",
		g.Groups, g.GroupSize, g.Members, g.CreateSeconds, g.TargetRate, g.AchievedRate, g.Sent, g.Acked, g.Unacked, g.LateSends)
	fmt.Fprintf(w, "  delivery: expected %d received %d lost %d dup %d reordered %d unexpected %d\n",
		g.Expected, g.Received, g.Lost, g.Duplicated, g.Reordered, g.Unexpected)
	if len(g.SendErrors) > 0 {
		fmt.Fprintf(w, "  send errors: %s\n", fmtCounts(g.SendErrors))
	}
	writePct(w, "end-to-end", g.EndToEnd)
	writePct(w, "send->ack ", g.Ack)
}

// stamp is what a message body of the group and storm scenarios carries:
// the run id (Seed), the sender's index in the run, its message number and
// the intended send time. Sender and receiver share one process clock.
type stamp struct {
	run    int64
	sender int
	k      int
	at     int64 // unix ns
}

// appendStamp appends "<run> <sender> <k> <at>", padded to at least size
// bytes with a space and printable characters from rng ('x' if nil).
func appendStamp(b []byte, s stamp, size int, rng *rand.Rand) []byte {
	n := len(b)
	b = strconv.AppendInt(b, s.run, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(s.sender), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(s.k), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, s.at, 10)
	if pad := size - (len(b) - n) - 1; pad >= 0 {
		b = append(b, ' ')
		if rng != nil {
			return appendPrintable(b, rng, pad)
		}
		for ; pad > 0; pad-- {
			b = append(b, 'x')
		}
	}
	return b
}

// parseStamp reads the stamp at the start of b: four integers separated
// by single spaces, the last one ended by anything but a digit (the
// padding's space, the body's closing quote, the end of b).
func parseStamp(b []byte) (stamp, bool) {
	var f [4]int64
	for i := range f {
		j := 0
		if j < len(b) && b[j] == '-' {
			j++
		}
		for j < len(b) && j < 20 && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		v, err := strconv.ParseInt(string(b[:j]), 10, 64)
		if err != nil || (i < 3 && (j == len(b) || b[j] != ' ')) {
			return stamp{}, false
		}
		f[i] = v
		b = b[min(j+1, len(b)):]
	}
	if f[1] < 0 || f[1] > math.MaxInt32 || f[2] < 0 || f[2] > math.MaxInt32 {
		return stamp{}, false
	}
	return stamp{run: f[0], sender: int(f[1]), k: int(f[2]), at: f[3]}, true
}

var bodyKey = []byte(`"body":"`)

// stampOf reads the stamp of a message frame without decoding its JSON:
// the stamp opens the body and holds only digits, '-' and spaces, which
// JSON never escapes. Frames of another shape go through encoding/json.
func stampOf(raw []byte) (stamp, bool) {
	if i := bytes.Index(raw, bodyKey); i >= 0 {
		if s, ok := parseStamp(raw[i+len(bodyKey):]); ok {
			return s, true
		}
	}
	var m protocol.Message
	if json.Unmarshal(raw, &m) != nil {
		return stamp{}, false
	}
	return parseStamp([]byte(m.Body))
}

// reply is the part of an ack or error frame the scenarios read.
type reply struct {
	ID   string `json:"id"`
	Code string `json:"code"` // error
	Conv string `json:"conv"` // ack
	Seq  uint64 `json:"seq"`  // ack
}

func parseReply(raw []byte) (reply, bool) {
	var r reply
	return r, json.Unmarshal(raw, &r) == nil
}

// readReply reads ev, an ack or error reply to a sender whose messages are
// numbered 0 to slots-1 (the reply's id), and returns it with the number
// of the message it answers; ok is false if it answers none of them. An
// error reply is counted by code in sendErr and, if it answers a message,
// in rec's PrefixSendErr counter; a reply that does not parse counts in
// sendErr as "bad_reply".
func readReply(ev client.Event, slots int, sendErr *counts, rec *Recorder) (rp reply, k int, ok bool) {
	if rp, ok = parseReply(ev.Raw); !ok {
		sendErr.add("bad_reply")
		return rp, 0, false
	}
	refused := ev.Type == protocol.TypeError
	if refused {
		sendErr.add(rp.Code)
	}
	k, err := strconv.Atoi(rp.ID)
	if err != nil || k < 0 || k >= slots {
		return rp, 0, false
	}
	if refused {
		rec.Add(PrefixSendErr+rp.Code, 1)
	}
	return rp, k, true
}

// writeSend writes f, a message's send frame, on c and counts it in rec
// as sent, or, if the write fails, in sendErr as "write". It reports
// whether the write succeeded.
func writeSend(ctx context.Context, c *client.Conn, f protocol.Frame, sendErr *counts, rec *Recorder) bool {
	if err := c.WriteFrame(ctx, f); err != nil {
		sendErr.add("write")
		return false
	}
	rec.Add(CountSent, 1)
	return true
}

// seqBits is a set of small non-negative integers that grows on demand.
type seqBits []uint64

// set adds i and reports whether it was there already.
func (b *seqBits) set(i int) (was bool) {
	w := i / 64
	if w >= len(*b) {
		*b = append(*b, make([]uint64, w+1-len(*b))...)
	}
	bit := uint64(1) << (i % 64)
	was = (*b)[w]&bit != 0
	(*b)[w] |= bit
	return was
}

func (b seqBits) has(i int) bool {
	w := i / 64
	return i >= 0 && w < len(b) && b[w]&(uint64(1)<<(i%64)) != 0
}

func (b seqBits) count() int {
	n := 0
	for _, w := range b {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

func (b seqBits) clone() seqBits { return append(seqBits(nil), b...) }

// seqTrack is one receiver's book of one sender's message numbers. The
// zero value is ready.
type seqTrack struct {
	got     seqBits
	top     int // highest number received + 1; 0 before any
	dup     int64
	reorder int64
}

// see records number k and reports whether it is the first copy.
func (t *seqTrack) see(k int) bool {
	if t.got.set(k) {
		t.dup++
		return false
	}
	if k+1 < t.top {
		t.reorder++
	}
	t.top = max(t.top, k+1)
	return true
}

// pollUntil calls done every 20 ms until it reports true (then it returns
// true), timeout passes or ctx ends.
func pollUntil(ctx context.Context, timeout time.Duration, done func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if done() {
			return true
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return false
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// errCode is the protocol error code of err, or its dial error kind.
func errCode(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return errKind(err)
}
