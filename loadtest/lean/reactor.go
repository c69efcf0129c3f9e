//go:build linux

package lean

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parley-im/parley/protocol"
)

const (
	// readSize is a reactor's read buffer: one read takes at most this much
	// from one socket, then the next ready socket gets its turn.
	readSize = 64 << 10
	// maxEvents is how many epoll events one wait returns at most.
	maxEvents = 256
	// sweepEvery is how often a reactor checks handshake deadlines; it is
	// also epoll_wait's timeout.
	sweepEvery = 100 * time.Millisecond
	// maxResponseHead bounds the HTTP response head of the upgrade.
	maxResponseHead = 8 << 10
	// maxOut bounds the bytes a connection may have waiting for the socket
	// (pongs and Sends to a server that does not read); beyond it the
	// connection is closed with syscall.ENOBUFS.
	maxOut = 256 << 10
)

// Commands to a reactor.
const (
	cmdDial = iota
	cmdClose
	cmdAbort
	cmdSend
)

type command struct {
	c   *Conn
	op  uint8
	msg []byte // cmdSend: a masked frame
}

// reactor serves its connections from one goroutine (run). Everything not
// marked otherwise is owned by run.
type reactor struct {
	p      *Pool            // static
	raddr  syscall.Sockaddr // static; the server; its own: Connect writes into it
	epfd   int              // static; closed by run on exit
	wakeR  int              // static; read end of the wake pipe, in epfd
	wakeW  int              // static; write end, written and closed with mu held
	exited chan struct{}

	conns  map[int32]*Conn       // by fd
	local4 syscall.SockaddrInet4 // bind scratch
	local6 syscall.SockaddrInet6
	buf    []byte  // read buffer
	wbuf   []byte  // control frame scratch
	hs     []*Conn // dials in deadline order (FIFO); hs[hsHead:] are live
	hsHead int
	spare  []command // the queue's other half

	mu       sync.Mutex
	queue    []command // guarded by mu
	woken    bool      // guarded by mu; a wake byte is pending since the last swap
	stopping bool      // guarded by mu; Pool.Close asked run to stop
	stopped  bool      // guarded by mu; run no longer takes commands, wakeW is closed

	pings, events, bytesIn atomic.Int64
}

func newReactor(p *Pool) (*reactor, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("lean: epoll_create1: %w", err)
	}
	var pipe [2]int
	if err := syscall.Pipe2(pipe[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("lean: pipe2: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(pipe[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(pipe[0])
		syscall.Close(pipe[1])
		return nil, fmt.Errorf("lean: epoll_ctl: %w", err)
	}
	_, raddr := sockaddr(p.server)
	return &reactor{
		p:      p,
		raddr:  raddr,
		epfd:   epfd,
		wakeR:  pipe[0],
		wakeW:  pipe[1],
		exited: make(chan struct{}),
		conns:  map[int32]*Conn{},
		buf:    make([]byte, readSize),
		wbuf:   make([]byte, 0, 2+4+maxControlSize),
	}, nil
}

// enqueue hands cmd to the reactor. It reports false if the reactor has
// stopped.
func (r *reactor) enqueue(cmd command) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	r.queue = append(r.queue, cmd)
	r.wakeLocked()
	return true
}

// wakeLocked makes epoll_wait return. The write happens with mu held so
// that it cannot race with run closing the pipe.
func (r *reactor) wakeLocked() {
	if !r.woken {
		r.woken = true
		// EAGAIN: the pipe is full of wake bytes already.
		_, _ = syscall.Write(r.wakeW, []byte{1})
	}
}

// stop asks run to close everything and exit.
func (r *reactor) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopping = true
	if !r.stopped {
		r.wakeLocked()
	}
}

