package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// lateSend is how far behind its intended time a send may leave before it
// counts as late.
const lateSend = 10 * time.Millisecond

// chatRun is the shared state of a chat run.
type chatRun struct {
	runClock
	cfg     *Config
	pairs   []*chatPair
	e2e     *latency
	ack     *latency
	sendErr counts
	late    atomic.Int64
}

// chatPair is one sender→receiver 1:1 conversation.
type chatPair struct {
	idx      int
	sender   string
	receiver string

	mu       sync.Mutex
	sent     int     // guarded by mu; messages written
	acked    []bool  // guarded by mu; by per-sender seq
	errored  []bool  // guarded by mu
	received []uint8 // guarded by mu; receive count by seq (saturates)
	maxSeen  int     // guarded by mu; highest seq received, -1 before any
	dup      int64   // guarded by mu
	reorder  int64   // guarded by mu
	// at is each seq's send time, unix ns: intended (open model) or
	// actual (closed); set before the message is written. Guarded by mu.
	at []int64
	// replies wakes a closed-model sender when the reply (ack or error)
	// to seq waitFor arrives; nil in the open model. Guarded by mu.
	replies chan struct{}
	waitFor int
}

// intendedLocked is when message k was meant to leave (the open model's
// schedule) or left (closed model): latency counts from it. p.mu is held.
func (p *chatPair) intendedLocked(k int) time.Time { return time.Unix(0, p.at[k]) }

// slotLocked makes room for message k's bookkeeping. The open model's
// fits in what runChat allocated (sendSlots); a closed-model sender without
// a rate cap grows it. p.mu is held.
func (p *chatPair) slotLocked(k int) {
	if p.at == nil {
		p.at = make([]int64, len(p.acked))
	}
	if k < len(p.at) {
		return
	}
	n := max(k+1, 2*len(p.at))
	p.at = append(p.at, make([]int64, n-len(p.at))...)
	p.acked = append(p.acked, make([]bool, n-len(p.acked))...)
	p.errored = append(p.errored, make([]bool, n-len(p.errored))...)
	p.received = append(p.received, make([]uint8, n-len(p.received))...)
}

// onSender handles the sender's acks and error replies, and wakes a
// closed-model sender waiting for the reply.
func (cr *chatRun) onSender(p *chatPair) func(client.Event) {
	return func(ev client.Event) {
		switch ev.Type {
		case protocol.TypeAck, protocol.TypeError:
		default:
			return
		}
		now := time.Now()
		var head struct {
			ID   string `json:"id"`
			Code string `json:"code"`
		}
		if err := json.Unmarshal(ev.Raw, &head); err != nil {
			cr.sendErr.add("bad_reply")
			return
		}
		if ev.Type == protocol.TypeError {
			cr.sendErr.add(head.Code)
		}
		k, err := strconv.Atoi(head.ID)
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil || k < 0 || k >= len(p.at) {
			return
		}
		if ev.Type == protocol.TypeError {
			cr.cfg.Recorder.Add(PrefixSendErr+head.Code, 1)
			p.errored[k] = true
		} else {
			cr.record(cr.ack, p.at[k], now)
			cr.cfg.Recorder.Add(CountAcked, 1)
			p.acked[k] = true
		}
		if p.replies != nil && k == p.waitFor {
			select {
			case p.replies <- struct{}{}:
			default:
			}
		}
	}
}

