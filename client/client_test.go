package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parley-im/parley/protocol"
)

// checkLeaks fails the test if goroutines outlive it. Call it first, so its
// cleanup runs last (after connections and the server are closed).
func checkLeaks(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			http.DefaultTransport.(*http.Transport).CloseIdleConnections()
			n := runtime.NumGoroutine()
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			if n <= base && !strings.Contains(stacks, "(*Conn).readLoop") {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leaked goroutines: %d at start, %d now:\n%s", base, n, stacks)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// waitUntil polls cond until it holds or the timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects to ts with the good token; mod adjusts the options.
func dial(t *testing.T, ts *testServer, mod func(*Options)) *Conn {
	t.Helper()
	opts := Options{URL: ts.url(), Token: "good"}
	if mod != nil {
		mod(&opts)
	}
	c, err := Dial(testCtx(t), opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func TestDialHello(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, func(o *Options) { o.Resume = true })

	h := c.Hello()
	if h.Type != protocol.TypeHello || h.User != "u1" || h.Session != "s1" || h.HeartbeatMS != 25000 {
		t.Fatalf("hello = %+v", h)
	}
	if h.Resume == nil || len(h.Resume.Convs) != 1 || h.Resume.Convs[0].LastSeq != 7 {
		t.Fatalf("hello.Resume = %+v, want the resume object asked for", h.Resume)
	}
	if c.Err() != nil {
		t.Fatalf("Err on a live conn = %v", c.Err())
	}

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	<-c.Done()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err after Close = %v, want ErrClosed", c.Err())
	}
	if _, ok := <-c.Events(); ok {
		t.Fatal("Events not closed after Close")
	}
	if _, err := c.Send(testCtx(t), "c1", "m1", "hi"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Next(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
}

func TestDialUnauthorized(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c, err := Dial(testCtx(t), Options{URL: ts.url(), Token: "bad"})
	if c != nil {
		t.Fatal("Dial returned a conn with a bad token")
	}
	var ce *CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("Dial error = %v (%T), want *CloseError", err, err)
	}
	if ce.Code != protocol.CloseUnauthorized || ce.Reason != "unauthorized" || ce.ShouldReconnect() {
		t.Fatalf("CloseError = %+v", ce)
	}
}

func TestDialOtherTokenCarriers(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	for _, opts := range []Options{
		{URL: ts.url(), Subprotocols: []string{"parley.token.good"}},
		{URL: ts.url() + "?access_token=good", Resume: true},
	} {
		c, err := Dial(testCtx(t), opts)
		if err != nil {
			t.Fatalf("Dial(%+v): %v", opts, err)
		}
		_ = c.Close()
	}
	// An error frame before the close does not hide the close code.
	_, err := Dial(testCtx(t), Options{URL: ts.url() + "?explain=1", Token: "bad"})
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.CloseUnauthorized {
		t.Fatalf("Dial error = %v, want *CloseError 4500", err)
	}
}

func TestDialUpgradeRefused(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	_, err := Dial(testCtx(t), Options{URL: ts.url() + "/busy", Token: "good"})
	var ue *UpgradeError
	if !errors.As(err, &ue) {
		t.Fatalf("Dial error = %v (%T), want *UpgradeError", err, err)
	}
	if ue.StatusCode != http.StatusServiceUnavailable || !strings.Contains(ue.Body, "draining") {
		t.Fatalf("UpgradeError = %+v", ue)
	}
}

func TestDialWithoutSubprotocol(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	_, err := Dial(testCtx(t), Options{URL: ts.url() + "/noproto", Token: "good"})
	if err == nil || !strings.Contains(err.Error(), "subprotocol") {
		t.Fatalf("Dial error = %v, want a subprotocol error", err)
	}
}

func TestDialTimeoutWithoutHello(t *testing.T) {
	checkLeaks(t)
	// A server that upgrades but never says hello.
	srv := newMuteServer(t)
	start := time.Now()
	_, err := Dial(testCtx(t), Options{URL: srv, DialTimeout: 100 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial error = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Dial took %v with a 100ms DialTimeout", d)
	}
}

func TestConnOutlivesDialContext(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Dial(ctx, Options{URL: ts.url(), Token: "good"})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, err := c.Send(testCtx(t), "c1", "m1", "hi"); err != nil {
		t.Fatalf("Send after the dial context ended: %v", err)
	}
}

func TestRequestsConcurrent(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)
	ctx := testCtx(t)

	const workers, each = 32, 50
	var mu sync.Mutex
	seqs := make(map[uint64]string)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				cmid := fmt.Sprintf("w%d-%d", w, i)
				conv := fmt.Sprintf("c%d", w)
				a, err := c.Send(ctx, conv, cmid, "body "+cmid)
				if err != nil {
					t.Errorf("Send %s: %v", cmid, err)
					return
				}
				if a.CMID != cmid || a.Conv != conv || a.Seq == 0 {
					t.Errorf("Send %s got ack %+v", cmid, a)
					return
				}
				mu.Lock()
				if prev, dup := seqs[a.Seq]; dup {
					t.Errorf("seq %d acked to %s and %s", a.Seq, prev, cmid)
				}
				seqs[a.Seq] = cmid
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Every ack came batched with a message event in one websocket message.
	got := make(map[string]bool)
	for len(got) < workers*each {
		ev, err := c.WaitFor(ctx, OfType(protocol.TypeMessage))
		if err != nil {
			t.Fatalf("after %d message events: %v", len(got), err)
		}
		m, err := ev.Message()
		if err != nil {
			t.Fatal(err)
		}
		if m.Body != "body "+m.CMID || got[m.CMID] {
			t.Fatalf("bad or duplicate message event %+v", m)
		}
		got[m.CMID] = true
	}
	if c.Dropped() != 0 {
		t.Fatalf("Dropped = %d", c.Dropped())
	}
}

func TestErrorReply(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)

	r, err := c.Request(testCtx(t), protocol.Frame{Type: "fail"})
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		t.Fatalf("Request error = %v (%T), want *protocol.Error", err, err)
	}
	if pe.Code != protocol.CodeRateLimited || pe.Message != "slow down" || pe.RetryAfter != 1500 {
		t.Fatalf("error = %+v", pe)
	}
	if r.Type != protocol.TypeError || r.ID == "" {
		t.Fatalf("reply = %+v", r)
	}

	// A caller-chosen id is echoed, and a duplicate pending id is refused.
	r, err = c.Request(testCtx(t), protocol.Frame{Type: "echo", ID: "mine"})
	if err != nil || r.ID != "mine" || r.Type != protocol.TypeResult {
		t.Fatalf("Request with own id = %+v, %v", r, err)
	}
}

func TestHelpers(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)
	ctx := testCtx(t)

	echoed := func(r protocol.Result) protocol.Frame {
		t.Helper()
		var f protocol.Frame
		if err := json.Unmarshal(r.Data, &f); err != nil {
			t.Fatalf("result data %s: %v", r.Data, err)
		}
		return f
	}

	a, err := c.SendTo(ctx, "bob", "m1", "hi")
	if err != nil || a.Conv != "dm:bob" {
		t.Fatalf("SendTo = %+v, %v", a, err)
	}
	a, err = c.SendFrame(ctx, protocol.Frame{Conv: "c1", CMID: "m2", Body: "x", Meta: json.RawMessage(`{"k":1}`)})
	if err != nil || a.Conv != "c1" || a.CMID != "m2" {
		t.Fatalf("SendFrame = %+v, %v", a, err)
	}
	conv, err := c.Create(ctx, "team", []string{"u2", "u3"})
	if err != nil || conv.ID != "g1" || conv.Title != "team" {
		t.Fatalf("Create = %+v, %v", conv, err)
	}
	convs, err := c.Convs(ctx)
	if err != nil || len(convs) != 2 {
		t.Fatalf("Convs = %+v, %v", convs, err)
	}
	res, err := c.Refresh(ctx, "tok")
	if err != nil || res.TokenExp != 42 {
		t.Fatalf("Refresh = %+v, %v", res, err)
	}
	res, err = c.History(ctx, "c1", 10, 0, 20)
	if err != nil || len(res.Messages) != 1 || res.Messages[0].Seq != 9 {
		t.Fatalf("History = %+v, %v", res, err)
	}
	synced, err := c.Sync(ctx, map[string]uint64{"c1": 4}, 100)
	if err != nil || len(synced.Convs) != 1 || synced.Convs[0].Messages[0].Seq != 5 {
		t.Fatalf("Sync = %+v, %v", synced, err)
	}
	res, err = c.Watch(ctx, []string{"u2"})
	if f := echoed(res); err != nil || f.Type != protocol.TypeWatch || f.Users[0] != "u2" {
		t.Fatalf("Watch sent %+v, %v", f, err)
	}
	for name, call := range map[string]func() error{
		"Unwatch":     func() error { return c.Unwatch(ctx, []string{"u2"}) },
		"Subscribe":   func() error { return c.Subscribe(ctx, "driver.7.location") },
		"Unsubscribe": func() error { return c.Unsubscribe(ctx, "driver.7.location") },
		"Publish":     func() error { return c.Publish(ctx, "driver.7.location", []byte(`{"lat":1}`)) },
		"Rename":      func() error { return c.Rename(ctx, "g1", "new") },
		"Add":         func() error { return c.Add(ctx, "g1", []string{"u4"}) },
		"Remove":      func() error { return c.Remove(ctx, "g1", []string{"u4"}) },
		"Leave":       func() error { return c.Leave(ctx, "g1") },
		"Typing":      func() error { return c.Typing(ctx, "g1", "start") },
		"PublishNoWait": func() error {
			return c.PublishNoWait(ctx, "driver.7.location", []byte(`{"lat":2}`))
		},
	} {
		if err := call(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if err := c.Publish(ctx, "t", []byte("not json")); err == nil {
		t.Fatal("Publish accepted data that is not JSON")
	}

	if err := c.Receipt(ctx, "c1", "read", 5); err != nil {
		t.Fatal(err)
	}
	ev, err := c.WaitFor(ctx, OfType(protocol.TypeReceipt))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ev.Receipt()
	if err != nil || rc.Conv != "c1" || rc.Kind != "read" || rc.Seq != 5 {
		t.Fatalf("receipt = %+v, %v", rc, err)
	}
	if _, err := ev.Message(); err == nil {
		t.Fatal("Message() decoded a receipt event")
	}
}

func TestWriteRawGarbage(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)
	ctx := testCtx(t)

	for _, m := range []struct {
		typ websocket.MessageType
		b   string
	}{
		{websocket.MessageText, "not json"},
		{websocket.MessageBinary, "\x00\x01"},
	} {
		if err := c.WriteRaw(ctx, m.typ, []byte(m.b)); err != nil {
			t.Fatal(err)
		}
		ev, err := c.WaitFor(ctx, OfType(protocol.TypeError))
		if err != nil {
			t.Fatal(err)
		}
		if pe := ev.AsError(); pe == nil || pe.Code != protocol.CodeBadFrame {
			t.Fatalf("error event for %q = %s", m.b, ev.Raw)
		}
	}
	// The connection is still usable.
	if _, err := c.Send(ctx, "c1", "m1", "hi"); err != nil {
		t.Fatal(err)
	}
}

func TestServerCloseSurfacesCode(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)

	// A pending request gets the close error.
	_, err := c.Request(testCtx(t), protocol.Frame{Type: "kick"})
	var ce *CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("pending Request error = %v (%T), want *CloseError", err, err)
	}
	<-c.Done()
	if !errors.As(c.Err(), &ce) {
		t.Fatalf("Err = %v, want *CloseError", c.Err())
	}
	if ce.Code != protocol.CloseShutdown || ce.Reason != "shutdown" || !ce.ShouldReconnect() || ce.ReconnectAfter != 1500*time.Millisecond {
		t.Fatalf("CloseError = %+v", ce)
	}
	// The bye that preceded the close is still in the buffer.
	ev, err := c.WaitFor(testCtx(t), OfType(protocol.TypeBye))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := ev.Bye(); err != nil || b.ReconnectAfterMS != 1500 {
		t.Fatalf("bye = %+v, %v", b, err)
	}
	if _, err := c.Next(testCtx(t)); !errors.As(err, &ce) {
		t.Fatalf("Next after the end = %v, want the *CloseError", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close after the server closed: %v", err)
	}
}

