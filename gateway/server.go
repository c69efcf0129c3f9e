package gateway

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/hub"
	"github.com/parley-im/parley/protocol"
)

// Server is the gateway. Create it with New; serve a listener with Serve
// (or Handler() with an http.Server of your own: Serve only makes the
// websocket handshake cheaper); stop it with Drain and then Close.
type Server struct {
	cfg Config // static after New
	hub *hub.Hub
	log *slog.Logger
	m   *metrics

	users *keyedLimits // per-user connections and frame bucket
	ips   *keyedLimits // per-IP connect bucket

	nextID    atomic.Uint64 // session ids: start at boot time in ns
	draining  atomic.Bool
	resyncing atomic.Bool // a Resync is running
	conns     connSet
	wg        sync.WaitGroup // read loops, closers and the sweeper

	stop     chan struct{} // closed by Close
	stopOnce sync.Once

	accept     acceptState              // see Serve
	acceptOpts *websocket.AcceptOptions // static after New; read-only
	helloTail  []byte                   // static after New; see appendHello
}

// New builds a Server and starts its heartbeat sweeper.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:   cfg,
		hub:   cfg.Hub,
		log:   cfg.Logger.With("component", "gateway"),
		m:     newMetrics(cfg.Registry),
		users: newKeyedLimits(cfg.UserRate, cfg.UserBurst),
		ips:   newKeyedLimits(cfg.ConnectRate, cfg.ConnectBurst),
		stop:  make(chan struct{}),
	}
	s.nextID.Store(uint64(cfg.Now().UnixNano()))
	s.conns.init()
	s.accept.conns = make(map[net.Conn]struct{})
	s.acceptOpts = &websocket.AcceptOptions{
		Subprotocols:       []string{protocol.Subprotocol},
		OriginPatterns:     cfg.OriginPatterns,
		InsecureSkipVerify: cfg.DevTokens && len(cfg.OriginPatterns) == 0,
		CompressionMode:    websocket.CompressionDisabled,
	}
	s.helloTail = helloTail(cfg)
	s.wg.Add(1)
	go s.sweep()
	return s, nil
}

// Handler returns the client-facing HTTP handler: /v1/ws, the HTTP API and,
// with DevTokens, the demo page at /.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", s.serveWS)
	s.routeAPI(mux)
	if s.cfg.DevTokens {
		mux.HandleFunc("POST /v1/dev/token", s.devToken)
	}
	if s.cfg.Demo != nil {
		mux.Handle("GET /", s.cfg.Demo)
	}
	return mux
}

// Ready reports whether the server accepts new connections.
func (s *Server) Ready() bool { return !s.draining.Load() }

// Connections returns the number of open sessions.
func (s *Server) Connections() int { return s.conns.len() }

// clientIP is the connection's remote IP (no proxy headers are trusted).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// upgradeWriter is the ResponseWriter an upgrade is served with: it hijacks
// the connection with the session's small bufio buffers and holds the 101
// response back, to leave in one write with the first frame (smallBuffers
// under net/http, wsResponse under Serve).
type upgradeWriter interface {
	http.ResponseWriter
	http.Hijacker
	// hijackedConn is the socket Hijack returned; nil before.
	hijackedConn() net.Conn
}

// serveWS serves /v1/ws for net/http: an upgrade on a connection net/http
// serves already, or one Serve handed over.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	s.upgrade(&smallBuffers{ResponseWriter: w, rsize: s.cfg.ReadBuffer, wsize: s.cfg.WriteBuffer}, r, clientIP(r))
}