// onReceiver handles messages: latency from the intended send time carried
// in the body ("<unix ns> <seq>", then padding; see chatBody), and
// loss/duplicate/order bookkeeping.
func (cr *chatRun) onReceiver(p *chatPair) func(client.Event) {
	return func(ev client.Event) {
		if ev.Type != protocol.TypeMessage {
			return
		}
		now := time.Now()
		m, err := ev.Message()
		if err != nil {
			return
		}
		ts, rest, ok := strings.Cut(m.Body, " ")
		if !ok {
			return
		}
		seqs, _, _ := strings.Cut(rest, " ") // the padding follows
		at, err1 := strconv.ParseInt(ts, 10, 64)
		k, err2 := strconv.Atoi(seqs)
		if err1 != nil || err2 != nil || k < 0 {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if k >= len(p.received) {
			return
		}
		cr.record(cr.e2e, at, now)
		cr.cfg.Recorder.Add(CountReceived, 1)
		if p.received[k] > 0 {
			p.dup++
		} else if k < p.maxSeen {
			p.reorder++
		}
		if p.received[k] < math.MaxUint8 {
			p.received[k]++
		}
		if k > p.maxSeen {
			p.maxSeen = k
		}
	}
}

// runChat runs the 1:1 chat scenario.
func runChat(ctx context.Context, cfg *Config, r *Report) error {
	cfg = cfg.agentPart(true) // a pair's sender and receiver are in one agent
	P := cfg.Conns
	window := cfg.Warmup + cfg.Duration
	K := sendSlots(cfg, window)
	cr := &chatRun{cfg: cfg, e2e: cfg.Recorder.Hist(HistE2E), ack: cfg.Recorder.Hist(HistAck)}
	d := newDialer(cfg)
	d.urlFor = chatPlacement(cfg.Placement, len(cfg.URLs))
	if err := d.needTokens(2 * P); err != nil {
		return err
	}
	tokens := make([]string, 2*P)
	for i := 0; i < P; i++ {
		p := &chatPair{
			idx: i, sender: userID(cfg, "s", i), receiver: userID(cfg, "r", i),
			acked: make([]bool, K), errored: make([]bool, K), received: make([]uint8, K), maxSeen: -1,
		}
		cr.pairs = append(cr.pairs, p)
		var err error
		ttl := window + time.Hour
		if tokens[2*i], p.sender, err = d.tokenFor(2*i, p.sender, "d", ttl); err != nil {
			return err
		}
		if tokens[2*i+1], p.receiver, err = d.tokenFor(2*i+1, p.receiver, "d", ttl); err != nil {
			return err
		}
	}
	perSender := cfg.Rate / float64(P)
	if perSender > 40 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%.0f msgs/s per sender is near the server's default limits (50 frames/s per connection, 100/s per user); use more pairs", perSender))
	}
	logf(cfg, "chat: opening %d connections at %.0f/s", 2*P, cfg.ConnectRate)
	res := d.openAll(ctx, 2*P, cfg.ConnectRate, tokens, func(i int) func(client.Event) {
		if i%2 == 0 {
			return cr.onSender(cr.pairs[i/2])
		}
		return cr.onReceiver(cr.pairs[i/2])
	}, true)
	defer closeAll(res.conns)
	if err := allOpened(r, "chat", cfg.ConnectRate, 2*P, res); err != nil {
		return err
	}

	t0, err := cr.begin(ctx, cfg, "chat")
	if err != nil {
		return err
	}
	end := t0.Add(window)
	logf(cfg, "chat: %d pairs, %.0f msgs/s (%.1f per sender), warm-up %v, measuring %v", P, cfg.Rate, perSender, cfg.Warmup, cfg.Duration)
	var wg sync.WaitGroup
	for i, p := range cr.pairs {
		wg.Add(1)
		go func(p *chatPair, c *client.Conn) {
			defer wg.Done()
			cr.sendLoop(ctx, p, c, end, K)
		}(p, res.conns[2*i])
	}
	wg.Wait()
	logf(cfg, "chat: sends done; waiting for acks and deliveries")
	cr.drain(ctx, 10*time.Second)

	c := &ChatStats{Pairs: P, TargetRate: cfg.Rate, SendErrors: cr.sendErr.snapshot(), LateSends: cr.late.Load()}
	if len(cfg.URLs) > 1 {
		c.Placement = cfg.Placement
	}
	measure := cr.measure.Load()
	var inWindow int64
	for _, p := range cr.pairs {
		p.mu.Lock()
		c.Sent += int64(p.sent)
		for k := 0; k < p.sent; k++ {
			if p.received[k] > 0 {
				c.Received++
			}
			switch {
			case p.acked[k]:
				c.Acked++
				if p.received[k] == 0 {
					c.Lost++
				}
				if p.intendedLocked(k).UnixNano() >= measure {
					inWindow++
				}
			case !p.errored[k]:
				c.Unacked++
			}
		}
		c.Duplicated += p.dup
		c.Reordered += p.reorder
		p.mu.Unlock()
	}
	c.AchievedRate = float64(inWindow) / cfg.Duration.Seconds()
	c.EndToEnd = cr.e2e.percentiles()
	c.Ack = cr.ack.percentiles()
	r.Chat = c
	cfg.Recorder.addDelivery(c.Acked, c.Lost, c.Duplicated, c.Reordered) // one recipient device per message
	if dead := 2*P - alive(res.conns); dead > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d connections ended during the run", dead))
	}
	return ctx.Err()
}

