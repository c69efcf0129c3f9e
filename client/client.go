// Package client is Parley's Go client for protocol v1 (package protocol). The
// end-to-end tests, the load tester and users share it.
//
// It owns one websocket connection per Conn: dialing with a token, waiting
// for the server's hello, matching replies to requests by id, answering the
// server's pings, and buffering the events the server pushes. Each Conn runs
// exactly one goroutine, its read loop, which exits when the connection ends;
// writes come from the caller's goroutines, serialised by a write slot.
//
// It must not make policy for the caller: it never reconnects, never retries
// a request, never reorders or deduplicates events, and never validates
// frames the way the server does (tests need to send what a buggy client
// would). Reconnect decisions use the typed *CloseError (Code, ShouldReconnect,
// ReconnectAfter); catching up after a reconnect is Sync's job. It must not
// import the server's packages: only protocol and the websocket library.
//
// Events: everything the server sends that is not a reply to a pending
// request (and not a ping, which is answered automatically) is an Event,
// delivered in order through Events (a bounded buffer, Options.QueueSize) or
// to Options.OnEvent. When the buffer is full the read loop waits up to
// Options.FullWait for room, then drops the oldest buffered events to make
// room (counted by Dropped) until the consumer catches up; the buffer always
// holds the newest events. Dropping keeps replies flowing: a read loop that
// blocked forever on a full buffer would also stall every Request.
//
// The read loop routes each frame on its "type" and "id" without decoding
// the rest (frames can be megabytes); a frame that is not a JSON object with
// a string type ends the connection with an error, and Event.Decode and its
// typed helpers validate the rest.
//
// Backpressure: PauseReading stops the read loop from reading the socket at
// all, so the kernel buffers fill and the server's writes block, which is how
// tests play a slow consumer. While paused no replies, events or pings are
// read.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/parley-im/parley/protocol"
)

// Defaults for zero Options fields.
const (
	DefaultDialTimeout  = 10 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	DefaultReadLimit    = 8 << 20
	DefaultQueueSize    = 4096
	DefaultFullWait     = time.Second
)

// Path is the websocket endpoint appended to Options.URL.
const Path = "/v1/ws"

// Options configures Dial. Every field but URL may be left zero.
type Options struct {
	// URL is the server's base URL, e.g. "ws://127.0.0.1:8080" (wss, http and
	// https work too). Path ("/v1/ws") is appended unless the path already
	// ends with it. Query parameters are kept.
	URL string
	// Token is the JWT, sent as "Authorization: Bearer <Token>". Empty sends
	// no Authorization header of its own (Header may carry one).
	Token string
	// Header holds extra handshake headers. It is cloned, never modified.
	Header http.Header
	// Resume adds resume=1 to the query so hello carries a Resume object.
	Resume bool
	// Subprotocols are offered after protocol.Subprotocol, e.g.
	// "parley.token.<jwt>" to pass the token the way browsers must.
	Subprotocols []string

	// DialTimeout bounds the handshake plus the wait for hello. Zero means
	// DefaultDialTimeout; negative means only ctx bounds it.
	DialTimeout time.Duration
	// WriteTimeout bounds each websocket write once it has started. A write
	// that times out closes the connection (a half-written frame cannot be
	// recovered). Zero means DefaultWriteTimeout; negative means none.
	WriteTimeout time.Duration
	// ReadLimit is the largest websocket message accepted from the server;
	// a larger one closes the connection with 1009. Zero means
	// DefaultReadLimit (synced frames can be large); negative means no limit.
	ReadLimit int64

	// QueueSize is the capacity of the Events buffer. Zero means
	// DefaultQueueSize. The buffer is allocated up front, 40 bytes a slot
	// (160 KiB by default): at a hundred thousand connections use OnEvent or
	// a small QueueSize. Ignored when OnEvent is set.
	QueueSize int
	// FullWait is how long the read loop waits for room in a full Events
	// buffer before it starts dropping the oldest events. It waits once per
	// overflow episode: until the consumer takes an event, further events
	// drop without waiting. Zero means DefaultFullWait; negative means drop
	// at once.
	FullWait time.Duration
	// OnEvent, if set, receives every event on the read goroutine instead of
	// the Events buffer (Events returns nil). It saves a buffer and a
	// consumer goroutine per connection (the load tester). It must return
	// quickly and must not call Request or its helpers: the reply could only
	// be read after OnEvent returns. While OnEvent runs, Close and CloseNow
	// do not wait for the read loop to exit, so OnEvent may call them.
	OnEvent func(Event)

	// NoAutoPong stops the automatic pong answer to the server's pings, for
	// tests of the server's idle timeout. Pings are then delivered as events
	// too. Either way Pings counts them.
	NoAutoPong bool

	// HTTPClient performs the handshake; nil means http.DefaultClient.
	HTTPClient *http.Client
	// LocalAddr, if set, is the source address of the TCP connection (the
	// load tester spreads connections over 127.0.0.x to get more ephemeral
	// ports). It needs HTTPClient's Transport to be nil or an
	// *http.Transport, which is cloned for this dial.
	LocalAddr net.Addr
	// DialControl, if set, is passed to net.Dialer.Control (the load tester
	// sets IP_BIND_ADDRESS_NO_PORT). Like LocalAddr it needs HTTPClient's
	// Transport to be nil or an *http.Transport, which is cloned.
	DialControl func(network, address string, c syscall.RawConn) error
}

