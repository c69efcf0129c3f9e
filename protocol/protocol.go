// Package protocol defines Parley's client protocol v1: JSON frames carried
// in websocket text messages under the "parley.v1" subprotocol. It owns the
// frame shapes, their size limits, the error codes and the close codes, and the
// encoders for the hot frames (message, ack, event). docs/protocol.md is the
// user-facing description of the same contract; keep them in step.
//
// One websocket message carries one or more frames separated by '\n' (JSON
// never contains a raw newline), so a writer can batch what is queued into one
// message. Binary websocket messages are reserved for a later compact encoding
// and are refused in v1.
//
// The package must not know about sockets, storage or NATS.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Subprotocol is the websocket subprotocol of this protocol version.
const Subprotocol = "parley.v1"

// Size limits. Every input is bounded.
const (
	// MaxMessage is the largest websocket message a client may send.
	MaxMessage = 64 << 10
	// MaxBody is the largest message body, in bytes.
	MaxBody = 16 << 10
	// MaxMeta is the largest meta object of a message, in bytes.
	MaxMeta = 4 << 10
	// MaxData is the largest live-topic payload, in bytes.
	MaxData = 8 << 10
	// MaxFramesPerMessage bounds how many frames one websocket message may batch.
	MaxFramesPerMessage = 64
	// MaxIDLen bounds request ids, client message ids and conversation ids.
	MaxIDLen = 128
	// MaxListLen bounds user and member lists in one frame.
	MaxListLen = 1000
	// MaxTitle bounds a conversation title, in bytes.
	MaxTitle = 256
)

// Client → server frame types.
const (
	TypeSend      = "send"    // post a message → ack
	TypeSync      = "sync"    // catch up after a disconnect → synced
	TypeHistory   = "history" // one page of a conversation → result
	TypeReceipt   = "receipt" // delivered/read watermark
	TypeTyping    = "typing"  // ephemeral typing indicator
	TypeWatch     = "watch"   // watch users' presence → result, then presence events
	TypeUnwatch   = "unwatch" // stop watching users
	TypeSubscribe = "sub"     // subscribe to a live topic → result, then event
	TypeUnsub     = "unsub"   // unsubscribe from a live topic
	TypePublish   = "pub"     // publish to a live topic → result when id is set
	TypeRefresh   = "refresh" // replace the session's token → result
	TypeCreate    = "create"  // create a group → result
	TypeRename    = "rename"  // rename a group → result
	TypeAdd       = "add"     // add members → result
	TypeRemove    = "remove"  // remove members → result
	TypeLeave     = "leave"   // leave a group → result
	TypeConvs     = "convs"   // list my conversations → result
	TypeDevice    = "device"  // register, update (push) or remove (state "remove") this device's push token → result
	TypePing      = "ping"    // liveness probe (either side) → pong
	TypePong      = "pong"    // answer to ping
)

// Server → client frame types (TypePing and TypePong too).
const (
	TypeHello    = "hello"    // first frame of every session
	TypeAck      = "ack"      // a send is durable
	TypeMessage  = "message"  // a conversation message
	TypeSynced   = "synced"   // the answer to sync
	TypeResult   = "result"   // the answer to a request with an id
	TypeError    = "error"    // a request failed, or a frame was refused
	TypeEvent    = "event"    // a live-topic value
	TypePresence = "presence" // a watched user's presence changed
	TypeMember   = "member"   // membership of a conversation changed
	TypeBye      = "bye"      // the server is going away: reconnect after a delay
)