// upgrade runs the handshake of a connection from ip: limits, auth, the
// websocket upgrade, registration and hello; then it starts the session's
// read loop.
func (s *Server) upgrade(w upgradeWriter, r *http.Request, ip string) {
	// The upgrade counts as the server's work until the session's read
	// loop owns it: Close waits for a connection being set up.
	s.wg.Add(1)
	defer s.wg.Done()
	start0 := s.cfg.Now()
	if s.draining.Load() {
		s.m.connects.WithLabelValues("draining").Inc()
		writeHTTPError(w, http.StatusServiceUnavailable, protocol.Errorf(protocol.CodeDraining, "node is draining, connect elsewhere"))
		return
	}
	if ok, wait := s.ips.take(ip, start0); !ok {
		s.m.connects.WithLabelValues("rate_limited").Inc()
		w.Header().Set("Retry-After", retryAfterSeconds(wait))
		writeHTTPError(w, http.StatusTooManyRequests, &protocol.Error{Code: protocol.CodeRateLimited, Message: "too many connections from this address", RetryAfter: wait.Milliseconds() + 1})
		return
	}
	token, _ := auth.TokenFromRequest(r)
	claims, authErr := s.cfg.Verifier.Verify(token)
	if authErr == nil && claims.Service {
		authErr = errors.New("service tokens cannot open sessions")
	}

	conn, err := websocket.Accept(w, r, s.acceptOpts)
	if err != nil {
		s.m.connects.WithLabelValues("upgrade_failed").Inc()
		s.log.Info("upgrade failed", "ip", ip, "err", err)
		return
	}
	// Refusals after the upgrade, so browsers see the close code.
	refuse := func(code int, reason, result string) {
		s.m.connects.WithLabelValues(result).Inc()
		s.m.closes.WithLabelValues(closeName(code)).Inc()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = conn.Close(websocket.StatusCode(code), reason)
		}()
	}
	if conn.Subprotocol() != protocol.Subprotocol {
		refuse(protocol.CloseBadSubprotocol, "offer subprotocol "+protocol.Subprotocol, "bad_subprotocol")
		return
	}
	if authErr != nil {
		code, reason := protocol.CloseUnauthorized, "invalid token"
		switch {
		case errors.Is(authErr, auth.ErrExpired):
			code, reason = protocol.CloseTokenExpired, "token expired"
		case errors.Is(authErr, auth.ErrMissing):
			reason = "missing token"
		}
		s.log.Info("connection refused", "ip", ip, "reason", reason, "err", authErr)
		refuse(code, reason, "unauthorized")
		return
	}
	user := claims.User()
	if !s.users.acquire(user, s.cfg.MaxConnsPerUser) {
		refuse(protocol.CloseTooManyConns, "too many connections for this user", "too_many_conns")
		return
	}
	conn.SetReadLimit(protocol.MaxMessage)

	sess := &session{
		srv:  s,
		conn: conn,
		raw:  w.hijackedConn(),
		id:   s.nextID.Add(1),
		user: user,
		dev:  claims.Device,
		ip:   ip,
	}
	if sess.dev == "" {
		sess.dev = "default"
	}
	sess.setClaims(claims)
	now := s.cfg.Now().UnixNano()
	sess.lastRead.Store(now)
	sess.lastPing.Store(now)

	var hello []byte
	if r.URL.RawQuery != "" && r.URL.Query().Get("resume") == "1" {
		h := s.hello(sess)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := s.hub.ResumeState(ctx, user)
		cancel()
		if err == nil {
			h.Resume = res
		}
		hello = protocol.Marshal(h)
	} else {
		hello = s.appendHello(sess)
	}
	// This goroutine is the session's writer until hello is out: frames
	// the hub delivers meanwhile are queued behind it. Hello leaves in one
	// write with the 101 response.
	sess.writing = true
	s.conns.add(sess)
	s.hub.Register(sess)
	if err := sess.write(hello); err != nil {
		s.m.connects.WithLabelValues("hello_failed").Inc()
		s.hub.Unregister(sess)
		s.conns.remove(sess)
		s.users.release(user)
		_ = conn.CloseNow()
		return
	}
	sess.mu.Lock()
	start := sess.pendingLocked() || sess.closeCode != 0
	if start {
		sess.writer.Add(1)
	} else {
		sess.writing = false
	}
	sess.mu.Unlock()
	if start {
		go sess.writeLoop()
	}
	if s.draining.Load() {
		// Drain began while this session was being set up and may have
		// missed it.
		sess.closeAfterFlush(byeFrame("shutdown", s.cfg.DrainJitter), protocol.CloseShutdown, "server shutdown")
	}
	s.m.connectsOK.Inc()
	s.m.connected.Inc()
	s.m.connectSeconds.Observe(s.cfg.Now().Sub(start0).Seconds())

	// Serve from a fresh goroutine, started with a small stack, and let
	// this one (and the request it holds, and its stack, grown for the
	// handshake) go: the session keeps only what it needs.
	s.wg.Add(1)
	go sess.readLoop()
	select {
	case <-s.stop:
		// Close ran while this session was set up; its cut may have
		// missed it.
		_ = conn.CloseNow()
	default:
	}
}