// ErrClosed is returned by calls on a Conn closed by Close or CloseNow, and
// by Err after such a close.
var ErrClosed = errors.New("client: connection closed")

// ErrNoEvents is returned by Next and WaitFor on a Conn dialed with OnEvent.
var ErrNoEvents = errors.New("client: events go to Options.OnEvent")

// CloseError reports that the server closed the connection with a websocket
// close code: before hello (Dial returns it, e.g. 4500 for a bad token) or
// later (Err and pending calls return it). Use errors.As.
type CloseError struct {
	Code   int
	Reason string
	// ReconnectAfter is the delay from the bye frame that preceded the
	// close, if any (code 4000, draining).
	ReconnectAfter time.Duration
}

func (e *CloseError) Error() string {
	s := fmt.Sprintf("client: closed by server: code %d", e.Code)
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// ShouldReconnect reports whether the close code invites a reconnect
// (protocol.ShouldReconnect).
func (e *CloseError) ShouldReconnect() bool { return protocol.ShouldReconnect(e.Code) }

// UpgradeError reports a handshake the server answered with an HTTP status
// other than 101 (e.g. 429 rate limited, 503 draining).
type UpgradeError struct {
	StatusCode int
	Body       string // at most the first 1 KiB
	Err        error
}

func (e *UpgradeError) Error() string {
	return fmt.Sprintf("client: upgrade refused: HTTP %d: %s", e.StatusCode, strings.TrimSpace(e.Body))
}

func (e *UpgradeError) Unwrap() error { return e.Err }

// Conn is one client connection. All methods are safe for concurrent use,
// except that events should have one consumer (Events, Next or WaitFor).
//
// Lock order: mu is never held while writing to the socket or sending on
// events. The write slot (wsem) is never taken with mu held.
type Conn struct {
	// Static after Dial.
	ws           *websocket.Conn
	ctx          context.Context // the connection's lifetime; cancelled by close paths
	cancel       context.CancelFunc
	writeTimeout time.Duration // <= 0: none
	fullWait     time.Duration // <= 0: drop at once
	onEvent      func(Event)
	noAutoPong   bool
	events       chan Event    // sent to and closed by the read loop only; nil with onEvent
	helloCh      chan struct{} // closed by the read loop once hello is stored
	done         chan struct{} // closed when the read loop has exited
	wsem         chan struct{} // write slot: holding it (a value in the channel) allows one websocket write

	// hello is written by the read loop before helloCh closes, then read-only.
	hello protocol.Hello

	nextID     atomic.Uint64
	pings      atomic.Int64
	dropped    atomic.Int64
	closing    atomic.Bool // Close or CloseNow was called
	inCallback atomic.Bool // the read loop is inside OnEvent

	mu      sync.Mutex
	pending map[string]chan Reply // guarded by mu; request id → reply slot (cap 1)
	paused  bool                  // guarded by mu
	resume  chan struct{}         // guarded by mu; closed by ResumeReading
	err     error                 // guarded by mu; set by the read loop before done closes

	// Owned by the read loop.
	gotHello    bool
	overflowing bool          // the events buffer overflowed and the consumer has not caught up
	fullTimer   *time.Timer   // reused FullWait timer
	bye         *protocol.Bye // the last bye received
}

// Dial connects to opts.URL, waits for the server's hello and starts the
// connection's read loop. If the server closes the connection before hello
// (a bad or expired token: 4500, 4003...), the error is a *CloseError. If the
// server refuses the upgrade with an HTTP status, it is an *UpgradeError.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	u, err := endpoint(opts.URL, opts.Resume)
	if err != nil {
		return nil, err
	}
	header := opts.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if opts.Token != "" {
		header.Set("Authorization", "Bearer "+opts.Token)
	}
	hc, closeIdle, err := httpClient(opts.HTTPClient, opts.LocalAddr, opts.DialControl)
	if err != nil {
		return nil, err
	}
	if closeIdle != nil {
		defer closeIdle()
	}

	dialTimeout := opts.DialTimeout
	if dialTimeout == 0 {
		dialTimeout = DefaultDialTimeout
	}
	if dialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dialTimeout)
		defer cancel()
	}

	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   header,
		Subprotocols: append([]string{protocol.Subprotocol}, opts.Subprotocols...),
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			ue := &UpgradeError{StatusCode: resp.StatusCode, Err: err}
			if resp.Body != nil {
				var buf bytes.Buffer
				_, _ = buf.ReadFrom(resp.Body)
				ue.Body = buf.String()
			}
			return nil, ue
		}
		return nil, fmt.Errorf("client: dial %s: %w", u, err)
	}
	if sp := ws.Subprotocol(); sp != protocol.Subprotocol {
		_ = ws.Close(websocket.StatusProtocolError, "subprotocol")
		return nil, fmt.Errorf("client: dial %s: server chose subprotocol %q, want %q", u, sp, protocol.Subprotocol)
	}

	c := newConn(ws, opts)
	go c.readLoop()

	select {
	case <-c.helloCh:
		return c, nil
	default:
	}
	select {
	case <-c.helloCh:
		return c, nil
	case <-c.done:
		select {
		case <-c.helloCh: // hello, then an immediate close: still a session
			return c, nil
		default:
		}
		err := c.Err()
		var ce *CloseError
		if errors.As(err, &ce) {
			return nil, ce
		}
		return nil, fmt.Errorf("client: waiting for hello: %w", err)
	case <-ctx.Done():
		_ = c.CloseNow()
		return nil, fmt.Errorf("client: waiting for hello: %w", ctx.Err())
	}
}