func TestMalformedServerFrame(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)
	if err := c.WriteFrame(testCtx(t), protocol.Frame{Type: "garbage"}); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("Err = %v, want a malformed-frame error", err)
	}
}

func TestRequestContextEnds(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Request(ctx, protocol.Frame{Type: "slow", ID: "late"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Request error = %v, want DeadlineExceeded", err)
	}
	// The late reply becomes an event; the connection stays up.
	ev, err := c.WaitFor(testCtx(t), OfType(protocol.TypeResult))
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.Result
	if err := ev.Decode(&r); err != nil || r.ID != "late" {
		t.Fatalf("late reply event = %s, %v", ev.Raw, err)
	}
	if _, err := c.Send(testCtx(t), "c1", "m1", "hi"); err != nil {
		t.Fatal(err)
	}

	// An ended context fails before writing and leaves the connection up.
	if _, err := c.Request(ctx, protocol.Frame{Type: "echo"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Request with an ended ctx = %v", err)
	}
	if c.Err() != nil {
		t.Fatalf("connection ended: %v", c.Err())
	}
}

func TestCloseFailsPendingRequest(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Request(testCtx(t), protocol.Frame{Type: "slow"})
		errc <- err
	}()
	waitUntil(t, 5*time.Second, "the request to be pending", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 1
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending Request after Close = %v, want ErrClosed", err)
	}
}

func TestAutoPong(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, func(o *Options) { o.URL += "?ping=5ms" })
	waitUntil(t, 5*time.Second, "pongs", func() bool { return ts.pongs.Load() >= 3 })
	if c.Pings() < 3 {
		t.Fatalf("Pings = %d, server got %d pongs", c.Pings(), ts.pongs.Load())
	}
	select {
	case ev := <-c.Events():
		t.Fatalf("ping delivered as an event: %s", ev.Raw)
	default:
	}
}

