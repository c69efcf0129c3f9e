package gateway

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/hub"
	"github.com/parley-im/parley/presence"
	"github.com/parley-im/parley/protocol"
)

// session is one websocket connection. Its size matters: an idle session
// is the per-connection cost of the server, so pending state is allocated
// only when something is pending.
type session struct {
	srv  *Server // static
	conn *websocket.Conn
	raw  net.Conn // the socket under conn; write deadlines are set on it
	id   uint64   // static; also the presence epoch (grows across restarts)
	user string   // static
	dev  string   // static
	ip   string   // static; for the per-IP connection count

	// topics holds the token's claims only when it grants live-topic
	// rights (nil otherwise: a chat-only session keeps no claims), and exp
	// its expiry in unix seconds (0: none). Both are replaced by refresh.
	topics   atomic.Pointer[auth.Claims]
	exp      atomic.Int64
	lastRead atomic.Int64 // unix ns of the last frame read
	lastPing atomic.Int64 // unix ns of the last server ping

	mu sync.Mutex
	// queue holds durable frames not yet written; queueBytes their size.
	queue      [][]byte // guarded by mu
	queueBytes int      // guarded by mu
	// eph holds the newest pending ephemeral frame per key.
	eph     ephSet // guarded by mu
	writing bool   // guarded by mu: a writer goroutine runs
	closing bool   // guarded by mu: no more frames are queued
	// closeCode, when set, closes the connection once the queue is
	// written (drain: the bye frame goes out first).
	closeCode   int            // guarded by mu
	closeReason string         // guarded by mu
	closed      atomic.Bool    // closeSession ran
	writer      sync.WaitGroup // the on-demand writer

	// owned by the read loop
	frames    bucket
	badFrames int
	limited   int
}

var _ hub.Session = (*session)(nil)

func (s *session) ID() uint64     { return s.id }
func (s *session) User() string   { return s.user }
func (s *session) Device() string { return s.dev }

// Deliver queues a durable frame. A full queue means the client cannot keep
// up: it is disconnected (it will resume with sync), never waited for.
func (s *session) Deliver(frame []byte) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	if len(s.queue) >= s.srv.cfg.QueueFrames || s.queueBytes+len(frame) > s.srv.cfg.QueueBytes {
		s.closing = true
		s.queue, s.queueBytes, s.eph = nil, 0, ephSet{}
		s.mu.Unlock()
		s.srv.m.slowConsumers.Inc()
		s.srv.closeSession(s, protocol.CloseSlowConsumer, "slow consumer")
		return
	}
	s.queue = append(s.queue, frame)
	s.queueBytes += len(frame)
	start := s.startWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// Offer queues an ephemeral frame, replacing a pending one with the same
// key: a slow client gets the newest value, never a backlog.
func (s *session) Offer(key string, frame []byte) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	replaced, evicted := s.eph.put(key, frame, s.srv.cfg.MaxEphemeral)
	if replaced {
		s.srv.m.ephemeralReplaced.Inc()
	}
	if evicted {
		s.srv.m.ephemeralDropped.Inc()
	}
	start := s.startWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// PresenceChanged implements presence.Watcher.
func (s *session) PresenceChanged(st presence.Status) {
	s.Offer(s.srv.hub.EncodedPresence(st))
}

// startWriterLocked reports whether the caller must start the writer.
func (s *session) startWriterLocked() bool {
	if s.writing {
		return false
	}
	s.writing = true
	s.writer.Add(1)
	return true
}

// pendingLocked reports whether anything waits to be written.
func (s *session) pendingLocked() bool { return len(s.queue) > 0 || s.eph.len() > 0 }

// takeLocked removes what is pending: durable frames first, in order, then
// the ephemeral values in arrival order. A lone frame (the common case of
// fan-out: one event for an idle connection) comes back as one, without
// building a list.
func (s *session) takeLocked() (one []byte, frames [][]byte) {
	if len(s.queue) == 0 && s.eph.len() == 1 && s.eph.v0 != nil {
		one = s.eph.v0
		s.eph = ephSet{}
		return one, nil
	}
	if len(s.queue) == 1 && s.eph.len() == 0 {
		one = s.queue[0]
		s.queue, s.queueBytes = nil, 0
		return one, nil
	}
	frames = s.eph.appendTo(s.queue)
	s.queue, s.queueBytes, s.eph = nil, 0, ephSet{}
	return nil, frames
}

// ephSet holds the newest pending ephemeral frame per key, in the arrival
// order of the keys. The first key is kept inline, so the common case (one
// topic, a ping) allocates nothing; a map and an order list are made only
// for a second distinct key. The zero value is empty.
type ephSet struct {
	k0    string
	v0    []byte            // nil: slot empty (frames are never nil)
	more  map[string][]byte // keys after the first
	order []string          // arrival order of the keys in more
}

func (e *ephSet) len() int {
	n := len(e.order)
	if e.v0 != nil {
		n++
	}
	return n
}