func newConn(ws *websocket.Conn, opts Options) *Conn {
	readLimit := opts.ReadLimit
	switch {
	case readLimit == 0:
		readLimit = DefaultReadLimit
	case readLimit < 0:
		readLimit = -1
	}
	ws.SetReadLimit(readLimit)

	c := &Conn{
		ws:           ws,
		writeTimeout: opts.WriteTimeout,
		fullWait:     opts.FullWait,
		onEvent:      opts.OnEvent,
		noAutoPong:   opts.NoAutoPong,
		helloCh:      make(chan struct{}),
		done:         make(chan struct{}),
		wsem:         make(chan struct{}, 1),
		pending:      make(map[string]chan Reply),
	}
	// The lifetime context is detached from Dial's ctx, which only bounds dialing.
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.writeTimeout == 0 {
		c.writeTimeout = DefaultWriteTimeout
	}
	if c.fullWait == 0 {
		c.fullWait = DefaultFullWait
	}
	if c.onEvent == nil {
		n := opts.QueueSize
		if n <= 0 {
			n = DefaultQueueSize
		}
		c.events = make(chan Event, n)
	}
	return c
}

// endpoint builds the websocket URL from the base URL.
func endpoint(raw string, resume bool) (string, error) {
	if raw == "" {
		return "", errors.New("client: Options.URL is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("client: bad URL: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return "", fmt.Errorf("client: bad URL %q: scheme must be ws, wss, http or https", raw)
	}
	if !strings.HasSuffix(u.Path, Path) {
		u.Path = strings.TrimSuffix(u.Path, "/") + Path
		u.RawPath = ""
	}
	if resume {
		q := u.Query()
		q.Set("resume", "1")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// httpClient returns the client for the handshake, bound to localAddr and
// dialing with control if set, and a func that releases the cloned
// transport's idle connections.
func httpClient(hc *http.Client, localAddr net.Addr, control func(network, address string, c syscall.RawConn) error) (*http.Client, func(), error) {
	if localAddr == nil && control == nil {
		return hc, nil, nil
	}
	var base http.RoundTripper
	if hc != nil {
		base = hc.Transport
	}
	if base == nil {
		base = http.DefaultTransport
	}
	t, ok := base.(*http.Transport)
	if !ok {
		return nil, nil, fmt.Errorf("client: LocalAddr and DialControl need an *http.Transport, have %T", base)
	}
	tr := t.Clone()
	d := &net.Dialer{LocalAddr: localAddr, Control: control}
	tr.DialContext = d.DialContext
	out := &http.Client{}
	if hc != nil {
		*out = *hc
	}
	out.Transport = tr
	return out, tr.CloseIdleConnections, nil
}

// Hello returns the server's hello frame.
func (c *Conn) Hello() protocol.Hello { return c.hello }

// Done is closed when the connection has ended and its read loop exited.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up. Afterwards it returns why it
// ended: a *CloseError if the server closed it, ErrClosed if Close or
// CloseNow did, otherwise the read error (network failure, oversize or
// malformed server message).
func (c *Conn) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// closedErr is the error for a call that found the connection ended.
func (c *Conn) closedErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// Pings returns how many pings the server has sent.
func (c *Conn) Pings() int64 { return c.pings.Load() }

// Dropped returns how many events were dropped because the Events buffer
// was full (see Options.FullWait).
func (c *Conn) Dropped() int64 { return c.dropped.Load() }

// Close closes the connection with the normal closure code (1000), waits for
// the close handshake (at most a few seconds) and for the read loop to
// exit. It is idempotent; only the first call reports an error.
func (c *Conn) Close() error {
	return c.close(func() error { return c.ws.Close(websocket.StatusNormalClosure, "") })
}

// CloseNow closes the connection without a close handshake, as a client
// that loses its network would, and waits for the read loop to exit.
func (c *Conn) CloseNow() error {
	return c.close(c.ws.CloseNow)
}

func (c *Conn) close(fn func() error) error {
	var err error
	if c.closing.CompareAndSwap(false, true) {
		err = fn()
		if errors.Is(err, net.ErrClosed) {
			err = nil // the connection had already ended
		}
	}
	c.cancel()
	if !c.inCallback.Load() {
		<-c.done
	}
	return err
}

// PauseReading stops the read loop from reading the socket: nothing more is
// read (replies, events, pings) until ResumeReading, so the kernel buffers
// fill and the server's writes block. A read already waiting for a message
// completes first: at most one more websocket message is delivered after
// PauseReading returns. A connection that dies while paused is noticed when
// reading resumes or on Close.
func (c *Conn) PauseReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.paused {
		c.paused = true
		c.resume = make(chan struct{})
	}
}

// ResumeReading undoes PauseReading.
func (c *Conn) ResumeReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		c.paused = false
		close(c.resume)
	}
}

