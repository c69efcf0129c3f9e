package client

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/parley-im/parley/protocol"
)

// Event is a frame the server pushed: message, receipt, typing, presence,
// event (live topic), member, bye, error without id, a reply whose request
// had already given up, and ping when Options.NoAutoPong is set.
type Event struct {
	Type string
	// Raw is the frame's JSON. It is not shared with any other event.
	Raw []byte
}

// Decode unmarshals the frame into v.
func (e Event) Decode(v any) error { return json.Unmarshal(e.Raw, v) }

func (e Event) decodeAs(typ string, v any) error {
	if e.Type != typ {
		return fmt.Errorf("client: event is %q, not %q", e.Type, typ)
	}
	return e.Decode(v)
}

// Message decodes a message event.
func (e Event) Message() (protocol.Message, error) {
	var m protocol.Message
	return m, e.decodeAs(protocol.TypeMessage, &m)
}

// Receipt decodes a receipt event.
func (e Event) Receipt() (protocol.Receipt, error) {
	var r protocol.Receipt
	return r, e.decodeAs(protocol.TypeReceipt, &r)
}

// Typing decodes a typing event.
func (e Event) Typing() (protocol.Typing, error) {
	var t protocol.Typing
	return t, e.decodeAs(protocol.TypeTyping, &t)
}

// Presence decodes a presence event.
func (e Event) Presence() (protocol.Presence, error) {
	var p protocol.Presence
	return p, e.decodeAs(protocol.TypePresence, &p)
}

// Member decodes a member event.
func (e Event) Member() (protocol.MemberChange, error) {
	var m protocol.MemberChange
	return m, e.decodeAs(protocol.TypeMember, &m)
}

// Bye decodes a bye event.
func (e Event) Bye() (protocol.Bye, error) {
	var b protocol.Bye
	return b, e.decodeAs(protocol.TypeBye, &b)
}

// TopicEvent is a live-topic value: the "event" frame (protocol.AppendEvent
// writes it; package protocol has no struct for it).
type TopicEvent struct {
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
	From  string          `json:"from,omitempty"`
	TS    int64           `json:"ts"` // server time, unix ms
}

// TopicEvent decodes an event (live-topic) frame.
func (e Event) TopicEvent() (TopicEvent, error) {
	var t TopicEvent
	return t, e.decodeAs(protocol.TypeEvent, &t)
}

// AsError returns the error carried by an error frame, or nil if the event
// is not one.
func (e Event) AsError() *protocol.Error {
	if e.Type != protocol.TypeError {
		return nil
	}
	return decodeError(e.Raw)
}

// OfType returns a WaitFor predicate matching events of the given types.
func OfType(types ...string) func(Event) bool {
	return func(e Event) bool { return slices.Contains(types, e.Type) }
}

// Events returns the event buffer, closed after the connection ends (the
// events buffered before the end can still be read). It is nil when
// Options.OnEvent is set. See the package doc for what happens when it is
// full.
func (c *Conn) Events() <-chan Event { return c.events }

// Next returns the next event. After the connection ended and the buffer
// is drained it returns Err (or ErrClosed).
func (c *Conn) Next(ctx context.Context) (Event, error) {
	if c.events == nil {
		return Event{}, ErrNoEvents
	}
	select {
	case ev, ok := <-c.events:
		if !ok {
			return Event{}, c.closedErr()
		}
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// WaitFor reads events until match reports true and returns that event;
// the events before it are discarded. A nil match accepts any event.
func (c *Conn) WaitFor(ctx context.Context, match func(Event) bool) (Event, error) {
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			return ev, err
		}
		if match == nil || match(ev) {
			return ev, nil
		}
	}
}

// Reply is the server's answer to a request: an ack, result, synced or error
// frame carrying the request's id.
type Reply struct {
	Type string
	ID   string
	Raw  []byte // the frame's JSON
}

// Decode unmarshals the frame into v.
func (r Reply) Decode(v any) error { return json.Unmarshal(r.Raw, v) }

// wireError is the error frame's JSON shape.
type wireError struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	RetryAfter int64  `json:"retry_after_ms"`
}

func decodeError(raw []byte) *protocol.Error {
	var w wireError
	if err := json.Unmarshal(raw, &w); err != nil {
		return &protocol.Error{Code: protocol.CodeBadFrame, Message: "client: malformed error frame: " + err.Error()}
	}
	return &protocol.Error{Code: w.Code, Message: w.Message, RetryAfter: w.RetryAfter}
}