func TestNoAutoPong(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, func(o *Options) { o.URL += "?ping=5ms"; o.NoAutoPong = true })
	for range 3 {
		if _, err := c.WaitFor(testCtx(t), OfType(protocol.TypePing)); err != nil {
			t.Fatal(err)
		}
	}
	if c.Pings() < 3 || ts.pongs.Load() != 0 {
		t.Fatalf("Pings = %d, server got %d pongs, want >= 3 and 0", c.Pings(), ts.pongs.Load())
	}
	// The test answers by hand.
	if err := c.WriteFrame(testCtx(t), protocol.Frame{Type: protocol.TypePong}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the manual pong", func() bool { return ts.pongs.Load() == 1 })
}

// waitStalled waits until n stops moving for quiet, and returns its value.
func waitStalled(t *testing.T, n *atomic.Int64, quiet time.Duration) int64 {
	t.Helper()
	last, since := n.Load(), time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			t.Fatal("counter never stalled")
		}
		time.Sleep(5 * time.Millisecond)
		if v := n.Load(); v != last {
			last, since = v, time.Now()
		}
	}
	return last
}

func TestPauseReadingBackpressure(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)
	ctx := testCtx(t)

	const n = 400 // 400 × 64 KiB = 25 MiB, far more than loopback socket buffers
	c.PauseReading()
	if err := c.WriteFrame(ctx, protocol.Frame{Type: "flood", Limit: n}); err != nil {
		t.Fatal(err)
	}
	stalled := waitStalled(t, &ts.written, 300*time.Millisecond)
	if stalled >= n {
		t.Fatalf("server wrote all %d messages to a paused client", n)
	}
	if got := len(c.Events()); got > 1 {
		t.Fatalf("%d events read while paused, want at most the one in flight", got)
	}
	t.Logf("server blocked after %d of %d messages", stalled, n)

	c.ResumeReading()
	for i := range n {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("event %d: %v (server wrote %d)", i, err, ts.written.Load())
		}
		// Checked by prefix and suffix: decoding 25 MiB under -race is slow.
		if ev.Type != protocol.TypeEvent || !bytes.HasPrefix(ev.Raw, []byte(`{"type":"event","topic":"flood"`)) ||
			!bytes.HasSuffix(ev.Raw, fmt.Appendf(nil, `,"ts":%d}`, i)) {
			t.Fatalf("event %d = %.80s", i, ev.Raw)
		}
	}
	if ts.written.Load() != n || c.Dropped() != 0 {
		t.Fatalf("written %d, dropped %d", ts.written.Load(), c.Dropped())
	}
}