// waitResumed blocks while reading is paused. It reports false if the
// connection is being closed.
func (c *Conn) waitResumed() bool {
	for {
		c.mu.Lock()
		paused, resume := c.paused, c.resume
		c.mu.Unlock()
		if !paused {
			return true
		}
		select {
		case <-resume:
		case <-c.ctx.Done():
			return false
		}
	}
}

// readLoop is the connection's only reader and its only goroutine.
func (c *Conn) readLoop() {
	var err error
	defer func() { c.exit(err) }()
	for {
		if !c.waitResumed() {
			err = ErrClosed
			return
		}
		typ, msg, rerr := c.ws.Read(c.ctx)
		if rerr != nil {
			err = c.readErr(rerr)
			return
		}
		if typ != websocket.MessageText {
			err = errors.New("client: server sent a binary message (refused in protocol v1)")
			return
		}
		if err = c.handleMessage(msg); err != nil {
			return
		}
	}
}

// readErr converts a read error, turning a close frame into a *CloseError.
func (c *Conn) readErr(err error) error {
	var wce websocket.CloseError
	if errors.As(err, &wce) {
		ce := &CloseError{Code: int(wce.Code), Reason: wce.Reason}
		if c.bye != nil {
			ce.ReconnectAfter = time.Duration(c.bye.ReconnectAfterMS) * time.Millisecond
		}
		return ce
	}
	return fmt.Errorf("client: read: %w", err)
}