// closeSession closes a connection with a typed reason, once, off the
// caller's path (the close handshake may wait for a slow client).
func (s *Server) closeSession(sess *session, code int, reason string) {
	if !sess.closed.CompareAndSwap(false, true) {
		return
	}
	s.m.closes.WithLabelValues(closeName(code)).Inc()
	s.log.Debug("closing session", "user", sess.user, "device", sess.dev, "code", code, "reason", reason)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = sess.conn.Close(websocket.StatusCode(code), reason)
	}()
}

// sweep runs once per second: it pings connections whose heartbeat is due,
// closes idle ones and ones whose token expired, and forgets idle rate-limit
// entries. One goroutine for all connections: no per-connection timers.
func (s *Server) sweep() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	ping := []byte(`{"type":"ping"}`)
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := s.cfg.Now()
		ns := now.UnixNano()
		hb, idle := int64(s.cfg.Heartbeat), int64(s.cfg.IdleTimeout)
		s.conns.each(func(sess *session) {
			switch {
			case ns-sess.lastRead.Load() > idle:
				s.closeSession(sess, protocol.CloseIdleTimeout, "idle timeout")
			case tokenExpired(sess.exp.Load(), now.Add(-s.cfg.TokenLeeway)):
				s.closeSession(sess, protocol.CloseTokenExpired, "token expired")
			case ns-sess.lastPing.Load() >= hb:
				sess.lastPing.Store(ns)
				sess.Offer("ping", ping)
			}
		})
		s.users.sweep(now)
		s.ips.sweep(now)
	}
}

// tokenExpired reports whether a token expiring at exp (unix s; 0: never)
// has expired. A token is valid through the second of its exp.
func tokenExpired(exp int64, now time.Time) bool {
	return exp != 0 && now.Unix() > exp
}

// Drain stops accepting connections and moves the existing ones away: each
// gets a bye frame with a jittered reconnect delay and is closed with
// CloseShutdown, DrainBatch connections per DrainInterval. It returns when
// every connection is gone or ctx ends (the rest are then cut).
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	s.log.Info("draining", "connections", s.conns.len())
	return s.cycle(ctx, s.conns.snapshot(), "shutdown", protocol.CloseShutdown, "server shutdown", true)
}

// Resync makes every connected client reconnect and sync, in batches with
// jittered delays, without draining: the node's NATS link dropped
// deliveries (a slow consumer), so any session here may have missed
// messages, and resume is what recovers them. One Resync runs at a time;
// a call while one runs returns at once.
func (s *Server) Resync() {
	if !s.resyncing.CompareAndSwap(false, true) || s.draining.Load() {
		return
	}
	all := s.conns.snapshot()
	s.log.Warn("bus dropped deliveries: clients reconnect to resync", "connections", len(all))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.resyncing.Store(false)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		_ = s.cycle(ctx, all, "resync", protocol.CloseSlowConsumer, "bus overflow: reconnect and sync", false)
	}()
}

// cycle tells sessions to leave, DrainBatch per DrainInterval, each with a
// bye carrying a jittered reconnect delay. With wait it then waits until
// every connection is gone; ctx ending cuts the rest.
func (s *Server) cycle(ctx context.Context, all []*session, why string, code int, reason string, wait bool) error {
	t := time.NewTicker(s.cfg.DrainInterval)
	defer t.Stop()
	for len(all) > 0 {
		n := min(s.cfg.DrainBatch, len(all))
		for _, sess := range all[:n] {
			sess.closeAfterFlush(byeFrame(why, s.cfg.DrainJitter), code, reason)
		}
		all = all[n:]
		if len(all) == 0 {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if wait {
				s.cutAll()
			}
			return ctx.Err()
		}
	}
	for wait && s.conns.len() > 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
			s.cutAll()
			return ctx.Err()
		}
	}
	return nil
}

