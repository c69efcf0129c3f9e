package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/coder/websocket"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/hub"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// Limits on misbehaving clients, per connection.
const (
	// maxBadFrames malformed frames in a row close the connection with
	// CloseProtocolError.
	maxBadFrames = 20
	// maxLimited rate-limited frames in a row close it with CloseRateLimited.
	maxLimited = 100
	// requestTimeout bounds the hub work for one frame.
	requestTimeout = 10 * time.Second
)

// readLoop owns the socket's reads. It handles frames in order (a device's
// sends are acked in the order it sent them) and, on exit, unregisters the
// session and waits for its writer.
//
// The frame messages are decoded into is made at the first message that
// needs one: a connection that only connects, pongs and leaves (most of a
// reconnect storm) never makes one.
func (sess *session) readLoop() {
	defer sess.endRead()
	_ = growReadStack(0)
	var f *protocol.Frame
	for {
		typ, data, err := sess.conn.Read(context.Background())
		if err != nil {
			sess.logReadEnd(err)
			return
		}
		f = sess.onMessage(typ, data, f)
	}
}

// readStack is about what an idle read loop uses, blocked in Read.
const readStack = 2 << 10

// growReadStack makes a read loop's stack hold an idle Read (4 KiB, what
// the first Read grows it to from the smallest starting size) while the
// stack is shallow. A profile of a reconnect storm puts growing here at
// half the cost of growing in the first Read, where the library's read
// path is on the stack.
//
// It returns a byte of the padding (see growStack).
//
//go:noinline
func growReadStack(i int) byte {
	var pad [readStack]byte
	return pad[i%len(pad)]
}