// exit ends the connection once the read loop stops.
func (c *Conn) exit(err error) {
	_ = c.ws.CloseNow()
	c.cancel()
	if c.closing.Load() {
		err = ErrClosed
	}
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	if c.fullTimer != nil {
		c.fullTimer.Stop()
	}
	if c.events != nil {
		close(c.events)
	}
	close(c.done)
}

// handleMessage dispatches every frame of one websocket message. Server
// messages may batch any number of frames separated by '\n'.
func (c *Conn) handleMessage(msg []byte) error {
	for len(msg) > 0 {
		frame := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			frame, msg = msg[:i:i], msg[i+1:]
		} else {
			msg = nil
		}
		if len(bytes.TrimSpace(frame)) == 0 {
			continue
		}
		if err := c.handleFrame(frame); err != nil {
			return err
		}
	}
	return nil
}

func (c *Conn) handleFrame(frame []byte) error {
	typ, id, err := parseHead(frame)
	if err != nil {
		return fmt.Errorf("client: malformed frame from server: %.200q", frame)
	}
	if !c.gotHello {
		if typ == protocol.TypeError {
			// A server may explain a refusal before closing: the close
			// that follows is what Dial reports.
			c.deliver(Event{Type: typ, Raw: frame})
			return nil
		}
		if typ != protocol.TypeHello {
			return fmt.Errorf("client: first frame from server is %q, want hello", typ)
		}
		if err := json.Unmarshal(frame, &c.hello); err != nil {
			return fmt.Errorf("client: malformed hello: %w", err)
		}
		c.gotHello = true
		close(c.helloCh)
		return nil
	}
	switch typ {
	case protocol.TypePing:
		c.pings.Add(1)
		if !c.noAutoPong {
			// A failed pong means the socket is failing; the next read reports it.
			_ = c.write(c.ctx, websocket.MessageText, []byte(`{"type":"pong"}`))
			return nil
		}
	case protocol.TypeBye:
		var b protocol.Bye
		if err := json.Unmarshal(frame, &b); err == nil {
			c.bye = &b
		}
	}
	if id != "" && c.reply(id, Reply{Type: typ, ID: id, Raw: frame}) {
		return nil
	}
	c.deliver(Event{Type: typ, Raw: frame})
	return nil
}

// reply hands r to the request waiting for id. It sends with mu held so that
// a request that gives up (forget) either finds the reply in its slot or
// leaves it to be delivered as an event, never lost in between.
func (c *Conn) reply(id string, r Reply) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.pending[id]
	if !ok {
		return false
	}
	delete(c.pending, id)
	ch <- r // cap 1, one reply per id: never blocks
	return true
}

// deliver queues an event for the consumer; see the package doc for what
// happens when the buffer is full.
func (c *Conn) deliver(ev Event) {
	if c.onEvent != nil {
		c.inCallback.Store(true)
		c.onEvent(ev)
		c.inCallback.Store(false)
		return
	}
	select {
	case c.events <- ev:
		c.overflowing = false
		return
	default:
	}
	if !c.overflowing && c.fullWait > 0 {
		if c.fullTimer == nil {
			c.fullTimer = time.NewTimer(c.fullWait)
		} else {
			c.fullTimer.Reset(c.fullWait)
		}
		select {
		case c.events <- ev:
			c.fullTimer.Stop()
			return
		case <-c.fullTimer.C:
		case <-c.ctx.Done():
			c.fullTimer.Stop()
			c.dropped.Add(1)
			return
		}
	}
	c.overflowing = true
	// Make room by dropping the oldest events: the buffer keeps the newest.
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case <-c.events:
			c.dropped.Add(1)
		default:
		}
	}
}

// write writes one websocket message. ctx bounds the wait for the write
// slot; the write itself is bounded by WriteTimeout and, once started, is
// not abandoned when ctx ends (that would close the connection).
func (c *Conn) write(ctx context.Context, typ websocket.MessageType, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.closedErr()
	}
	defer func() { <-c.wsem }()

	wctx := c.ctx
	if c.writeTimeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(wctx, c.writeTimeout)
		defer cancel()
	}
	if err := c.ws.Write(wctx, typ, b); err != nil {
		select {
		case <-c.done:
			return c.closedErr()
		default:
		}
		if c.closing.Load() {
			return ErrClosed
		}
		return fmt.Errorf("client: write: %w", err)
	}
	return nil
}