// chatPlacement returns the URL index of chat's connection i over n URLs:
// pair k's sender is connection 2k, on URL k mod n; its receiver, 2k+1, is
// on the next URL ("cross") or the same one ("same").
func chatPlacement(placement string, n int) func(i int) int {
	return func(i int) int {
		k := i / 2
		if i%2 == 1 && placement == "cross" {
			k++
		}
		return k % n
	}
}

// sendLoop sends pair p's messages until end, at most max: in the open
// model at the times of the pair's schedule, in the closed model one at a
// time (closedLoop).
func (cr *chatRun) sendLoop(ctx context.Context, p *chatPair, c *client.Conn, end time.Time, max int) {
	body := cr.bodies(p)
	if cr.cfg.Model == "closed" {
		cr.closedLoop(ctx, p, c, end, body)
		return
	}
	sched := cr.schedule(p)
	dropped := onSchedule(ctx, max, sched.At, end, &cr.late, func(k int, at time.Time) bool {
		return cr.send(ctx, p, c, k, at, body)
	})
	if dropped > 0 {
		cr.cfg.Recorder.Add(CountDropped, int64(dropped))
	}
}

// schedule returns pair p's open-model send schedule from T0, Rate/Conns
// messages per second: constant with the senders taking turns (sender j's
// messages j/Rate after sender 0's, so the total rate is even), or a
// Poisson process of its own per sender (the total stays Rate).
func (cr *chatRun) schedule(p *chatPair) Schedule {
	cfg := cr.cfg
	start := time.Unix(0, cr.start.Load())
	perSender := cfg.Rate / float64(cfg.Conns)
	if cfg.MsgArrival == "poisson" {
		return PoissonSchedule(start, perSender, cfg.Seed, streamSends+uint64(cfg.Agent)<<32+uint64(p.idx))
	}
	return ConstantSchedule(start.Add(seconds(float64(p.idx)/cfg.Rate)), perSender)
}

// closedReplyTimeout bounds a closed-model sender's wait for a reply.
const closedReplyTimeout = 10 * time.Second

// maxClosedSends bounds one closed-model sender's messages, and so its
// bookkeeping.
const maxClosedSends = 1 << 20

// closedLoop sends pair p's messages one at a time until end, each after
// the previous one's reply (ack or error, or closedReplyTimeout without
// one) and Think, and, if Rate caps the senders, at least Conns/Rate after
// the previous send. Latency counts from the actual send: a stalled server
// slows the sender down instead of showing in the latency (coordinated
// omission), which is why the closed model is opt-in.
func (cr *chatRun) closedLoop(ctx context.Context, p *chatPair, c *client.Conn, end time.Time, body *chatBody) {
	var gap time.Duration
	if cr.cfg.Rate > 0 {
		gap = seconds(float64(cr.cfg.Conns) / cr.cfg.Rate)
	}
	replies := make(chan struct{}, 1)
	p.mu.Lock()
	p.replies = replies
	p.mu.Unlock()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	// The run starts at its scheduled start (t0 may lie ahead: a common
	// start for every agent), not when this goroutine does.
	sleepUntil(ctx, end.Add(-(cr.cfg.Warmup + cr.cfg.Duration)))
	var last time.Time
	for k := 0; k < maxClosedSends; k++ {
		if k > 0 && gap > 0 {
			sleep(ctx, time.Until(last.Add(gap)))
		}
		now := time.Now()
		if ctx.Err() != nil || !now.Before(end) {
			return
		}
		if !cr.send(ctx, p, c, k, now, body) {
			return
		}
		last = now
		t.Reset(min(closedReplyTimeout, time.Until(end)))
		select {
		case <-replies:
		case <-t.C:
			// The window ended, or no reply in closedReplyTimeout: go on
			// (a late reply still counts; none leaves it unacked).
		case <-ctx.Done():
			return
		}
		sleep(ctx, cr.cfg.Think)
	}
}

