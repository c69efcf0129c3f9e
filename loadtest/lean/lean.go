//go:build linux

// Package lean holds very many idle or lightly used Parley websocket
// connections for the load tester, at a small fraction of the memory a
// goroutine-per-connection client costs: a few reactor goroutines, each
// with its own epoll instance and read buffer, serve every connection; a
// connection is a 32-byte struct plus its map entry while it is idle.
//
// It owns the socket (non-blocking connect, optionally from a chosen source
// address with IP_BIND_ADDRESS_NO_PORT), the HTTP upgrade, the wait for the
// server's hello, answering the server's pings (application {"type":"ping"}
// and websocket control pings) and the close handshake. Everything else the
// server sends is counted and handed, frame by frame, to Config.OnMessage
// if it is set, or dropped. Handshakes are bounded by Config.DialTimeout,
// checked by each reactor's sweep, not by a timer per connection.
//
// It must not grow into a general client: it never decodes frames beyond
// their type, never reconnects, never buffers what the server sends (a
// frame handed to OnMessage is valid during the call only), and never
// blocks a reactor (callbacks run on reactor goroutines and must return
// quickly). A caller that matches replies to its few requests does so in
// OnMessage, by Conn.Tag; use package client for anything richer.
//
// Concurrency: a connection's socket, its state, its buffers and its Tag
// are owned by its reactor; Close, Abort and Send queue a command for it.
// The reactor is the only writer of every socket and the only goroutine
// that closes one, so a file descriptor is never used after the kernel may
// have reused it.
//
// Linux only (epoll).
package lean

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parley-im/parley/protocol"
)

// Defaults for zero Config fields.
const (
	DefaultPath        = "/v1/ws"
	DefaultDialTimeout = 15 * time.Second
	DefaultMaxFrame    = 1 << 20
)

// MaxSend is the largest message Send accepts (the server's limit).
const MaxSend = protocol.MaxMessage

// Config configures a Pool. Every field but Addr may be left zero.
type Config struct {
	// Addr is the server's TCP address, host:port, e.g. "127.0.0.1:8080".
	// A host name is resolved once, by New.
	Addr string
	// Host is the Host header. Default Addr.
	Host string
	// Path is the request target including any query, e.g.
	// "/v1/ws?resume=1". Default DefaultPath.
	Path string
	// Reactors is the number of reactor goroutines. Default GOMAXPROCS.
	Reactors int
	// DialTimeout bounds TCP connect, upgrade and the wait for hello.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// MaxFrame is the largest websocket frame accepted from the server; a
	// larger one closes the connection with 1009 (ErrTooLarge). Default
	// DefaultMaxFrame, at most 1 GiB.
	MaxFrame int
	// OnClose, if set, is called once, on a reactor goroutine, when an
	// established connection (hello received) ends. code is the server's
	// close code (1005 for a close frame without one), 0 if it sent none.
	// err is nil when the server closed the connection with a close frame,
	// ErrClosed after Close, Abort or Pool.Close, otherwise why it ended
	// (io.EOF, a syscall.Errno, ErrTooLarge, ErrProtocol...).
	OnClose func(c *Conn, code int, err error)
	// OnMessage, if set, is called on c's reactor goroutine for every
	// Parley frame (one JSON object, surrounding blanks trimmed) that c
	// receives after hello and that is not a ping: each frame of a
	// newline-batched message separately, in the order received, and never
	// before Dial's done for c has returned, even for frames that came in
	// the same read as hello. frame is only valid during the call (it is
	// the reactor's read buffer); the callback must not block, and may call
	// c.Send and c.Close, which only queue. Frames of a fragmented or
	// binary message are counted in Stats.Events but not handed over (the
	// Parley server sends neither). nil: frames are counted and dropped.
	OnMessage func(c *Conn, frame []byte)
}

// Errors reported to Dial's done and OnClose. ErrKind names them.
var (
	// ErrTimeout: the handshake did not finish within Config.DialTimeout.
	ErrTimeout = errors.New("lean: handshake timed out")
	// ErrClosed: Close, Abort or Pool.Close ended the connection.
	ErrClosed = errors.New("lean: connection closed")
	// ErrProtocol is wrapped by errors about what the server sent: a bad
	// upgrade response, a malformed frame, a first message that is not hello.
	ErrProtocol = errors.New("lean: protocol error")
	// ErrTooLarge: a frame from the server exceeded Config.MaxFrame.
	ErrTooLarge = errors.New("lean: frame too large")
	// ErrNotOpen is returned by Send before hello.
	ErrNotOpen = errors.New("lean: connection not open yet")
)