// Frame is a decoded client frame. Fields not used by a type are ignored.
type Frame struct {
	Type string `json:"type"`
	// ID is an optional client-chosen request id echoed in the reply.
	ID string `json:"id,omitempty"`

	Conv  string          `json:"conv,omitempty"`
	To    string          `json:"to,omitempty"`   // send: peer user of a 1:1 conversation
	CMID  string          `json:"cmid,omitempty"` // send: client message id (idempotency key)
	Body  string          `json:"body,omitempty"`
	Meta  json.RawMessage `json:"meta,omitempty"`
	Seq   uint64          `json:"seq,omitempty"`
	Kind  string          `json:"kind,omitempty"`  // receipt: delivered | read
	State string          `json:"state,omitempty"` // typing: start | stop

	Topic string          `json:"topic,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`

	Token   string   `json:"token,omitempty"`
	Users   []string `json:"users,omitempty"`
	Title   string   `json:"title,omitempty"`
	Members []string `json:"members,omitempty"`

	Before uint64 `json:"before,omitempty"`
	After  uint64 `json:"after,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	// Since maps conversation ids to the highest seq the device holds.
	Since map[string]uint64 `json:"since,omitempty"`

	// Push is the device's push registration (device).
	Push *DevicePush `json:"push,omitempty"`
}

// DevicePush is a device's push registration: where and how to wake it.
type DevicePush struct {
	Platform string   `json:"platform"`          // "ios" (APNs) or "android" (FCM)
	Token    string   `json:"token"`             // the provider's device token
	Topic    string   `json:"topic"`             // app bundle id (APNs topic) / app id
	Sandbox  bool     `json:"sandbox,omitempty"` // APNs development environment
	Locale   string   `json:"locale,omitempty"`  // e.g. "en-GB"
	Muted    []string `json:"muted,omitempty"`   // conversations this device wants no pushes for
	HideText bool     `json:"hide_text,omitempty"`
}

// Error is a protocol error with a stable code, sent as an error frame.
type Error struct {
	Code       string
	Message    string
	RetryAfter int64 // milliseconds; set with CodeRateLimited
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error codes: stable strings clients may switch on.
const (
	CodeBadFrame     = "bad_frame"     // not valid JSON, or a binary message
	CodeUnknownType  = "unknown_type"  // a frame type this server does not know
	CodeTooLarge     = "too_large"     // a field or the frame exceeds its limit
	CodeInvalid      = "invalid"       // a field is missing or malformed
	CodeRateLimited  = "rate_limited"  // slow down; retry_after_ms says when
	CodeUnauthorized = "unauthorized"  // bad token (refresh)
	CodeForbidden    = "forbidden"     // not allowed (role, topic pattern)
	CodeNotMember    = "not_member"    // not a member of the conversation
	CodeNotFound     = "not_found"     // no such conversation
	CodeConflict     = "conflict"      // e.g. creating a conversation that exists
	CodeLimit        = "limit"         // a per-session limit (watches, subscriptions)
	CodeUnavailable  = "unavailable"   // temporarily failing (storage); retry
	CodeInternal     = "internal"      // a bug; retry later
	CodeDraining     = "draining"      // the node is shutting down
	CodeTokenExpired = "token_expired" // refresh token failed: expired
)

// Close codes (websocket close frame status). 4000-4499: the client should
// reconnect (with backoff and jitter); 4500-4999: it must not reconnect
// without fixing something (a new token, a code change). 1009 (message too
// big) is the standard websocket code for an oversize message.
const (
	CloseShutdown       = 4000 // node draining or stopping; reconnect after bye's delay
	CloseSlowConsumer   = 4001 // outbound queue overflowed; reconnect and sync
	CloseIdleTimeout    = 4002 // no frame within the idle timeout
	CloseTokenExpired   = 4003 // token expired without refresh; reconnect with a fresh token
	CloseInternal       = 4004 // server error; reconnect with backoff
	CloseTooManyConns   = 4005 // per-user connection cap reached; back off
	CloseRateLimited    = 4006 // persistently over the rate limit; back off
	CloseUnauthorized   = 4500 // missing or invalid token
	CloseForbidden      = 4501 // banned or not allowed to connect
	CloseProtocolError  = 4502 // repeated malformed frames
	CloseBadSubprotocol = 4503 // client did not offer parley.v1
)

// ShouldReconnect reports whether a close code invites a reconnect.
func ShouldReconnect(code int) bool { return code < 4500 || code > 4999 }

var errEmpty = errors.New("empty frame")

// Split calls fn for every frame of a websocket message (frames separated by
// '\n'; empty lines skipped). It stops at the first error fn returns, and
// refuses messages holding more than MaxFramesPerMessage frames.
func Split(msg []byte, fn func(frame []byte) error) error {
	n := 0
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n++
		if n > MaxFramesPerMessage {
			return Errorf(CodeTooLarge, "more than %d frames in one message", MaxFramesPerMessage)
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return nil
}

// Decode parses and validates one client frame. The error is always an
// *Error with a stable code.
func Decode(b []byte, f *Frame) *Error {
	if len(b) > MaxMessage {
		return Errorf(CodeTooLarge, "frame exceeds %d bytes", MaxMessage)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return &Error{Code: CodeBadFrame, Message: errEmpty.Error()}
	}
	*f = Frame{}
	if err := json.Unmarshal(b, f); err != nil {
		return Errorf(CodeBadFrame, "malformed JSON: %v", trimErr(err))
	}
	return f.validate()
}

func trimErr(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

func (f *Frame) validate() *Error {
	switch {
	case f.Type == "":
		return Errorf(CodeInvalid, "missing type")
	case len(f.ID) > MaxIDLen:
		return Errorf(CodeTooLarge, "id exceeds %d bytes", MaxIDLen)
	case len(f.Conv) > MaxIDLen, len(f.To) > MaxIDLen, len(f.CMID) > MaxIDLen:
		return Errorf(CodeTooLarge, "conv, to or cmid exceeds %d bytes", MaxIDLen)
	case len(f.Body) > MaxBody:
		return Errorf(CodeTooLarge, "body exceeds %d bytes", MaxBody)
	case len(f.Meta) > MaxMeta:
		return Errorf(CodeTooLarge, "meta exceeds %d bytes", MaxMeta)
	case len(f.Data) > MaxData:
		return Errorf(CodeTooLarge, "data exceeds %d bytes", MaxData)
	case len(f.Title) > MaxTitle:
		return Errorf(CodeTooLarge, "title exceeds %d bytes", MaxTitle)
	case len(f.Users) > MaxListLen, len(f.Members) > MaxListLen, len(f.Since) > MaxListLen:
		return Errorf(CodeTooLarge, "list exceeds %d entries", MaxListLen)
	case f.Limit < 0:
		return Errorf(CodeInvalid, "negative limit")
	}
	var err *Error
	if f.Meta, err = Meta(f.Meta); err != nil {
		return err
	}
	f.Data = Compact(f.Data)
	return nil
}

// Meta checks a message's meta (valid JSON, from a decoder) and returns it
// compacted: empty, or a JSON object.
func Meta(raw json.RawMessage) (json.RawMessage, *Error) {
	if len(raw) == 0 {
		return raw, nil
	}
	if !isObject(raw) {
		return nil, Errorf(CodeInvalid, "meta must be a JSON object")
	}
	return Compact(raw), nil
}

// Compact strips insignificant whitespace from valid raw JSON that the
// server forwards verbatim: a raw newline would split a batched websocket
// message.
func Compact(raw json.RawMessage) json.RawMessage {
	if bytes.IndexAny(raw, " \t\r\n") < 0 {
		return raw
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw // unreachable: Unmarshal validated it
	}
	return buf.Bytes()
}

func isObject(raw json.RawMessage) bool {
	b := bytes.TrimSpace(raw)
	return len(b) > 0 && b[0] == '{'
}