// send writes pair p's message k, meant to leave (open model) or leaving
// (closed) at at. It reports whether the connection is still usable.
func (cr *chatRun) send(ctx context.Context, p *chatPair, c *client.Conn, k int, at time.Time, body *chatBody) bool {
	p.mu.Lock()
	p.slotLocked(k)
	p.at[k] = at.UnixNano()
	p.waitFor = k
	if p.replies != nil {
		select { // a late reply to an earlier message
		case <-p.replies:
		default:
		}
	}
	p.mu.Unlock()
	f := protocol.Frame{
		Type: protocol.TypeSend,
		ID:   strconv.Itoa(k),
		To:   p.receiver,
		CMID: fmt.Sprintf("lt%d-%d-%d", cr.cfg.Seed, p.idx, k),
		Body: body.next(at, k),
	}
	if !writeSend(ctx, c, f, &cr.sendErr, cr.cfg.Recorder) {
		return false
	}
	p.mu.Lock()
	p.sent = k + 1
	p.mu.Unlock()
	return true
}

// chatBody builds one sender's message bodies: "<unix ns> <seq>", the
// send time the latency counts from and the sequence number, then, if
// Config.BodySize asks for more, a space and printable padding up to
// BodySize bytes. The padding comes from a generator seeded with the seed
// and the pair, so the same seed gives the same payloads.
type chatBody struct {
	size int
	rng  *rand.Rand // nil without padding
	buf  []byte
}

func (cr *chatRun) bodies(p *chatPair) *chatBody {
	b := &chatBody{size: cr.cfg.BodySize}
	if b.size > 0 {
		b.rng = rand.New(rand.NewPCG(uint64(cr.cfg.Seed), streamBody+uint64(cr.cfg.Agent)<<32+uint64(p.idx)))
	}
	return b
}

// next returns message k's body, sent at at.
func (b *chatBody) next(at time.Time, k int) string {
	buf := strconv.AppendInt(b.buf[:0], at.UnixNano(), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(k), 10)
	if pad := b.size - len(buf) - 1; pad >= 0 {
		buf = append(buf, ' ')
		buf = appendPrintable(buf, b.rng, pad)
	}
	b.buf = buf
	return string(buf)
}

// appendPrintable appends n pseudo-random printable ASCII characters
// without space ('!' to '~'), eight from each draw.
func appendPrintable(b []byte, rng *rand.Rand, n int) []byte {
	for n > 0 {
		r := rng.Uint64()
		for j := 0; j < 8 && n > 0; j, n = j+1, n-1 {
			b = append(b, '!'+byte(r%94))
			r >>= 8
		}
	}
	return b
}

// drain waits until every sent message is acked (or refused) and every
// acked one received, or until timeout.
func (cr *chatRun) drain(ctx context.Context, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		done := true
		for _, p := range cr.pairs {
			p.mu.Lock()
			for k := 0; k < p.sent && done; k++ {
				if !p.errored[k] && (!p.acked[k] || p.received[k] == 0) {
					done = false
				}
			}
			p.mu.Unlock()
			if !done {
				break
			}
		}
		if done {
			return
		}
		sleep(ctx, 50*time.Millisecond)
	}
}