// byeFrame tells a client to reconnect after a random delay within jitter,
// so that a drained node's clients do not all arrive elsewhere at once.
func byeFrame(reason string, jitter time.Duration) []byte {
	delay := rand.Int64N(int64(jitter)/1e6 + 1)
	return protocol.Marshal(protocol.Bye{Type: protocol.TypeBye, Reason: reason, ReconnectAfterMS: delay})
}

func (s *Server) cutAll() {
	for _, sess := range s.conns.snapshot() {
		_ = sess.conn.CloseNow()
	}
}

// Close cuts every connection and waits for all goroutines of the server.
func (s *Server) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.draining.Store(true)
	s.closeHandshakes()
	s.cutAll()
	s.wg.Wait()
}

// smallBuffers wraps a ResponseWriter for the websocket upgrade:
//
//   - the hijacked connection gets small bufio buffers instead of net/http's
//     4 KiB pair, which the websocket keeps for the connection's life (a large
//     share of an idle connection's memory);
//   - the 101 response is not flushed by net/http on its own: it is written
//     into the connection's buffer, so it leaves in one write together with
//     the first frame (hello, or the close frame of a refusal). That saves a
//     syscall and a wake-up of the client per connection.
//
// If the client already sent bytes past the upgrade request (they sit in
// net/http's reader), that reader is kept.
type smallBuffers struct {
	http.ResponseWriter
	rsize, wsize int
	upgrade      bool     // WriteHeader(101) was held back
	raw          net.Conn // the hijacked connection
}

func (w *smallBuffers) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols {
		w.upgrade = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("gateway: connection cannot be hijacked")
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.raw = c
	br := brw.Reader
	if br.Buffered() == 0 {
		br = bufio.NewReaderSize(c, w.rsize)
	}
	bw := bufio.NewWriterSize(c, w.wsize)
	if w.upgrade {
		writeSwitching(bw, w.Header())
	}
	return c, bufio.NewReadWriter(br, bw), nil
}

func (w *smallBuffers) hijackedConn() net.Conn { return w.raw }

func (w *smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// connSet is the set of open sessions, sharded by session id.
type connSet struct {
	n      atomic.Int64
	shards [64]struct {
		mu sync.Mutex
		m  map[uint64]*session // guarded by mu
	}
}

func (c *connSet) init() {
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]*session)
	}
}

func (c *connSet) add(s *session) {
	sh := &c.shards[s.id%64]
	sh.mu.Lock()
	sh.m[s.id] = s
	sh.mu.Unlock()
	c.n.Add(1)
}

func (c *connSet) remove(s *session) {
	sh := &c.shards[s.id%64]
	sh.mu.Lock()
	if _, ok := sh.m[s.id]; ok {
		delete(sh.m, s.id)
		c.n.Add(-1)
	}
	sh.mu.Unlock()
}

func (c *connSet) len() int { return int(c.n.Load()) }

func (c *connSet) each(fn func(*session)) {
	var buf []*session
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		buf = buf[:0]
		for _, s := range sh.m {
			buf = append(buf, s)
		}
		sh.mu.Unlock()
		for _, s := range buf {
			fn(s)
		}
	}
}

func (c *connSet) snapshot() []*session {
	var out []*session
	c.each(func(s *session) { out = append(out, s) })
	return out
}

func closeName(code int) string {
	switch code {
	case protocol.CloseShutdown:
		return "shutdown"
	case protocol.CloseSlowConsumer:
		return "slow_consumer"
	case protocol.CloseIdleTimeout:
		return "idle_timeout"
	case protocol.CloseTokenExpired:
		return "token_expired"
	case protocol.CloseInternal:
		return "internal"
	case protocol.CloseTooManyConns:
		return "too_many_conns"
	case protocol.CloseRateLimited:
		return "rate_limited"
	case protocol.CloseUnauthorized:
		return "unauthorized"
	case protocol.CloseForbidden:
		return "forbidden"
	case protocol.CloseProtocolError:
		return "protocol_error"
	case protocol.CloseBadSubprotocol:
		return "bad_subprotocol"
	}
	return "other"
}

func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(int(d/time.Second) + 1)
}