// put stores frame under key, replacing a pending frame with that key. A
// new key beyond max evicts the oldest one.
func (e *ephSet) put(key string, frame []byte, max int) (replaced, evicted bool) {
	if e.v0 != nil && e.k0 == key {
		e.v0 = frame
		return true, false
	}
	if _, ok := e.more[key]; ok {
		e.more[key] = frame
		return true, false
	}
	if e.len() >= max {
		evicted = true
		if e.v0 != nil {
			e.k0, e.v0 = "", nil
		} else {
			delete(e.more, e.order[0])
			e.order = e.order[1:]
		}
	}
	if e.len() == 0 {
		e.k0, e.v0 = key, frame
		e.more, e.order = nil, nil
		return false, evicted
	}
	if e.more == nil {
		e.more = make(map[string][]byte, 4)
	}
	e.more[key] = frame
	e.order = append(e.order, key)
	return false, evicted
}

// appendTo appends the pending frames, oldest key first.
func (e *ephSet) appendTo(frames [][]byte) [][]byte {
	if e.v0 != nil {
		frames = append(frames, e.v0)
	}
	for _, k := range e.order {
		frames = append(frames, e.more[k])
	}
	return frames
}

// maxBatch is the largest websocket message the writer builds from queued
// frames; a single larger frame is written alone.
const maxBatch = 32 << 10

// writeLoop drains the queue: it joins what is pending into websocket
// messages of up to maxBatch bytes (frames separated by '\n'), writes each
// once, and exits when nothing is left.
func (s *session) writeLoop() {
	defer s.writer.Done()
	var buf []byte
	for {
		s.mu.Lock()
		if !s.pendingLocked() {
			s.writing = false
			code, reason := s.closeCode, s.closeReason
			s.closeCode = 0
			if code != 0 {
				s.closing = true
			}
			s.mu.Unlock()
			if code != 0 {
				s.srv.closeSession(s, code, reason)
			}
			return
		}
		one, frames := s.takeLocked()
		s.mu.Unlock()

		if one != nil {
			if !s.writeOrClose(one) {
				return
			}
			s.srv.m.framesOut.Inc()
			continue
		}
		for len(frames) > 0 {
			buf = buf[:0]
			n := 0
			for n < len(frames) && (n == 0 || len(buf)+1+len(frames[n]) <= maxBatch) {
				if n > 0 {
					buf = append(buf, '\n')
				}
				buf = append(buf, frames[n]...)
				n++
			}
			frames = frames[n:]
			if !s.writeOrClose(buf) {
				return
			}
			s.srv.m.framesOut.Add(float64(n))
		}
		if cap(buf) > 64<<10 {
			buf = nil // do not keep a huge buffer for the session's life
		}
	}
}

// writeOrClose writes b; on failure it stops the session's queue, cuts the
// connection (the read loop then ends the session) and reports false. The
// caller, the writer, must then return.
func (s *session) writeOrClose(b []byte) bool {
	if err := s.write(b); err != nil {
		s.srv.m.writeErrors.Inc()
		s.mu.Lock()
		s.closing = true
		s.queue, s.queueBytes, s.eph = nil, 0, ephSet{}
		s.writing = false
		s.mu.Unlock()
		_ = s.conn.CloseNow()
		return false
	}
	return true
}

// write writes one websocket message within the write timeout. The
// deadline is set on the socket rather than through a context: a context
// with a timeout costs allocations and a timer registration per write, and
// fan-out writes are the hottest path of the server.
func (s *session) write(b []byte) error {
	if err := s.raw.SetWriteDeadline(time.Now().Add(s.srv.cfg.WriteTimeout)); err != nil {
		return err
	}
	err := s.conn.Write(context.Background(), websocket.MessageText, b)
	// Clear it again: the websocket library writes pongs and close frames
	// on its own, and a stale deadline would make those fail.
	_ = s.raw.SetWriteDeadline(time.Time{})
	return err
}

// stopWriter stops queueing and waits for the writer to finish what it is
// writing. Called by the read loop on exit.
func (s *session) stopWriter() {
	s.mu.Lock()
	s.closing = true
	s.queue, s.queueBytes, s.eph = nil, 0, ephSet{}
	s.mu.Unlock()
	s.writer.Wait()
}

// closeAfterFlush queues frame, then closes with code once everything
// queued before it is written.
func (s *session) closeAfterFlush(frame []byte, code int, reason string) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, frame)
	s.queueBytes += len(frame)
	s.closeCode, s.closeReason = code, reason
	s.closing = true // nothing more is queued; the writer drains what is
	start := s.startWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// reply queues the answer to a request on this session.
func (s *session) reply(frame []byte) { s.Deliver(frame) }

func (s *session) replyErr(id string, err *protocol.Error) {
	s.srv.m.errors.WithLabelValues(err.Code).Inc()
	s.Deliver(protocol.AppendError(nil, id, err))
}

// setClaims keeps what the session needs of a verified token.
func (s *session) setClaims(c *auth.Claims) {
	if len(c.Topics.Pub) > 0 || len(c.Topics.Sub) > 0 {
		s.topics.Store(c)
	} else {
		s.topics.Store(nil)
	}
	var exp int64
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.Unix()
	}
	s.exp.Store(exp)
}