func (r *reactor) run() {
	defer close(r.exited)
	events := make([]syscall.EpollEvent, maxEvents)
	nextSweep := r.p.now() + int64(sweepEvery)
	for {
		n, err := syscall.EpollWait(r.epfd, events, int(sweepEvery/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			// Cannot happen with a valid epfd and buffer; do not spin.
			r.shutdown()
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == int32(r.wakeR) {
				var b [64]byte
				for {
					if n, _ := syscall.Read(r.wakeR, b[:]); n <= 0 {
						break
					}
				}
				continue
			}
			if c := r.conns[ev.Fd]; c != nil {
				r.ready(c, ev.Events)
			}
		}
		if r.commands() {
			r.shutdown()
			return
		}
		if now := r.p.now(); now >= nextSweep {
			r.sweep(now)
			nextSweep = now + int64(sweepEvery)
		}
	}
}

// commands runs the queued commands. It reports whether run must stop.
func (r *reactor) commands() (stop bool) {
	r.mu.Lock()
	q := r.queue
	r.queue, r.spare = r.spare, nil
	r.woken = false
	stop = r.stopping
	r.mu.Unlock()
	for i := range q {
		cmd := q[i]
		q[i] = command{}
		c := cmd.c
		switch cmd.op {
		case cmdDial:
			r.dial(c)
		case cmdClose:
			if c.status.Load() == stOpen {
				r.sendClose(c, closeNormal)
			}
			r.end(c, 0, ErrClosed, false)
		case cmdAbort:
			r.end(c, 0, ErrClosed, true)
		case cmdSend:
			if c.status.Load() == stOpen {
				r.write(c, cmd.msg)
				r.trim(c)
			}
		}
	}
	if cap(q) <= 4096 { // keep a burst's queue from pinning memory
		r.spare = q[:0]
	}
	return stop
}

// shutdown closes every connection and the reactor's descriptors. Dials
// queued until then fail with ErrClosed.
func (r *reactor) shutdown() {
	r.mu.Lock()
	r.stopped = true
	q := r.queue
	r.queue = nil
	syscall.Close(r.wakeW)
	r.mu.Unlock()
	for _, cmd := range q {
		if cmd.op == cmdDial {
			r.end(cmd.c, 0, ErrClosed, false)
		}
	}
	for _, c := range r.conns {
		if c.status.Load() == stOpen {
			r.sendClose(c, closeNormal)
		}
		r.end(c, 0, ErrClosed, false)
	}
	clear(r.hs)
	syscall.Close(r.wakeR)
	syscall.Close(r.epfd)
}

// dial creates c's socket and starts the TCP connect.
func (r *reactor) dial(c *Conn) {
	x := c.x
	fd, err := syscall.Socket(r.p.family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		r.end(c, 0, err, false)
		return
	}
	c.fd = int32(fd)
	if err := r.connect(fd, x); err != nil {
		r.end(c, 0, err, false)
		return
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT, Fd: c.fd}
	if err := syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		r.end(c, 0, err, false)
		return
	}
	r.conns[c.fd] = c
	c.flags |= flagOut
	c.status.Store(stConnecting)
	r.hs = append(r.hs, c)
}

// connect binds fd to the source address, if any, and starts connecting.
func (r *reactor) connect(fd int, x *ext) error {
	if x.local.IsValid() {
		var sa syscall.Sockaddr
		switch {
		case x.local.Is4() && r.p.family == syscall.AF_INET:
			r.local4.Addr = x.local.As4()
			sa = &r.local4
		case x.local.Is6() && r.p.family == syscall.AF_INET6:
			r.local6.Addr = x.local.As16()
			sa = &r.local6
		default:
			return fmt.Errorf("lean: source address %v and server %v differ in family", x.local, r.p.cfg.Addr)
		}
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1); err != nil {
			return err
		}
		if err := syscall.Bind(fd, sa); err != nil {
			return err
		}
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		return err
	}
	switch err := syscall.Connect(fd, r.raddr); err {
	case nil, syscall.EINPROGRESS:
		return nil
	case syscall.EAGAIN:
		return syscall.EADDRNOTAVAIL // TCP: no free local port
	default:
		return err
	}
}