func TestCloseWhilePaused(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, nil)
	c.PauseReading()
	c.PauseReading() // idempotent
	// Unread data waits in the socket; the loop is parked, not in a read.
	if err := c.WriteFrame(testCtx(t), protocol.Frame{Type: "flood", Limit: 5}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the flood to be written", func() bool { return ts.written.Load() == 5 })
	if err := c.Close(); err != nil {
		t.Fatalf("Close while paused: %v", err)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err = %v", c.Err())
	}
	c.ResumeReading() // harmless after the end
}

func TestOverflowDropsOldest(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, func(o *Options) { o.QueueSize = 4; o.FullWait = -1 })
	ctx := testCtx(t)

	if err := c.WriteFrame(ctx, protocol.Frame{Type: "events", Limit: 20}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "16 drops", func() bool { return c.Dropped() == 16 })
	for want := 17; want <= 20; want++ {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if te, _ := ev.TopicEvent(); string(te.Data) != fmt.Sprint(want) {
			t.Fatalf("event data %s, want %d (the newest kept)", te.Data, want)
		}
	}
	// Caught up: new events are delivered again.
	if err := c.WriteFrame(ctx, protocol.Frame{Type: "events", Limit: 2}); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 2; want++ {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if te, _ := ev.TopicEvent(); string(te.Data) != fmt.Sprint(want) {
			t.Fatalf("event data %s, want %d", te.Data, want)
		}
	}
	if c.Dropped() != 16 {
		t.Fatalf("Dropped = %d, want 16", c.Dropped())
	}
}