// UpgradeError reports an upgrade the server answered with an HTTP status
// other than 101 (401, 429, 503...).
type UpgradeError struct{ Status int }

func (e *UpgradeError) Error() string {
	return fmt.Sprintf("lean: upgrade refused: HTTP %d", e.Status)
}

// CloseError reports a close frame from the server before or instead of
// hello (4500 for a bad token).
type CloseError struct{ Code int }

func (e *CloseError) Error() string { return fmt.Sprintf("lean: closed by server: code %d", e.Code) }

// ErrKind classifies an error of this package (or of a net.Dialer-based
// client, as far as the kinds overlap) into a stable name for reports:
// "http_<status>", "close_<code>", "timeout", "refused",
// "addr_not_available" (no free source port or address: EADDRNOTAVAIL,
// EADDRINUSE), "reset" (ECONNRESET, EPIPE), "too_many_files" (EMFILE,
// ENFILE), "eof", "too_large", "protocol", "closed" or "other". nil is "".
func ErrKind(err error) string {
	var ue *UpgradeError
	var ce *CloseError
	var errno syscall.Errno
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ue):
		return fmt.Sprintf("http_%d", ue.Status)
	case errors.As(err, &ce):
		return fmt.Sprintf("close_%d", ce.Code)
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrProtocol):
		return "protocol"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.As(err, &errno):
		switch errno {
		case syscall.ECONNREFUSED:
			return "refused"
		case syscall.EADDRNOTAVAIL, syscall.EADDRINUSE:
			return "addr_not_available"
		case syscall.ECONNRESET, syscall.EPIPE:
			return "reset"
		case syscall.EMFILE, syscall.ENFILE:
			return "too_many_files"
		case syscall.ETIMEDOUT:
			return "timeout"
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other"
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h; not in
// package syscall): bind() to an address with port 0 then reserves no
// port, and connect() picks one unique for the whole 4-tuple, so one
// source address serves the whole ephemeral range per destination.
const ipBindAddressNoPort = 24

// ControlNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket; use it as
// net.Dialer.Control (with net.Dialer.LocalAddr) so that a dialer bound to
// a source address does not run out of ports at ~28k connections per
// address.
func ControlNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("lean: IP_BIND_ADDRESS_NO_PORT: %w", serr)
	}
	return nil
}

// Pool is a set of reactors and the connections they serve.
type Pool struct {
	// Static after New.
	cfg         Config
	family      int
	server      netip.AddrPort
	reqHead     string // the upgrade request up to the key header
	dialTimeout int64  // ns
	maxFrame    int
	epoch       time.Time // now() is monotonic time since epoch
	reactors    []*reactor

	next       atomic.Uint64 // round robin
	closed     atomic.Bool
	connecting atomic.Int64
	open       atomic.Int64
	ended      atomic.Int64
	closeOnce  sync.Once

	mu         sync.Mutex
	closeCodes map[int]int64    // guarded by mu
	errs       map[string]int64 // guarded by mu
}