// ready handles epoll events for c.
func (r *reactor) ready(c *Conn, events uint32) {
	if c.status.Load() == stConnecting {
		if events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
			return
		}
		soerr, err := syscall.GetsockoptInt(int(c.fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err == nil && soerr != 0 {
			err = syscall.Errno(soerr)
		}
		if err != nil {
			r.end(c, 0, err, false)
			return
		}
		c.status.Store(stUpgrading)
		req := c.x.req
		c.x.req = nil
		if r.write(c, req) && len(c.x.out) == 0 {
			r.watch(c, false)
		}
		return
	}
	if events&syscall.EPOLLOUT != 0 {
		if !r.flush(c) {
			return
		}
	}
	if events&(syscall.EPOLLIN|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
		r.read(c)
	}
}

// read reads once from c and handles what came.
func (r *reactor) read(c *Conn) {
	n, err := syscall.Read(int(c.fd), r.buf)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return
	case err != nil:
		r.end(c, 0, err, false)
		return
	case n == 0:
		r.end(c, 0, io.EOF, false)
		return
	}
	r.bytesIn.Add(int64(n))
	data := r.buf[:n]
	if c.status.Load() == stUpgrading {
		r.response(c, data)
	} else {
		r.input(c, data)
	}
	r.trim(c)
}

// response handles bytes of the HTTP response to the upgrade; what follows
// its head is the websocket stream.
func (r *reactor) response(c *Conn, data []byte) {
	x := c.x
	head := data
	if x.resp != nil {
		x.resp = append(x.resp, data...)
		head = x.resp
	}
	i := bytes.Index(head, []byte("\r\n\r\n"))
	if i < 0 {
		if len(head) > maxResponseHead {
			r.end(c, 0, fmt.Errorf("%w: response head over %d bytes", errBadResponse, maxResponseHead), false)
		} else if x.resp == nil {
			x.resp = append(make([]byte, 0, 2*len(data)), data...)
		}
		return
	}
	rest := head[i+4:]
	status, err := checkResponse(head[:i+4], x.accept[:], protocol.Subprotocol)
	x.resp = nil
	switch {
	case err != nil:
		r.end(c, 0, err, false)
		return
	case status != 101:
		r.end(c, 0, &UpgradeError{Status: status}, false)
		return
	}
	c.status.Store(stHello)
	if len(rest) > 0 {
		r.input(c, rest)
	}
}

// input handles websocket bytes: whole frames now, the rest kept in
// x.pend until the next read completes it.
func (r *reactor) input(c *Conn, in []byte) {
	data := in
	if c.x != nil && c.x.pend != nil {
		c.x.pend = append(c.x.pend, in...)
		data = c.x.pend
	}
	whole := len(data)
	need := 0
	for len(data) > 0 {
		h, ok, err := parseHeader(data, r.p.maxFrame)
		if err != nil {
			r.fail(c, err)
			return
		}
		if !ok {
			break
		}
		if h.total > len(data) {
			need = h.total
			break
		}
		if !r.frame(c, h, data[h.hlen:h.total]) {
			return
		}
		data = data[h.total:]
	}
	x := c.x
	switch {
	case len(data) == 0:
		if x != nil {
			x.pend = nil
		}
	case x != nil && x.pend != nil && len(data) == whole:
		// Nothing consumed: x.pend already holds exactly the remainder.
	default:
		if x == nil {
			x = &ext{}
			c.x = x
		}
		x.pend = append(make([]byte, 0, max(need, len(data))), data...)
	}
}

// fail ends c for a bad frame, telling the server why with a close frame.
func (r *reactor) fail(c *Conn, err error) {
	code := closeProtocol
	if errors.Is(err, ErrTooLarge) {
		code = closeTooLarge
	}
	r.sendClose(c, code)
	r.end(c, 0, err, false)
}

