package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/coder/websocket"

	"github.com/parley-im/parley/protocol"
)

// Request writes f and waits for the reply carrying its id. If f.ID is empty
// a connection-unique id ("r1", "r2"...) is assigned; a caller-chosen id must
// not collide with a pending one. An error reply is returned as a
// *protocol.Error (Code, Message, RetryAfter) together with the Reply.
//
// ctx bounds the wait for the write slot and for the reply; a write that has
// started is finished (or fails after Options.WriteTimeout) even if ctx
// ends. If the reply arrives after ctx ended it is delivered as an event. If
// the connection ends first the error is Err (e.g. a *CloseError).
func (c *Conn) Request(ctx context.Context, f protocol.Frame) (Reply, error) {
	if f.Type == "" {
		return Reply{}, errors.New("client: request without type")
	}
	if f.ID == "" {
		f.ID = "r" + strconv.FormatUint(c.nextID.Add(1), 10)
	}
	b, err := json.Marshal(&f)
	if err != nil {
		return Reply{}, fmt.Errorf("client: encode %s: %w", f.Type, err)
	}

	ch := make(chan Reply, 1)
	c.mu.Lock()
	if _, dup := c.pending[f.ID]; dup {
		c.mu.Unlock()
		return Reply{}, fmt.Errorf("client: request id %q is already pending", f.ID)
	}
	c.pending[f.ID] = ch
	c.mu.Unlock()

	if err := c.write(ctx, websocket.MessageText, b); err != nil {
		c.forget(f.ID)
		return Reply{}, err
	}
	select {
	case r := <-ch:
		return r, r.err()
	case <-ctx.Done():
		c.forget(f.ID)
		select {
		case r := <-ch: // arrived before forget
			return r, r.err()
		default:
		}
		return Reply{}, fmt.Errorf("client: %s %s: %w", f.Type, f.ID, ctx.Err())
	case <-c.done:
		c.forget(f.ID)
		select {
		case r := <-ch:
			return r, r.err()
		default:
		}
		return Reply{}, c.closedErr()
	}
}

// forget drops a pending request; a later reply becomes an event.
func (c *Conn) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (r Reply) err() error {
	if r.Type != protocol.TypeError {
		return nil
	}
	return decodeError(r.Raw)
}

// WriteFrame writes f without waiting for anything (receipts, typing, pongs
// of a test that set NoAutoPong). A reply to a frame with an id arrives as
// an event.
func (c *Conn) WriteFrame(ctx context.Context, f protocol.Frame) error {
	b, err := json.Marshal(&f)
	if err != nil {
		return fmt.Errorf("client: encode %s: %w", f.Type, err)
	}
	return c.write(ctx, websocket.MessageText, b)
}

// WriteRaw writes one websocket message as is, for tests that send garbage,
// binary messages or hand-batched frames.
func (c *Conn) WriteRaw(ctx context.Context, typ websocket.MessageType, b []byte) error {
	return c.write(ctx, typ, b)
}

// call sends f and decodes a reply of type want into v (nil: not decoded).
func (c *Conn) call(ctx context.Context, f protocol.Frame, want string, v any) error {
	r, err := c.Request(ctx, f)
	if err != nil {
		return err
	}
	if r.Type != want {
		return fmt.Errorf("client: %s: reply is %q, want %q", f.Type, r.Type, want)
	}
	if v == nil {
		return nil
	}
	if err := r.Decode(v); err != nil {
		return fmt.Errorf("client: %s: decode %s: %w", f.Type, r.Type, err)
	}
	return nil
}

// Send posts body to conversation conv; cmid is the client message id that
// makes retries idempotent (a retry returns the original ack, Duplicate set).
func (c *Conn) Send(ctx context.Context, conv, cmid, body string) (protocol.Ack, error) {
	return c.SendFrame(ctx, protocol.Frame{Type: protocol.TypeSend, Conv: conv, CMID: cmid, Body: body})
}

// SendTo posts body to the 1:1 conversation with user.
func (c *Conn) SendTo(ctx context.Context, user, cmid, body string) (protocol.Ack, error) {
	return c.SendFrame(ctx, protocol.Frame{Type: protocol.TypeSend, To: user, CMID: cmid, Body: body})
}

// SendFrame sends a send frame built by the caller (meta, for instance);
// an empty Type means send.
func (c *Conn) SendFrame(ctx context.Context, f protocol.Frame) (protocol.Ack, error) {
	if f.Type == "" {
		f.Type = protocol.TypeSend
	}
	var a protocol.Ack
	err := c.call(ctx, f, protocol.TypeAck, &a)
	return a, err
}

// Sync asks for the messages after the given positions (conversation →
// highest seq held), at most limit per conversation (0: server default).
// Repeat while Synced.More or a conversation's More is set.
func (c *Conn) Sync(ctx context.Context, since map[string]uint64, limit int) (protocol.Synced, error) {
	var s protocol.Synced
	err := c.call(ctx, protocol.Frame{Type: protocol.TypeSync, Since: since, Limit: limit}, protocol.TypeSynced, &s)
	return s, err
}

