package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
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
	cfg     *Config
	pairs   []*chatPair
	start   atomic.Int64 // T0, unix ns; set before any send
	measure atomic.Int64 // T0 + warm-up, unix ns
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
}

func (cr *chatRun) intended(j, k int) time.Time {
	return arrival(time.Unix(0, cr.start.Load()), cr.cfg.Rate, chatSlot(j, k, len(cr.pairs)))
}

// onSender handles the sender's acks and error replies.
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
		k, err := strconv.Atoi(head.ID)
		if err != nil || k < 0 || k >= len(p.acked) {
			if ev.Type == protocol.TypeError {
				cr.sendErr.add(head.Code)
			}
			return
		}
		if ev.Type == protocol.TypeError {
			cr.sendErr.add(head.Code)
			cr.cfg.Recorder.Add(PrefixSendErr+head.Code, 1)
			p.mu.Lock()
			p.errored[k] = true
			p.mu.Unlock()
			return
		}
		at := cr.intended(p.idx, k)
		if at.UnixNano() >= cr.measure.Load() {
			cr.ack.record(now.Sub(at))
		}
		cr.cfg.Recorder.Add(CountAcked, 1)
		p.mu.Lock()
		p.acked[k] = true
		p.mu.Unlock()
	}
}

// onReceiver handles messages: latency from the intended send time carried
// in the body ("<unix ns> <seq>"), and loss/duplicate/order bookkeeping.
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
		ts, seqs, ok := strings.Cut(m.Body, " ")
		if !ok {
			return
		}
		at, err1 := strconv.ParseInt(ts, 10, 64)
		k, err2 := strconv.Atoi(seqs)
		if err1 != nil || err2 != nil || k < 0 || k >= len(p.received) {
			return
		}
		if at >= cr.measure.Load() {
			cr.e2e.record(now.Sub(time.Unix(0, at)))
		}
		cr.cfg.Recorder.Add(CountReceived, 1)
		p.mu.Lock()
		defer p.mu.Unlock()
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
	P := cfg.Conns
	window := cfg.Warmup + cfg.Duration
	K := int(math.Ceil(cfg.Rate*window.Seconds()/float64(P))) + 1
	cr := &chatRun{cfg: cfg, e2e: cfg.Recorder.Hist(HistE2E), ack: cfg.Recorder.Hist(HistAck)}
	d := newDialer(cfg)
	tokens := make([]string, 2*P)
	for i := 0; i < P; i++ {
		p := &chatPair{
			idx: i, sender: userID(cfg, "s", i), receiver: userID(cfg, "r", i),
			acked: make([]bool, K), errored: make([]bool, K), received: make([]uint8, K), maxSeen: -1,
		}
		cr.pairs = append(cr.pairs, p)
		var err error
		ttl := window + time.Hour
		if tokens[2*i], err = d.token(p.sender, "d", ttl); err != nil {
			return err
		}
		if tokens[2*i+1], err = d.token(p.receiver, "d", ttl); err != nil {
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
	cs := connectStats(cfg.ConnectRate, 2*P, res)
	r.Connect = &cs
	if int(cs.OK) != 2*P {
		return fmt.Errorf("loadtest: chat: only %d of %d connections opened (%s)", cs.OK, 2*P, fmtCounts(cs.Errors))
	}

	t0 := time.Now().Add(100 * time.Millisecond)
	cr.start.Store(t0.UnixNano())
	cr.measure.Store(t0.Add(cfg.Warmup).UnixNano())
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
				if cr.intended(p.idx, k).UnixNano() >= measure {
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
	rec := cfg.Recorder
	rec.Add(CountExpected, c.Acked) // one recipient device per message
	rec.Add(CountLost, c.Lost)
	rec.Add(CountDup, c.Duplicated)
	rec.Add(CountReordered, c.Reordered)
	if dead := 2*P - alive(res.conns); dead > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d connections ended during the run", dead))
	}
	return ctx.Err()
}

// sendLoop sends pair p's messages on their schedule until end.
func (cr *chatRun) sendLoop(ctx context.Context, p *chatPair, c *client.Conn, end time.Time, max int) {
	intended := func(k int) time.Time { return cr.intended(p.idx, k) }
	onSchedule(ctx, max, intended, end, &cr.late, func(k int, at time.Time) bool {
		f := protocol.Frame{
			Type: protocol.TypeSend,
			ID:   strconv.Itoa(k),
			To:   p.receiver,
			CMID: fmt.Sprintf("lt%d-%d-%d", cr.cfg.Seed, p.idx, k),
			Body: strconv.FormatInt(at.UnixNano(), 10) + " " + strconv.Itoa(k),
		}
		if err := c.WriteFrame(ctx, f); err != nil {
			cr.sendErr.add("write")
			return false
		}
		cr.cfg.Recorder.Add(CountSent, 1)
		p.mu.Lock()
		p.sent = k + 1
		p.mu.Unlock()
		return true
	})
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
