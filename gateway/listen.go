package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Serve accepts client connections on ln until ln is closed, by hs's
// Shutdown or Close or by the Server's Close.
//
// A connection whose first request is a plain websocket upgrade to /v1/ws
// is served here, without net/http: a reconnect storm is mostly such
// connections, and net/http's per-connection machinery (two 4 KiB buffers
// that a hijacked connection never gives back, contexts, a background read
// goroutine, the remote address formatted as a string) cost about as much
// CPU as the upgrade itself. Every other connection, and every request this
// code does not fully understand (odd framing, a body, oversize heads, ...)
// goes to hs unchanged, bytes already read included, so net/http keeps
// answering them exactly as before; /v1/ws stays routed in Handler for
// upgrades on a connection net/http already serves.
//
// It returns http.ErrServerClosed after hs was shut down, like hs.Serve.
func (s *Server) Serve(ln net.Listener, hs *http.Server) error {
	h := &handoffListener{ln: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	if !s.trackListener(ln) {
		_ = ln.Close()
		return http.ErrServerClosed
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- hs.Serve(h) }() // waited for below
	err := s.acceptLoop(ln, h)
	_ = h.Close()
	if herr := <-httpErr; errors.Is(herr, http.ErrServerClosed) {
		return herr
	}
	return err
}

func (s *Server) trackListener(ln net.Listener) bool {
	s.accept.mu.Lock()
	defer s.accept.mu.Unlock()
	if s.accept.closed {
		return false
	}
	s.accept.listeners = append(s.accept.listeners, ln)
	return true
}

// acceptLoop accepts until ln fails for good, retrying temporary errors
// (such as running out of file descriptors) as net/http does.
func (s *Server) acceptLoop(ln net.Listener, h *handoffListener) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			//lint:ignore SA1019 net/http retries the same errors
			if errors.As(err, &ne) && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "in", delay)
				select {
				case <-time.After(delay):
				case <-h.done:
				}
				continue
			}
			return err
		}
		delay = 0
		s.dispatch(c, h)
	}
}

// acceptState is what Close must reach of Serve: the listeners it accepts
// on and the connections whose request head is being read.
type acceptState struct {
	mu        sync.Mutex
	conns     map[net.Conn]struct{} // guarded by mu
	listeners []net.Listener        // guarded by mu
	closed    bool                  // guarded by mu: Close ran
}

// dispatch starts serving c on a goroutine of its own.
func (s *Server) dispatch(c net.Conn, h *handoffListener) {
	s.accept.mu.Lock()
	if s.accept.closed {
		s.accept.mu.Unlock()
		_ = c.Close()
		return
	}
	s.accept.conns[c] = struct{}{}
	s.wg.Add(1) // under mu: Close waits only after it set closed
	s.accept.mu.Unlock()
	go s.serveConn(c, h)
}

// closeHandshakes stops the accept loops and cuts the connections whose
// request head is still being read.
func (s *Server) closeHandshakes() {
	s.accept.mu.Lock()
	defer s.accept.mu.Unlock()
	s.accept.closed = true
	for _, ln := range s.accept.listeners {
		_ = ln.Close()
	}
	s.accept.listeners = nil
	for c := range s.accept.conns {
		_ = c.Close()
	}
}

// maxHead bounds the request heads served here; a larger one (big cookies,
// say) goes to net/http, which allows up to its MaxHeaderBytes.
const maxHead = 4 << 10

var headBuffers = sync.Pool{New: func() any { return new([maxHead]byte) }}

// serveConn reads the first request head of c and serves it when it is a
// websocket upgrade; otherwise it hands c to net/http.
func (s *Server) serveConn(c net.Conn, h *handoffListener) {
	defer s.wg.Done()
	buf := headBuffers.Get().(*[maxHead]byte)
	defer headBuffers.Put(buf)
	n, end, err := readHead(c, buf[:], time.Now().Add(s.cfg.HandshakeTimeout))
	s.accept.mu.Lock()
	delete(s.accept.conns, c)
	s.accept.mu.Unlock()
	var r *http.Request
	if end > 0 && bytes.HasPrefix(buf[:end], []byte("GET /v1/ws")) {
		r = parseUpgrade(string(buf[:end]))
	}
	if r == nil {
		if n == 0 || isTimeout(err) {
			_ = c.Close() // what net/http does with these
			return
		}
		h.give(c, bytes.Clone(buf[:n]))
		return
	}
	// As net/http: no read deadline while the handler runs.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		_ = c.Close()
		return
	}
	rw := &wsResponse{c: c, rsize: s.cfg.ReadBuffer, wsize: s.cfg.WriteBuffer}
	if end < n {
		rw.rest = bytes.Clone(buf[end:n])
	}
	_ = growStack(0)
	s.upgrade(rw, r, remoteIP(c))
	if !rw.hijacked {
		// A refusal before the upgrade (draining, rate limited, a bad
		// handshake): answer it, then let net/http serve whatever the
		// client sends next on the connection, as it would have.
		keep := rw.respond(s.cfg.WriteTimeout, r)
		if keep {
			h.give(c, rw.rest)
		} else {
			_ = c.Close()
		}
	}
}