// frame handles one whole frame. It reports whether c is still open.
func (r *reactor) frame(c *Conn, h header, payload []byte) bool {
	switch h.op {
	case opText, opBinary:
		if c.flags&flagFrag != 0 {
			r.fail(c, fmt.Errorf("%w: new message inside a fragmented one", ErrProtocol))
			return false
		}
		if !h.fin {
			c.flags |= flagFrag
		}
		return r.message(c, h.op, h.fin, payload)
	case opContinuation:
		if c.flags&flagFrag == 0 {
			r.fail(c, fmt.Errorf("%w: continuation without a message", ErrProtocol))
			return false
		}
		if h.fin {
			c.flags &^= flagFrag
		}
		return true
	case opPing:
		r.pings.Add(1)
		return r.writeControl(c, opPong, payload)
	case opClose:
		code := closeCode(payload)
		r.sendClose(c, code) // the echo
		var err error
		if c.status.Load() != stOpen {
			err = &CloseError{Code: code}
		}
		r.end(c, code, err, false)
		return false
	}
	return true // opPong
}

// Parley frame types the reactor acts on.
var (
	typeHello = []byte("hello")
	typePing  = []byte("ping")
	typeError = []byte("error")
	pongFrame = []byte(`{"type":"pong"}`)
)

// message handles the first (or only) frame of a data message: before
// hello it looks for hello; afterwards it answers pings, counts the rest
// and hands it to Config.OnMessage. Only an unfragmented text message is
// split into its frames; of a fragmented one only the start is looked at.
// Frames after hello in the same payload are handled after established,
// so after Dial's done returned.
func (r *reactor) message(c *Conn, op byte, fin bool, payload []byte) bool {
	onMessage := r.p.cfg.OnMessage
	for len(payload) > 0 {
		f := payload
		if fin && op == opText {
			if i := bytes.IndexByte(payload, '\n'); i >= 0 {
				f, payload = payload[:i], payload[i+1:]
			} else {
				payload = nil
			}
		} else {
			payload = nil
		}
		if f = bytes.TrimSpace(f); len(f) == 0 {
			continue
		}
		typ := frameType(f)
		if c.status.Load() == stHello {
			switch {
			case op == opText && bytes.Equal(typ, typeHello):
				r.established(c)
			case op == opText && bytes.Equal(typ, typeError):
				// A refusal may be explained before the close that follows.
			default:
				r.fail(c, fmt.Errorf("%w: first frame is %.40q, want hello", ErrProtocol, f))
				return false
			}
			continue
		}
		if fin && op == opText && bytes.Equal(typ, typePing) {
			r.pings.Add(1)
			if !r.writeText(c, pongFrame) {
				return false
			}
			continue
		}
		r.events.Add(1)
		if onMessage != nil && fin && op == opText {
			onMessage(c, f)
		}
	}
	return c.status.Load() != stEnded
}

// established marks c open after hello and reports it to its dial.
func (r *reactor) established(c *Conn) {
	c.status.Store(stOpen)
	r.p.connecting.Add(-1)
	r.p.open.Add(1)
	x := c.x
	done := x.done
	x.done, x.req, x.resp = nil, nil, nil
	done(c, nil)
}

// writeText writes a small masked text message.
func (r *reactor) writeText(c *Conn, text []byte) bool {
	r.wbuf = appendFrame(r.wbuf[:0], opText, text, rand.Uint32())
	return r.write(c, r.wbuf)
}

// writeControl writes a masked control frame.
func (r *reactor) writeControl(c *Conn, op byte, payload []byte) bool {
	r.wbuf = appendFrame(r.wbuf[:0], op, payload, rand.Uint32())
	return r.write(c, r.wbuf)
}

// sendClose writes a close frame with code (none for closeNoStatus) right
// before c's socket is closed: best effort, nothing is kept for later, and
// nothing if earlier bytes are still waiting for the socket.
func (r *reactor) sendClose(c *Conn, code int) {
	if c.fd < 0 || (c.x != nil && len(c.x.out) > 0) {
		return
	}
	var payload []byte
	if code != closeNoStatus {
		payload = []byte{byte(code >> 8), byte(code)}
	}
	r.wbuf = appendFrame(r.wbuf[:0], opClose, payload, rand.Uint32())
	_, _ = syscall.Write(int(c.fd), r.wbuf)
}