// endRead ends the session when its read loop returns or panics: a bug in
// handling one client's frame must not take the node down, so a panic is
// logged with its stack and closes that connection with CloseInternal.
func (sess *session) endRead() {
	s := sess.srv
	defer s.wg.Done()
	if r := recover(); r != nil {
		s.log.Error("panic serving a connection", "user", sess.user, "device", sess.dev, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		s.m.errors.WithLabelValues(protocol.CodeInternal).Inc()
		_ = sess.conn.Close(websocket.StatusCode(protocol.CloseInternal), "internal error")
	}
	s.hub.Unregister(sess)
	s.conns.remove(sess)
	s.users.release(sess.user)
	sess.stopWriter()
	_ = sess.conn.CloseNow()
	s.m.connected.Dec()
}

// onMessage handles one websocket message. f is the frame to decode into,
// nil until a message needs one; it is returned for the next message.
func (sess *session) onMessage(typ websocket.MessageType, data []byte, f *protocol.Frame) *protocol.Frame {
	s := sess.srv
	now := s.cfg.Now()
	sess.lastRead.Store(now.UnixNano())
	if typ != websocket.MessageText {
		sess.bad("", protocol.Errorf(protocol.CodeBadFrame, "binary messages are not part of %s", protocol.Subprotocol))
		return f
	}
	if isPong(data) {
		// The only traffic of an idle connection: skip the JSON
		// decoder, whose deep call stack would otherwise grow this
		// goroutine's stack (kept until a GC shrinks it) on every
		// heartbeat of every idle connection.
		return f
	}
	if f == nil {
		f = new(protocol.Frame)
	}
	err := protocol.Split(data, func(b []byte) error {
		if perr := protocol.Decode(b, f); perr != nil {
			sess.bad(truncate(f.ID, protocol.MaxIDLen), perr)
			return nil
		}
		sess.badFrames = 0
		if f.Type == protocol.TypePong {
			return nil
		}
		if !sess.admit(f, now) {
			return nil
		}
		s.m.framesIn.WithLabelValues(frameLabel(f.Type)).Inc()
		sess.handle(f)
		return nil
	})
	if err != nil {
		var perr *protocol.Error
		if errors.As(err, &perr) {
			sess.bad("", perr)
		}
	}
	return f
}

var pongFrame = []byte(`{"type":"pong"}`)

// isPong reports whether a websocket message is exactly one pong frame as
// clients send it. Other spellings take the general path.
func isPong(b []byte) bool { return bytes.Equal(bytes.TrimSpace(b), pongFrame) }

func (sess *session) logReadEnd(err error) {
	code := websocket.CloseStatus(err)
	switch {
	case code == websocket.StatusMessageTooBig:
		sess.srv.m.errors.WithLabelValues(protocol.CodeTooLarge).Inc()
		sess.srv.log.Info("client sent an oversize message", "user", sess.user, "device", sess.dev)
	case code == -1 && !sess.closed.Load():
		sess.srv.log.Debug("connection lost", "user", sess.user, "device", sess.dev, "err", err)
	}
}

// bad answers a malformed frame and closes the connection after too many
// in a row.
func (sess *session) bad(id string, err *protocol.Error) {
	sess.srv.log.Info("bad frame", "user", sess.user, "device", sess.dev, "code", err.Code, "err", err.Message)
	sess.badFrames++
	if sess.badFrames >= maxBadFrames {
		// The error frames already queued go out before the close.
		sess.srv.m.errors.WithLabelValues(err.Code).Inc()
		sess.closeAfterFlush(protocol.AppendError(nil, id, err), protocol.CloseProtocolError, "too many malformed frames")
		return
	}
	sess.replyErr(id, err)
}

// admit applies the connection's and the user's rate limits.
func (sess *session) admit(f *protocol.Frame, now time.Time) bool {
	s := sess.srv
	ok, wait := sess.frames.take(now, s.cfg.FrameRate, s.cfg.FrameBurst)
	if ok {
		ok, wait = s.users.take(sess.user, now)
	}
	if ok {
		sess.limited = 0
		return true
	}
	sess.limited++
	s.m.rateLimited.Inc()
	e := &protocol.Error{Code: protocol.CodeRateLimited, Message: "slow down", RetryAfter: wait.Milliseconds() + 1}
	if sess.limited >= maxLimited {
		s.m.errors.WithLabelValues(e.Code).Inc()
		sess.closeAfterFlush(protocol.AppendError(nil, f.ID, e), protocol.CloseRateLimited, "rate limit exceeded persistently")
		return false
	}
	sess.replyErr(f.ID, e)
	return false
}

func (sess *session) actor() hub.Actor {
	return hub.Actor{User: sess.user, Device: sess.dev, Session: sess.id}
}

// handle runs one admitted frame.
func (sess *session) handle(f *protocol.Frame) {
	s := sess.srv
	h := s.hub
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	a := sess.actor()
	var err error
	switch f.Type {
	case protocol.TypeSend:
		var ack protocol.Ack
		ack, err = h.Send(ctx, a, hub.SendRequest{Conv: f.Conv, To: f.To, CMID: f.CMID, Body: f.Body, Meta: f.Meta})
		if err == nil {
			ack.ID = f.ID
			sess.reply(protocol.AppendAck(nil, &ack))
		}
	case protocol.TypeSync:
		var res protocol.Synced
		res, err = h.Sync(ctx, a, f.Since, f.Limit)
		if err == nil {
			res.ID = f.ID
			sess.reply(protocol.Marshal(res))
		}
	case protocol.TypeHistory:
		var ms []protocol.Message
		var more bool
		ms, more, err = h.History(ctx, a, f.Conv, storage.Page{Before: f.Before, After: f.After, Limit: f.Limit})
		if err == nil {
			if ms == nil {
				ms = []protocol.Message{}
			}
			sess.reply(protocol.Marshal(protocol.HistoryResult{Type: protocol.TypeResult, ID: f.ID, Messages: ms, More: more}))
		}
	case protocol.TypeReceipt:
		err = h.Receipt(ctx, a, f.Conv, f.Kind, f.Seq)
		sess.ok(f, err)
	case protocol.TypeTyping:
		err = h.Typing(ctx, a, f.Conv, f.State)
		sess.ok(f, err)
	case protocol.TypeWatch:
		var ps []protocol.Presence
		ps, err = h.Watch(ctx, sess, f.Users)
		if err == nil {
			sess.reply(protocol.Marshal(protocol.Result{Type: protocol.TypeResult, ID: f.ID, Presence: ps}))
		}
	case protocol.TypeUnwatch:
		h.Unwatch(sess, f.Users)
		sess.ok(f, nil)
	case protocol.TypeSubscribe:
		err = sess.checkTopic(f.Topic, false)
		if err == nil {
			err = h.Subscribe(sess, f.Topic)
		}
		if err == nil {
			// The result precedes the topic's last value.
			sess.ok(f, nil)
			h.OfferLast(sess, f.Topic)
		}
	case protocol.TypeUnsub:
		h.Unsubscribe(sess, f.Topic)
		sess.ok(f, nil)
	case protocol.TypePublish:
		err = sess.checkTopic(f.Topic, true)
		if err == nil {
			err = h.Publish(a, f.Topic, f.Data)
			sess.ok(f, err)
		}
	case protocol.TypeRefresh:
		err = sess.refresh(f)
	case protocol.TypeCreate:
		var c protocol.Conversation
		c, err = h.Create(ctx, a, f.Title, f.Members)
		if err == nil {
			sess.reply(protocol.Marshal(protocol.Result{Type: protocol.TypeResult, ID: f.ID, Conv: &c}))
		}
	case protocol.TypeRename:
		err = h.Rename(ctx, a, f.Conv, f.Title)
		sess.ok(f, err)
	case protocol.TypeAdd:
		err = h.AddMembers(ctx, a, f.Conv, memberList(f), "")
		sess.ok(f, err)
	case protocol.TypeRemove:
		err = h.RemoveMembers(ctx, a, f.Conv, memberList(f))
		sess.ok(f, err)
	case protocol.TypeLeave:
		err = h.Leave(ctx, a, f.Conv)
		sess.ok(f, err)
	case protocol.TypeConvs:
		var cs []protocol.Conversation
		cs, err = h.Conversations(ctx, sess.user)
		if err == nil {
			if cs == nil {
				cs = []protocol.Conversation{}
			}
			sess.reply(protocol.Marshal(protocol.ConvsResult{Type: protocol.TypeResult, ID: f.ID, Convs: cs}))
		}
	case protocol.TypeDevice:
		switch {
		case f.State == "remove":
			err = h.RemoveDevice(ctx, sess.user, sess.dev)
		case f.Push != nil:
			err = h.PutDevice(ctx, a, *f.Push)
		default:
			err = protocol.Errorf(protocol.CodeInvalid, `device needs push, or state "remove"`)
		}
		sess.ok(f, err)
	case protocol.TypePing:
		sess.reply(pongFrame) // shared bytes, never modified
	default:
		err = protocol.Errorf(protocol.CodeUnknownType, "unknown frame type %q", truncate(f.Type, 32))
	}
	if err != nil {
		var perr *protocol.Error
		if !errors.As(err, &perr) {
			s.log.Error("unexpected hub error", "type", f.Type, "err", err)
			perr = protocol.Errorf(protocol.CodeInternal, "internal error")
		}
		sess.replyErr(f.ID, perr)
	}
}

// ok answers a request that has no payload, when it carried an id.
func (sess *session) ok(f *protocol.Frame, err error) {
	if err != nil || f.ID == "" {
		return
	}
	sess.reply(protocol.Marshal(protocol.Result{Type: protocol.TypeResult, ID: f.ID}))
}

func (sess *session) checkTopic(topic string, publish bool) error {
	if err := validTopic(topic); err != nil {
		return err
	}
	c := sess.topics.Load()
	allowed := c != nil && c.CanSubscribe(topic)
	if publish {
		allowed = c != nil && c.CanPublish(topic)
	}
	if !allowed {
		return protocol.Errorf(protocol.CodeForbidden, "token does not allow this topic")
	}
	return nil
}

// refresh replaces the session's token with a newer one for the same user
// and device.
func (sess *session) refresh(f *protocol.Frame) error {
	c, err := sess.srv.cfg.Verifier.Verify(f.Token)
	if err != nil {
		sess.srv.log.Info("refresh refused", "user", sess.user, "err", err)
		if errors.Is(err, auth.ErrExpired) {
			return protocol.Errorf(protocol.CodeTokenExpired, "token expired")
		}
		return protocol.Errorf(protocol.CodeUnauthorized, "token refused")
	}
	dev := c.Device
	if dev == "" {
		dev = "default"
	}
	if c.User() != sess.user || dev != sess.dev || c.Service {
		return protocol.Errorf(protocol.CodeUnauthorized, "token is for another user or device")
	}
	sess.setClaims(c)
	sess.reply(protocol.Marshal(protocol.Result{Type: protocol.TypeResult, ID: f.ID, TokenExp: sess.exp.Load()}))
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// frameLabel bounds the label values of the frames metric.
func frameLabel(t string) string {
	switch t {
	case protocol.TypeSend, protocol.TypeSync, protocol.TypeHistory, protocol.TypeReceipt, protocol.TypeTyping,
		protocol.TypeWatch, protocol.TypeUnwatch, protocol.TypeSubscribe, protocol.TypeUnsub, protocol.TypePublish,
		protocol.TypeRefresh, protocol.TypeCreate, protocol.TypeRename, protocol.TypeAdd, protocol.TypeRemove,
		protocol.TypeLeave, protocol.TypeConvs, protocol.TypeDevice, protocol.TypePing:
		return t
	}
	return "unknown"
}

func validTopic(topic string) error {
	if err := auth.ValidTopic(topic); err != nil {
		return protocol.Errorf(protocol.CodeInvalid, "invalid topic: %v", err)
	}
	return nil
}

// memberList is the users of an add or remove frame: "members" as
// documented, "users" accepted too.
func memberList(f *protocol.Frame) []string {
	if len(f.Members) > 0 {
		return f.Members
	}
	return f.Users
}