// handshakeStack is about the stack an upgrade needs at its deepest (the
// JWT and JSON decoders under auth, the websocket upgrade, the hello write).
const handshakeStack = 12 << 10

// growStack grows the calling goroutine's stack to hold an upgrade, while
// the stack is shallow. Otherwise the upgrade grows it when deep, in
// several doublings that each copy the stack and adjust every frame on it,
// on every connection (in a profile of a reconnect storm, twice the cost):
// a goroutine starts with a small stack, and the runtime shrinks the stacks
// of idle goroutines, so a pool of handshake goroutines would not keep
// grown stacks either.
//
// It returns a byte of the padding, which callers ignore, so that the
// padding cannot be optimised away.
//
//go:noinline
func growStack(i int) byte {
	var pad [handshakeStack]byte
	return pad[i%len(pad)]
}

// readHead reads from c into buf until it holds a whole request head. It
// returns the bytes read, the end of the head (0 if buf holds no whole
// head) and the read error, if any.
func readHead(c net.Conn, buf []byte, deadline time.Time) (n, end int, err error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return 0, 0, err
	}
	for n < len(buf) {
		var m int
		m, err = c.Read(buf[n:])
		from := max(n-3, 0)
		n += m
		if i := bytes.Index(buf[from:n], []byte("\r\n\r\n")); i >= 0 {
			return n, from + i + 4, nil
		}
		if err != nil {
			return n, 0, err
		}
	}
	return n, 0, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// remoteIP is c's remote IP as clientIP derives it from net/http's
// RemoteAddr, without formatting the port.
func remoteIP(c net.Conn) string {
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		if a.Zone != "" {
			return a.IP.String() + "%" + a.Zone
		}
		return a.IP.String()
	case nil:
		return ""
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		return host
	}
}

// maxHeaderLines bounds the header lines of an upgrade served here.
const maxHeaderLines = 64

// parseUpgrade parses head, a request head ending in "\r\n\r\n", if it is a
// websocket upgrade to /v1/ws in the plainest form: HTTP/1.1, CRLF line
// ends, valid header names and values, one valid Host, no body, no Expect,
// and Connection and Upgrade headers asking for websocket. The Request is
// then what net/http would have handed to serveWS, less the context and
// RemoteAddr (upgrade takes the client IP as an argument). Anything else
// gives nil: net/http gets the connection and does what it always did,
// refusals included.
//
// The header values are substrings of head, so that the request costs one
// string, not one per header; Sec-WebSocket-Protocol is the exception,
// because the websocket keeps the chosen protocol for the connection's
// life and must not pin the whole head.
func parseUpgrade(head string) *http.Request {
	line, rest, _ := strings.Cut(head, "\r\n")
	// The request line as net/http splits it.
	method, line, _ := strings.Cut(line, " ")
	target, proto, _ := strings.Cut(line, " ")
	if method != http.MethodGet || proto != "HTTP/1.1" {
		return nil
	}
	if target != "/v1/ws" && !strings.HasPrefix(target, "/v1/ws?") {
		return nil
	}
	lines := strings.Count(rest, "\r\n") - 1
	if lines < 1 || lines > maxHeaderLines {
		return nil
	}
	hdr := make(http.Header, lines)
	vals := make([]string, lines) // one backing array for the usual single values
	var host string
	hosts := 0
	for i := 0; ; i++ {
		line, rest, _ = strings.Cut(rest, "\r\n")
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !validHeaderName(name) {
			return nil // obs-fold, a space before the colon, ...
		}
		value = strings.Trim(value, " \t")
		if !validHeaderValue(value) {
			return nil
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			host = value
			hosts++
			continue
		case "Content-Length", "Transfer-Encoding", "Expect":
			return nil
		case "Sec-Websocket-Protocol":
			value = protocolValue(value)
		}
		if vv := hdr[key]; vv != nil {
			hdr[key] = append(vv, value)
		} else {
			vals[i] = value
			hdr[key] = vals[i : i+1 : i+1]
		}
	}
	if hosts != 1 || !validHost(host) {
		return nil
	}
	if !hasToken(hdr["Connection"], "upgrade") || !hasToken(hdr["Upgrade"], "websocket") {
		return nil // net/http answers 426 and keeps the connection
	}
	u, err := url.ParseRequestURI(target)
	if err != nil || u.Path != "/v1/ws" || u.RawPath != "" {
		return nil
	}
	return &http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     hdr,
		Body:       http.NoBody,
		Host:       host,
		RequestURI: target,
	}
}

// protocolValue returns a Sec-WebSocket-Protocol header value as a string
// of its own.
func protocolValue(v string) string {
	switch v {
	case "parley.v1":
		return "parley.v1"
	}
	return strings.Clone(v)
}