// write writes b to c's socket, keeping what the socket does not take (b
// may be reused after write returns). It reports whether c is still open.
func (r *reactor) write(c *Conn, b []byte) bool {
	if c.fd < 0 {
		return false
	}
	if c.x != nil && len(c.x.out) > 0 {
		if len(c.x.out)+len(b) > maxOut {
			r.end(c, 0, syscall.ENOBUFS, false)
			return false
		}
		c.x.out = append(c.x.out, b...)
		return true
	}
	n, err := syscall.Write(int(c.fd), b)
	if err != nil && err != syscall.EAGAIN && err != syscall.EINTR {
		r.end(c, 0, err, false)
		return false
	}
	n = max(n, 0)
	if n == len(b) {
		return true
	}
	if c.x == nil {
		c.x = &ext{}
	}
	c.x.out = append(c.x.out, b[n:]...)
	r.watch(c, true)
	return c.fd >= 0
}

// flush writes c's pending bytes after EPOLLOUT. It reports whether c is
// still open.
func (r *reactor) flush(c *Conn) bool {
	x := c.x
	if x == nil || len(x.out) == 0 {
		r.watch(c, false)
		return c.fd >= 0
	}
	n, err := syscall.Write(int(c.fd), x.out)
	if err != nil && err != syscall.EAGAIN && err != syscall.EINTR {
		r.end(c, 0, err, false)
		return false
	}
	n = max(n, 0)
	if n < len(x.out) {
		x.out = append(x.out[:0], x.out[n:]...)
		return true
	}
	x.out = nil
	r.watch(c, false)
	r.trim(c)
	return c.fd >= 0
}

// watch registers or unregisters c for EPOLLOUT.
func (r *reactor) watch(c *Conn, out bool) {
	if c.fd < 0 || (c.flags&flagOut != 0) == out {
		return
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: c.fd}
	if out {
		ev.Events |= syscall.EPOLLOUT
		c.flags |= flagOut
	} else {
		c.flags &^= flagOut
	}
	if err := syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_MOD, int(c.fd), &ev); err != nil {
		r.end(c, 0, err, false)
	}
}

// trim drops c's ext once it holds nothing.
func (r *reactor) trim(c *Conn) {
	if x := c.x; x != nil && x.done == nil && x.pend == nil && len(x.out) == 0 {
		c.x = nil
	}
}

// end closes c's socket, if any, and reports the end once: to the dial's
// done before hello, to OnClose after. abort closes with SO_LINGER 0 (a
// reset).
func (r *reactor) end(c *Conn, code int, err error, abort bool) {
	prev := c.status.Load()
	if prev == stEnded {
		return
	}
	if c.fd >= 0 {
		fd := int(c.fd)
		if abort {
			_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
		}
		delete(r.conns, c.fd)
		syscall.Close(fd) // also leaves epfd
		c.fd = -1
	}
	c.status.Store(stEnded)
	x := c.x
	c.x = nil
	r.p.count(code, err)
	if prev != stOpen {
		r.p.connecting.Add(-1)
		if x != nil && x.done != nil {
			x.done(c, err)
		}
		return
	}
	r.p.open.Add(-1)
	r.p.ended.Add(1)
	if r.p.cfg.OnClose != nil {
		r.p.cfg.OnClose(c, code, err)
	}
}

// sweep fails the handshakes past their deadline. r.hs is in deadline
// order (up to the jitter between concurrent Dial calls), so it stops at
// the first live handshake still in time.
func (r *reactor) sweep(now int64) {
	for r.hsHead < len(r.hs) {
		c := r.hs[r.hsHead]
		if st := c.status.Load(); st < stOpen && c.x.deadline > now {
			break
		}
		r.hs[r.hsHead] = nil
		r.hsHead++
		if c.status.Load() < stOpen {
			r.end(c, 0, ErrTimeout, false)
		}
	}
	switch {
	case r.hsHead == len(r.hs):
		if cap(r.hs) > 4096 {
			r.hs = nil
		} else {
			r.hs = r.hs[:0]
		}
		r.hsHead = 0
	case r.hsHead > 1024 && 2*r.hsHead > len(r.hs):
		n := copy(r.hs, r.hs[r.hsHead:])
		clear(r.hs[n:])
		r.hs = r.hs[:n]
		r.hsHead = 0
	}
}