// History fetches one page of conv: messages before seq before and/or after
// seq after (0: unbounded), at most limit (0: server default).
func (c *Conn) History(ctx context.Context, conv string, before, after uint64, limit int) (protocol.Result, error) {
	var r protocol.Result
	err := c.call(ctx, protocol.Frame{Type: protocol.TypeHistory, Conv: conv, Before: before, After: after, Limit: limit}, protocol.TypeResult, &r)
	return r, err
}

// Receipt moves this device's delivered or read watermark in conv to seq.
// It does not wait: receipts carry no id and get no reply.
func (c *Conn) Receipt(ctx context.Context, conv, kind string, seq uint64) error {
	return c.WriteFrame(ctx, protocol.Frame{Type: protocol.TypeReceipt, Conv: conv, Kind: kind, Seq: seq})
}

// Typing sends a typing indicator (state "start" or "stop"). No reply.
func (c *Conn) Typing(ctx context.Context, conv, state string) error {
	return c.WriteFrame(ctx, protocol.Frame{Type: protocol.TypeTyping, Conv: conv, State: state})
}

// Watch starts watching users' presence. The result lists their current
// presence; changes then arrive as presence events.
func (c *Conn) Watch(ctx context.Context, users []string) (protocol.Result, error) {
	var r protocol.Result
	err := c.call(ctx, protocol.Frame{Type: protocol.TypeWatch, Users: users}, protocol.TypeResult, &r)
	return r, err
}

// Unwatch stops watching users.
func (c *Conn) Unwatch(ctx context.Context, users []string) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeUnwatch, Users: users}, protocol.TypeResult, nil)
}

// Subscribe subscribes to a live topic; its latest value, if any, then
// arrives as an event.
func (c *Conn) Subscribe(ctx context.Context, topic string) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeSubscribe, Topic: topic}, protocol.TypeResult, nil)
}

// Unsubscribe unsubscribes from a live topic.
func (c *Conn) Unsubscribe(ctx context.Context, topic string) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeUnsub, Topic: topic}, protocol.TypeResult, nil)
}

// Publish publishes data (a JSON value) to a live topic and waits for the
// server's result.
func (c *Conn) Publish(ctx context.Context, topic string, data []byte) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypePublish, Topic: topic, Data: data}, protocol.TypeResult, nil)
}

// PublishNoWait publishes data (a JSON value) without an id: no reply, and
// a refusal arrives as an error event. This is the location-stream path.
func (c *Conn) PublishNoWait(ctx context.Context, topic string, data []byte) error {
	return c.WriteFrame(ctx, protocol.Frame{Type: protocol.TypePublish, Topic: topic, Data: data})
}

// Refresh replaces the session's token without reconnecting; the result's
// TokenExp is the new expiry.
func (c *Conn) Refresh(ctx context.Context, token string) (protocol.Result, error) {
	var r protocol.Result
	err := c.call(ctx, protocol.Frame{Type: protocol.TypeRefresh, Token: token}, protocol.TypeResult, &r)
	return r, err
}

// Create creates a group conversation with the caller as owner.
func (c *Conn) Create(ctx context.Context, title string, members []string) (protocol.Conversation, error) {
	var r protocol.Result
	if err := c.call(ctx, protocol.Frame{Type: protocol.TypeCreate, Title: title, Members: members}, protocol.TypeResult, &r); err != nil {
		return protocol.Conversation{}, err
	}
	if r.Conv == nil {
		return protocol.Conversation{}, errors.New("client: create: result without conv")
	}
	return *r.Conv, nil
}

// Rename renames a group conversation.
func (c *Conn) Rename(ctx context.Context, conv, title string) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeRename, Conv: conv, Title: title}, protocol.TypeResult, nil)
}

// Add adds users to a group conversation.
func (c *Conn) Add(ctx context.Context, conv string, users []string) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeAdd, Conv: conv, Users: users}, protocol.TypeResult, nil)
}

// Remove removes users from a group conversation.
func (c *Conn) Remove(ctx context.Context, conv string, users []string) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeRemove, Conv: conv, Users: users}, protocol.TypeResult, nil)
}

// Leave leaves a group conversation.
func (c *Conn) Leave(ctx context.Context, conv string) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeLeave, Conv: conv}, protocol.TypeResult, nil)
}

// Convs lists the caller's conversations.
func (c *Conn) Convs(ctx context.Context) ([]protocol.Conversation, error) {
	var r protocol.Result
	err := c.call(ctx, protocol.Frame{Type: protocol.TypeConvs}, protocol.TypeResult, &r)
	return r.Convs, err
}

// RegisterPush registers (or updates) this device's push registration.
func (c *Conn) RegisterPush(ctx context.Context, p protocol.DevicePush) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeDevice, Push: &p}, protocol.TypeResult, nil)
}

// UnregisterPush removes this device's push registration.
func (c *Conn) UnregisterPush(ctx context.Context) error {
	return c.call(ctx, protocol.Frame{Type: protocol.TypeDevice, State: "remove"}, protocol.TypeResult, nil)
}