func TestFullWaitToleratesSlowConsumer(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	c := dial(t, ts, func(o *Options) { o.QueueSize = 1; o.FullWait = 5 * time.Second })
	ctx := testCtx(t)
	if err := c.WriteFrame(ctx, protocol.Frame{Type: "events", Limit: 5}); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 5; want++ {
		waitUntil(t, 5*time.Second, "a full buffer", func() bool { return len(c.Events()) == 1 })
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if te, _ := ev.TopicEvent(); string(te.Data) != fmt.Sprint(want) {
			t.Fatalf("event data %s, want %d", te.Data, want)
		}
	}
	if c.Dropped() != 0 {
		t.Fatalf("Dropped = %d", c.Dropped())
	}
}

func TestOnEvent(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	var (
		mu   sync.Mutex
		got  []string
		conn atomic.Pointer[Conn]
	)
	c := dial(t, ts, func(o *Options) {
		o.OnEvent = func(ev Event) {
			te, _ := ev.TopicEvent()
			mu.Lock()
			got = append(got, string(te.Data))
			n := len(got)
			mu.Unlock()
			if n == 5 {
				_ = conn.Load().CloseNow() // must not deadlock on the read loop
			}
		}
	})
	conn.Store(c)
	if c.Events() != nil {
		t.Fatal("Events() is not nil with OnEvent")
	}
	if _, err := c.Next(testCtx(t)); !errors.Is(err, ErrNoEvents) {
		t.Fatalf("Next with OnEvent = %v", err)
	}
	if err := c.WriteFrame(testCtx(t), protocol.Frame{Type: "events", Limit: 5}); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != "1,2,3,4,5" {
		t.Fatalf("OnEvent got %v", got)
	}
}

func TestLocalAddr(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
	if l, err := net.ListenTCP("tcp", local); err != nil {
		t.Skipf("127.0.0.2 unavailable: %v", err)
	} else {
		l.Close()
	}
	dial(t, ts, func(o *Options) { o.LocalAddr = local })
	if addr := <-ts.remotes; !strings.HasPrefix(addr, "127.0.0.2:") {
		t.Fatalf("server saw %s, want 127.0.0.2", addr)
	}
	// A transport that cannot be given a local address is refused.
	_, err := Dial(testCtx(t), Options{URL: ts.url(), LocalAddr: local, HTTPClient: &http.Client{Transport: roundTripFunc(nil)}})
	if err == nil || !strings.Contains(err.Error(), "LocalAddr") {
		t.Fatalf("Dial with a custom RoundTripper = %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestManyConnsNoLeaks(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t)
	var conns []*Conn
	for i := range 30 {
		opts := Options{URL: ts.url(), Token: "good"}
		if i%3 == 0 {
			opts.URL += "?ping=2ms"
		}
		c, err := Dial(testCtx(t), opts)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		switch i % 3 {
		case 0:
			_ = c.Close()
		case 1:
			_ = c.CloseNow()
		case 2:
			_, _ = c.Request(testCtx(t), protocol.Frame{Type: "kick"})
			<-c.Done()
		}
	}
}

func TestEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in     string
		resume bool
		want   string
	}{
		{"ws://h:1", false, "ws://h:1/v1/ws"},
		{"ws://h:1/", false, "ws://h:1/v1/ws"},
		{"wss://h/parley", false, "wss://h/parley/v1/ws"},
		{"ws://h/v1/ws", true, "ws://h/v1/ws?resume=1"},
		{"http://h?access_token=x", true, "http://h/v1/ws?access_token=x&resume=1"},
	} {
		got, err := endpoint(tc.in, tc.resume)
		if err != nil || got != tc.want {
			t.Errorf("endpoint(%q, %v) = %q, %v, want %q", tc.in, tc.resume, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "tcp://h", "://"} {
		if _, err := endpoint(bad, false); err == nil {
			t.Errorf("endpoint(%q) accepted", bad)
		}
	}
}