// hasToken reports whether a comma-separated header holds token, as the
// websocket package checks it.
func hasToken(vv []string, token string) bool {
	for _, v := range vv {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// The byte classes net/http checks requests against (x/net/http/httpguts).
var (
	tokenBytes = byteSet("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
	hostBytes  = byteSet("!$%&'()*+,-.:;=[]_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
)

func byteSet(s string) (set [256]bool) {
	for i := 0; i < len(s); i++ {
		set[s[i]] = true
	}
	return set
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenBytes[s[i]] {
			return false
		}
	}
	return true
}

// validHeaderValue: no control bytes but tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

func validHost(s string) bool {
	for i := 0; i < len(s); i++ {
		if !hostBytes[s[i]] {
			return false
		}
	}
	return true
}

// wsResponse is the ResponseWriter of an upgrade served by Serve. Like
// smallBuffers it hijacks with small bufio buffers and holds the 101
// response back to leave with the first frame; a response that is not an
// upgrade is collected and written by respond.
type wsResponse struct {
	c            net.Conn
	rest         []byte // bytes the client sent past the request head
	rsize, wsize int
	h            http.Header
	status       int
	body         []byte
	hijacked     bool
}

func (w *wsResponse) Header() http.Header {
	if w.h == nil {
		w.h = make(http.Header, 4)
	}
	return w.h
}

func (w *wsResponse) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *wsResponse) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

func (w *wsResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	var br *bufio.Reader
	if len(w.rest) == 0 {
		br = bufio.NewReaderSize(w.c, w.rsize)
	} else {
		// Early frames: they must sit in the reader's buffer, where the
		// websocket package looks for them.
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(w.rest), w.c), max(w.rsize, len(w.rest)))
		if _, err := br.Peek(len(w.rest)); err != nil {
			return nil, nil, err
		}
		w.rest = nil
	}
	bw := bufio.NewWriterSize(w.c, w.wsize)
	if w.status == http.StatusSwitchingProtocols {
		writeSwitching(bw, w.Header())
	}
	return w.c, bufio.NewReadWriter(br, bw), nil
}

func (w *wsResponse) hijackedConn() net.Conn {
	if !w.hijacked {
		return nil
	}
	return w.c
}

// respond writes the collected response as net/http would (Date,
// Content-Length, a sniffed Content-Type) within timeout, and reports
// whether the connection stays open for another request.
func (w *wsResponse) respond(timeout time.Duration, r *http.Request) (keepAlive bool) {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	h := w.Header()
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	if _, ok := h["Content-Type"]; !ok && len(w.body) > 0 {
		h.Set("Content-Type", http.DetectContentType(w.body))
	}
	h.Set("Content-Length", strconv.Itoa(len(w.body)))
	keepAlive = !hasToken(r.Header["Connection"], "close")
	if !keepAlive {
		h.Set("Connection", "close")
	}
	b := make([]byte, 0, 256+len(w.body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\n"...)
	buf := bytes.NewBuffer(b)
	_ = h.Write(buf)
	buf.WriteString("\r\n")
	buf.Write(w.body)
	if err := w.c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return false
	}
	if _, err := w.c.Write(buf.Bytes()); err != nil {
		return false
	}
	return w.c.SetWriteDeadline(time.Time{}) == nil && keepAlive
}

// switchingKeys are the headers of a 101 response as the websocket package
// sets them, in the order Header.Write sorts them.
var switchingKeys = [...]string{"Connection", "Sec-Websocket-Accept", "Sec-Websocket-Extensions", "Sec-Websocket-Protocol", "Upgrade"}

// writeSwitching writes a 101 response head with h. The usual headers are
// written directly; anything else takes Header.Write, whose sorting and
// sanitising cost more than the rest of this response.
func writeSwitching(bw *bufio.Writer, h http.Header) {
	_, _ = bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	known := 0
	for _, k := range switchingKeys {
		if vv, ok := h[k]; ok {
			if len(vv) != 1 {
				known = -1
				break
			}
			known++
		}
	}
	if known != len(h) {
		_ = h.Write(bw)
	} else {
		for _, k := range switchingKeys {
			if vv, ok := h[k]; ok {
				_, _ = bw.WriteString(k)
				_, _ = bw.WriteString(": ")
				_, _ = bw.WriteString(vv[0])
				_, _ = bw.WriteString("\r\n")
			}
		}
	}
	_, _ = bw.WriteString("\r\n")
}

// handoffListener hands connections that Serve does not serve to net/http.
// Closing it closes the real listener, so that hs.Shutdown stops Serve.
type handoffListener struct {
	ln    net.Listener
	conns chan net.Conn // unbuffered
	done  chan struct{} // closed by Close
	once  sync.Once
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.done) })
	return h.ln.Close()
}

func (h *handoffListener) Addr() net.Addr { return h.ln.Addr() }

// give hands c to net/http; the client's bytes read so far are read again
// first.
func (h *handoffListener) give(c net.Conn, read []byte) {
	if len(read) > 0 {
		c = &replayConn{Conn: c, pending: read}
	}
	select {
	case h.conns <- c:
	case <-h.done:
		_ = c.Close()
	}
}

// replayConn returns pending before reading from the connection.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http half-close the connection, as it does with a
// *net.TCPConn before closing on an error.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