// New starts a pool's reactors.
func New(cfg Config) (*Pool, error) {
	if cfg.Addr == "" {
		return nil, errors.New("lean: Config.Addr is required")
	}
	ta, err := net.ResolveTCPAddr("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("lean: %w", err)
	}
	ap := ta.AddrPort()
	if cfg.Host == "" {
		cfg.Host = cfg.Addr
	}
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.Reactors <= 0 {
		cfg.Reactors = runtime.GOMAXPROCS(0)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	cfg.MaxFrame = min(cfg.MaxFrame, 1<<30)
	p := &Pool{
		cfg:         cfg,
		dialTimeout: int64(cfg.DialTimeout),
		maxFrame:    cfg.MaxFrame,
		epoch:       time.Now(),
		closeCodes:  map[int]int64{},
		errs:        map[string]int64{},
		reqHead: "GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Host +
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " +
			protocol.Subprotocol + "\r\nSec-WebSocket-Key: ",
	}
	p.server = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	p.family, _ = sockaddr(p.server)
	for range cfg.Reactors {
		r, err := newReactor(p)
		if err != nil {
			for _, r := range p.reactors {
				r.shutdown() // run never started
			}
			return nil, err
		}
		p.reactors = append(p.reactors, r)
	}
	for _, r := range p.reactors {
		go r.run()
	}
	return p, nil
}

// sockaddr converts ap for package syscall.
func sockaddr(ap netip.AddrPort) (family int, sa syscall.Sockaddr) {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return syscall.AF_INET, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return syscall.AF_INET6, &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
}

// now is the pool's monotonic clock in ns.
func (p *Pool) now() int64 { return int64(time.Since(p.epoch)) }

// Dial starts a connection from source address local (an invalid
// netip.Addr: the kernel's choice), authenticating with token (empty: no
// Authorization header). It never blocks on the network. done is called
// exactly once, on a reactor goroutine, with nil once hello arrives (before
// any Config.OnMessage for c: the place to set c.Tag), or with the error:
// *UpgradeError, *CloseError (the server closed before hello), a
// syscall.Errno (ECONNREFUSED, EADDRNOTAVAIL, EMFILE...), ErrTimeout,
// ErrProtocol or ErrClosed. After Pool.Close, done is called at once on the
// caller's goroutine with ErrClosed.
func (p *Pool) Dial(local netip.Addr, token string, done func(c *Conn, err error)) {
	r := p.reactors[(p.next.Add(1)-1)%uint64(len(p.reactors))]
	c := &Conn{r: r, fd: -1}
	var key [16]byte
	for i := 0; i < len(key); i += 8 {
		v := rand.Uint64()
		for j := range 8 {
			key[i+j] = byte(v >> (8 * j))
		}
	}
	k := base64.StdEncoding.EncodeToString(key[:])
	req := make([]byte, 0, len(p.reqHead)+len(k)+len(token)+48)
	req = append(req, p.reqHead...)
	req = append(req, k...)
	if token != "" {
		req = append(req, "\r\nAuthorization: Bearer "...)
		req = append(req, token...)
	}
	req = append(req, "\r\n\r\n"...)
	c.x = &ext{
		done:     done,
		req:      req,
		local:    local.Unmap(),
		accept:   acceptFor(k),
		deadline: p.now() + p.dialTimeout,
	}
	p.connecting.Add(1)
	if p.closed.Load() || !r.enqueue(command{c: c, op: cmdDial}) {
		c.status.Store(stEnded)
		p.connecting.Add(-1)
		done(c, ErrClosed)
	}
}

// Stats is a snapshot of a pool's counters.
type Stats struct {
	Connecting    int64 // dials in progress (connect, upgrade or waiting for hello)
	Open          int64 // established connections now
	Closed        int64 // established connections that ended
	PingsAnswered int64 // application and control pings answered
	Events        int64 // other frames received after hello (each JSON frame of a batch counts), handed to OnMessage or not
	BytesIn       int64 // bytes read from sockets, HTTP responses included
	// CloseCodes counts close frames from the server by code, before or
	// after hello.
	CloseCodes map[int]int64
	// Errors counts failed dials and connections that ended abnormally,
	// by ErrKind; closes by the server's close frame after hello and by
	// Close, Abort or Pool.Close are not errors.
	Errors map[string]int64
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats {
	s := Stats{
		Connecting: p.connecting.Load(),
		Open:       p.open.Load(),
		Closed:     p.ended.Load(),
	}
	for _, r := range p.reactors {
		s.PingsAnswered += r.pings.Load()
		s.Events += r.events.Load()
		s.BytesIn += r.bytesIn.Load()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s.CloseCodes = make(map[int]int64, len(p.closeCodes))
	for k, v := range p.closeCodes {
		s.CloseCodes[k] = v
	}
	s.Errors = make(map[string]int64, len(p.errs))
	for k, v := range p.errs {
		s.Errors[k] = v
	}
	return s
}

// count records how a connection or dial ended.
func (p *Pool) count(code int, err error) {
	if code == 0 && (err == nil || err == ErrClosed) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if code != 0 {
		p.closeCodes[code]++
	}
	if err != nil && err != ErrClosed {
		p.errs[ErrKind(err)]++
	}
}

// closeWait bounds Pool.Close's wait for the reactors.
const closeWait = 10 * time.Second

// Close closes every connection (a close frame with 1000, best effort),
// fails the dials in progress with ErrClosed and stops the reactors. It
// waits at most 10 s for them (a callback that blocks holds its reactor).
// Calls after the first return nil at once.
func (p *Pool) Close() error {
	first := false
	p.closeOnce.Do(func() { first = true })
	if !first {
		return nil
	}
	p.closed.Store(true)
	for _, r := range p.reactors {
		r.stop()
	}
	t := time.NewTimer(closeWait)
	defer t.Stop()
	for _, r := range p.reactors {
		select {
		case <-r.exited:
		case <-t.C:
			return fmt.Errorf("lean: reactors did not stop within %v (is a callback blocking?)", closeWait)
		}
	}
	return nil
}

// Connection states. Written by the reactor only; read anywhere.
const (
	stQueued     uint32 = iota // Dial queued it; no socket yet
	stConnecting               // TCP connect in progress
	stUpgrading                // request sent (or being sent), waiting for 101
	stHello                    // upgraded, waiting for hello
	stOpen                     // hello received
	stEnded                    // socket closed; done or OnClose called
)

// Conn is one connection. Its fields are owned by its reactor except
// status, which others read. It is 32 bytes; keep it so (TestIdleCosts).
type Conn struct {
	r      *reactor      // static
	x      *ext          // handshake and pending bytes; nil while idle
	fd     int32         // -1 before the socket and after close
	status atomic.Uint32 // st*

	// Tag is the caller's, e.g. an index into its own per-connection
	// table; the package never reads it. It is owned by the reactor: set
	// it in Dial's done (on success) and read it in Config.OnMessage and
	// Config.OnClose, which all run on the connection's reactor goroutine,
	// done first. Reading or writing it from any other goroutine is a race.
	Tag int32

	flags uint8 // flag*
}

// Connection flags.
const (
	flagOut  = 1 << iota // EPOLLOUT is registered
	flagFrag             // inside a fragmented data message
)

// ext is the part of a connection that is needed only while it connects or
// has bytes pending; an idle connection drops it.
type ext struct {
	// Until hello.
	done     func(*Conn, error)
	req      []byte // the upgrade request, until written
	local    netip.Addr
	accept   [acceptLen]byte // expected Sec-WebSocket-Accept
	deadline int64           // pool clock, ns
	resp     []byte          // an incomplete HTTP response head

	pend []byte // an incomplete frame
	out  []byte // bytes the socket did not take yet
}

// Close sends a close frame (1000, best effort) and closes the socket; it
// does not wait for the server's answer. Before hello it fails the dial
// with ErrClosed. It returns at once; the reactor does the work.
func (c *Conn) Close() { c.request(command{c: c, op: cmdClose}) }

// Abort closes the socket with SO_LINGER 0, so the server gets a reset and
// no close frame, as when a network dies abruptly.
func (c *Conn) Abort() { c.request(command{c: c, op: cmdAbort}) }

func (c *Conn) request(cmd command) {
	if c.status.Load() == stEnded {
		return
	}
	c.r.enqueue(cmd) // false: the reactor stopped and closed every connection
}

// Send queues text as one masked text message; the reactor writes it. It
// is for light use (a presence update, a typing frame): len(text) must be
// at most MaxSend. It reports ErrNotOpen before hello and ErrClosed after
// the connection ended; a message queued just before the end is dropped.
func (c *Conn) Send(text []byte) error {
	if len(text) > MaxSend {
		return fmt.Errorf("lean: Send: %d bytes exceed %d", len(text), MaxSend)
	}
	switch c.status.Load() {
	case stOpen:
	case stEnded:
		return ErrClosed
	default:
		return ErrNotOpen
	}
	msg := appendFrame(make([]byte, 0, len(text)+14), opText, text, rand.Uint32())
	if !c.r.enqueue(command{c: c, op: cmdSend, msg: msg}) {
		return ErrClosed
	}
	return nil
}
