package hub

import (
	"context"
	"errors"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// SendRequest is a message to post.
type SendRequest struct {
	Conv   string // the conversation, or
	To     string // the peer of a 1:1 conversation (found or created)
	CMID   string // client message id: required, the idempotency key
	Body   string
	Meta   []byte // a JSON object or nil
	System bool   // a system message (service actors only)
}

// DirectID returns the id of the 1:1 conversation of two users.
func DirectID(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

// Send stores a message durably and routes it to every member device.
// Retries with the same (conversation, sender, CMID) return the original ack
// with Duplicate set. The returned error is a *protocol.Error.
func (h *Hub) Send(ctx context.Context, a Actor, req SendRequest) (protocol.Ack, error) {
	start := h.now()
	switch {
	case req.CMID == "":
		return protocol.Ack{}, errInvalid("cmid is required")
	case len(req.CMID) > protocol.MaxIDLen:
		return protocol.Ack{}, protocol.Errorf(protocol.CodeTooLarge, "cmid exceeds %d bytes", protocol.MaxIDLen)
	case len(req.Body) > protocol.MaxBody:
		return protocol.Ack{}, protocol.Errorf(protocol.CodeTooLarge, "body exceeds %d bytes", protocol.MaxBody)
	case len(req.Meta) > protocol.MaxMeta:
		return protocol.Ack{}, protocol.Errorf(protocol.CodeTooLarge, "meta exceeds %d bytes", protocol.MaxMeta)
	case req.Body == "" && len(req.Meta) == 0:
		return protocol.Ack{}, errInvalid("body or meta is required")
	case req.System && !a.Service:
		return protocol.Ack{}, errForbidden("only service tokens post system messages")
	case !req.System && !validID(a.User):
		return protocol.Ack{}, errInvalid("sender user id is invalid")
	}
	conv := req.Conv
	if req.To != "" {
		if conv != "" {
			return protocol.Ack{}, errInvalid("give conv or to, not both")
		}
		if a.User == "" {
			return protocol.Ack{}, errInvalid("a 1:1 conversation needs a sending user (as)")
		}
		var err error
		if conv, err = h.ensureDirect(ctx, a.User, req.To); err != nil {
			return protocol.Ack{}, err
		}
	}
	if !validConvID(conv) {
		return protocol.Ack{}, errInvalid("conv is missing or invalid")
	}

	st, err := h.lock(ctx, conv)
	if err != nil {
		return protocol.Ack{}, err
	}
	defer st.mu.Unlock()
	if !req.System {
		if _, ok := st.members.Load().role(a.User); !ok {
			return protocol.Ack{}, errNotMember(conv)
		}
	}
	sender := a.User
	if req.System {
		sender = ""
	}
	// System messages have no sender: their idempotency scope is the empty
	// sender, which no user id can be. The lookup comes before the write
	// even though the write's claim checks the client id too: with a stale
	// cached end (the node that stored the retried message died before
	// routing it) the write would pick the stored message's own seq, where
	// the store takes it for an idempotent overwrite and the retry would
	// be acked as new.
	if ack, ok, err := h.storedAck(ctx, st, sender, req.CMID, a.Session); err != nil {
		return protocol.Ack{}, err
	} else if ok {
		return ack, nil
	}

	m := storage.Message{
		Conv:   conv,
		Sender: sender,
		Device: a.Device,
		CMID:   req.CMID,
		Kind:   storage.MessageUser,
		Body:   req.Body,
		Meta:   req.Meta,
		Time:   h.now().UnixMilli(),
	}
	if req.System {
		m.Kind = storage.MessageSystem
		m.Device = ""
	}
	for attempt := 1; ; attempt++ {
		m.Seq = st.lastSeq.Load() + 1
		t0 := time.Now()
		err = h.store.AppendMessages(ctx, []storage.Message{m})
		h.m.storageLatency.WithLabelValues("append").Observe(time.Since(t0).Seconds())
		if err == nil {
			break
		}
		if !errors.Is(err, storage.ErrConflict) {
			return protocol.Ack{}, h.storageErr("append", err)
		}
		if attempt == maxSeqAttempts {
			return protocol.Ack{}, errUnavailable("conversation contended by other nodes, retry")
		}
		if attempt > 2 {
			// Still racing: most likely this client message's first
			// attempt is committing on another node. Give it a moment.
			time.Sleep(time.Duration(attempt) * 250 * time.Microsecond)
		}
		// Another node took this seq, or is storing this very client
		// message: it may have been stored meanwhile.
		h.m.seqConflicts.Inc()
		if ack, ok, err := h.storedAck(ctx, st, sender, req.CMID, a.Session); err != nil {
			return protocol.Ack{}, err
		} else if ok {
			return ack, nil
		}
		last, err := h.store.LastSeq(ctx, conv)
		if err != nil {
			return protocol.Ack{}, h.storageErr("last_seq", err)
		}
		// The seq may still be in another node's commit, not yet
		// readable: it is taken either way.
		st.raiseLastSeq(max(last, m.Seq))
	}
	seq := m.Seq
	st.raiseLastSeq(seq)

	// Publish while still holding st.mu: messages of one conversation leave
	// this node in seq order.
	pm := toProto(&m)
	frame := protocol.AppendMessage(make([]byte, 0, 128+len(m.Body)+len(m.Meta)), &pm)
	if err := h.publish(&delivery{conv: conv, exclude: a.Session, ts: h.now().UnixNano(), seq: seq, frame: frame}); err != nil {
		// Durable but not on its way to the members: no ack. The client's
		// retry finds it stored and publishes it again (storedAck).
		return protocol.Ack{}, errUnavailable("stored but not routed, retry with the same cmid")
	}
	h.queuePushes(st, sender, seq, time.UnixMilli(m.Time))
	h.m.sent.Inc()
	h.m.sendLatency.Observe(h.now().Sub(start).Seconds())
	return protocol.Ack{Conv: conv, Seq: seq, CMID: req.CMID, TS: m.Time}, nil
}

// maxSeqAttempts bounds Send's tries when other nodes keep taking the next
// seq of a conversation first.
const maxSeqAttempts = 16

// storedAck returns the original ack of a client message stored already
// (ok false if there is none). If this node never saw the message go out on
// the bus, it publishes it again: the node that stored it may have died
// before routing it, and a connected member device would then never see it.
// (A copy that overtakes the original's routing reaches devices twice; they
// drop it by seq, as the protocol says.) exclude is the retrying session.
func (h *Hub) storedAck(ctx context.Context, st *convState, sender, cmid string, exclude uint64) (protocol.Ack, bool, error) {
	conv := st.id
	seq, err := h.store.LookupClientID(ctx, conv, sender, cmid)
	if errors.Is(err, storage.ErrNotFound) {
		return protocol.Ack{}, false, nil
	}
	if err != nil {
		return protocol.Ack{}, false, h.storageErr("lookup_client_id", err)
	}
	ms, err := h.store.Messages(ctx, conv, storage.Page{Before: seq + 1, Limit: 1})
	if err != nil {
		return protocol.Ack{}, false, h.storageErr("messages", err)
	}
	if len(ms) != 1 || ms[0].Seq != seq {
		// The index names a seq whose message is not readable: the
		// write is still in flight on another node. Not acked yet.
		return protocol.Ack{}, false, errUnavailable("message is being stored, retry")
	}
	if !st.wasRouted(seq) {
		pm := toProto(&ms[0])
		frame := protocol.AppendMessage(make([]byte, 0, 128+len(pm.Body)+len(pm.Meta)), &pm)
		if err := h.publish(&delivery{conv: conv, exclude: exclude, seq: seq, frame: frame}); err != nil {
			return protocol.Ack{}, false, errUnavailable("stored but not routed, retry with the same cmid")
		}
		h.m.rerouted.Inc()
	}
	h.m.duplicates.Inc()
	return protocol.Ack{Conv: conv, Seq: seq, CMID: cmid, TS: ms[0].Time, Duplicate: true}, true, nil
}

// ensureDirect finds or creates the 1:1 conversation of a and b.
func (h *Hub) ensureDirect(ctx context.Context, a, b string) (string, error) {
	if !validID(b) {
		return "", errInvalid("to is not a valid user id")
	}
	if a == b {
		return "", errInvalid("cannot start a 1:1 conversation with yourself")
	}
	id := DirectID(a, b)
	if st := h.convs.peek(id); st != nil && st.members.Load() != nil {
		return id, nil
	}
	now := h.now()
	c := storage.Conversation{ID: id, Kind: storage.KindDirect, CreatedBy: a, CreatedAt: now}
	members := []storage.Member{
		{Conv: id, User: a, Role: storage.RoleMember, JoinedAt: now},
		{Conv: id, User: b, Role: storage.RoleMember, JoinedAt: now},
	}
	err := h.store.CreateConversation(ctx, c, members)
	switch {
	case err == nil:
		h.announce(id, "created", []string{a, b}, a, "")
	case errors.Is(err, storage.ErrExists):
	default:
		return "", h.storageErr("create_direct", err)
	}
	return id, nil
}

func toProto(m *storage.Message) protocol.Message {
	pm := protocol.Message{
		Conv:   m.Conv,
		Seq:    m.Seq,
		From:   m.Sender,
		Device: m.Device,
		CMID:   m.CMID,
		Body:   m.Body,
		Meta:   m.Meta,
		TS:     m.Time,
	}
	if m.Kind == storage.MessageSystem {
		pm.Kind = string(storage.MessageSystem)
	}
	return pm
}

// member returns the conversation state if a may read it.
func (h *Hub) member(ctx context.Context, a Actor, conv string) (*convState, error) {
	if !validConvID(conv) {
		return nil, errInvalid("conv is missing or invalid")
	}
	st, err := h.state(ctx, conv)
	if err != nil {
		return nil, err
	}
	if a.Service && a.User == "" {
		return st, nil
	}
	if _, ok := st.members.Load().role(a.User); !ok {
		return nil, errNotMember(conv)
	}
	return st, nil
}

// History returns one page of a conversation, oldest first, and whether
// more messages lie beyond the page in the direction asked for.
func (h *Hub) History(ctx context.Context, a Actor, conv string, p storage.Page) ([]protocol.Message, bool, error) {
	st, err := h.member(ctx, a, conv)
	if err != nil {
		return nil, false, err
	}
	if p.Limit <= 0 {
		p.Limit = storage.DefaultPage
	}
	if p.Limit > storage.MaxPage {
		p.Limit = storage.MaxPage
	}
	t0 := time.Now()
	ms, err := h.store.Messages(ctx, conv, p)
	h.m.storageLatency.WithLabelValues("messages").Observe(time.Since(t0).Seconds())
	if err != nil {
		return nil, false, h.storageErr("messages", err)
	}
	last, err := h.lastSeq(ctx, st)
	if err != nil {
		return nil, false, err
	}
	ms = durableOnly(ms, last)
	full := len(ms)
	if p.After > 0 {
		ms = withinBytes(ms, maxReplyBytes)
	} else {
		// Newest-before pages keep the newest messages.
		for len(ms) > 1 && size(ms) > maxReplyBytes {
			ms = ms[1:]
		}
	}
	out := make([]protocol.Message, len(ms))
	for i := range ms {
		out[i] = toProto(&ms[i])
	}
	var more bool
	if p.After > 0 {
		more = len(ms) > 0 && (len(ms) < full || ms[len(ms)-1].Seq < last)
	} else {
		more = len(ms) > 0 && ms[0].Seq > 1
	}
	return out, more, nil
}

// Sync limits.
const (
	defaultSyncLimit   = 100
	maxSyncLimit       = 1000
	maxSyncMessages    = 5000 // per synced frame, over all conversations
	maxResumeConvs     = 200
	maxListedConvs     = 1000
	maxSyncedConvsList = 1000
	// maxReplyBytes bounds the message bytes of one history or synced
	// frame, well under a connection's outbound queue and a client's read
	// limit; the rest follows with more=true.
	maxReplyBytes = 1 << 20
)

// size estimates the encoded size of messages.
func size(ms []storage.Message) int {
	n := 0
	for i := range ms {
		n += msgSize(&ms[i])
	}
	return n
}

func msgSize(m *storage.Message) int {
	return 96 + len(m.Conv) + len(m.Sender) + len(m.Device) + len(m.CMID) + len(m.Body) + len(m.Meta)
}

// withinBytes keeps the oldest messages that fit in max bytes (at least one).
func withinBytes(ms []storage.Message, max int) []storage.Message {
	n := 0
	for i := range ms {
		n += msgSize(&ms[i])
		if n > max && i > 0 {
			return ms[:i]
		}
	}
	return ms
}

// Sync answers a device's resume: for every conversation of the user that
// moved past the device's position, the state and (for conversations the
// device listed) the messages after its position.
func (h *Hub) Sync(ctx context.Context, a Actor, since map[string]uint64, limit int) (protocol.Synced, error) {
	if limit <= 0 {
		limit = defaultSyncLimit
	}
	if limit > maxSyncLimit {
		limit = maxSyncLimit
	}
	ids, err := h.store.UserConversations(ctx, a.User)
	if err != nil {
		return protocol.Synced{}, h.storageErr("user_conversations", err)
	}
	out := protocol.Synced{Type: protocol.TypeSynced, Convs: []protocol.SyncedConv{}}
	budget, bytesLeft := maxSyncMessages, maxReplyBytes
	for _, id := range ids {
		st, err := h.state(ctx, id)
		if err != nil {
			continue // deleted or unreadable conversation: skip
		}
		last, err := h.lastSeq(ctx, st)
		if err != nil {
			return protocol.Synced{}, err
		}
		after, listed := since[id]
		if listed && last <= after {
			continue
		}
		if len(out.Convs) >= maxSyncedConvsList || (listed && (budget <= 0 || bytesLeft <= 0)) {
			out.More = true
			break
		}
		cs, err := h.convState(ctx, id, a.User, last)
		if err != nil {
			return protocol.Synced{}, err
		}
		sc := protocol.SyncedConv{ConvState: cs, Messages: []protocol.Message{}}
		if listed {
			n := min(limit, budget)
			ms, err := h.store.Messages(ctx, id, storage.Page{After: after, Limit: n})
			if err != nil {
				return protocol.Synced{}, h.storageErr("messages", err)
			}
			ms = withinBytes(durableOnly(ms, last), bytesLeft)
			budget -= len(ms)
			bytesLeft -= size(ms)
			for i := range ms {
				sc.Messages = append(sc.Messages, toProto(&ms[i]))
			}
			sc.More = len(ms) > 0 && ms[len(ms)-1].Seq < last
		}
		out.Convs = append(out.Convs, sc)
	}
	h.m.syncs.Inc()
	return out, nil
}

func (h *Hub) convState(ctx context.Context, conv, user string, last uint64) (protocol.ConvState, error) {
	cs := protocol.ConvState{Conv: conv, LastSeq: last}
	m, err := h.store.Member(ctx, conv, user)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return cs, h.storageErr("member", err)
	}
	cs.ReadSeq, cs.DeliveredSeq = m.ReadSeq, m.DeliveredSeq
	return cs, nil
}

// ResumeState lists where the user's conversations stand, for hello.
func (h *Hub) ResumeState(ctx context.Context, user string) (*protocol.Resume, error) {
	ids, err := h.store.UserConversations(ctx, user)
	if err != nil {
		return nil, h.storageErr("user_conversations", err)
	}
	r := &protocol.Resume{Convs: []protocol.ConvState{}}
	if len(ids) > maxResumeConvs {
		ids, r.More = ids[:maxResumeConvs], true
	}
	for _, id := range ids {
		st, err := h.state(ctx, id)
		if err != nil {
			continue
		}
		last, err := h.lastSeq(ctx, st)
		if err != nil {
			return nil, err
		}
		cs, err := h.convState(ctx, id, user, last)
		if err != nil {
			return nil, err
		}
		r.Convs = append(r.Convs, cs)
	}
	return r, nil
}

// Receipt raises the user's delivered or read watermark and tells every
// member device (the sender sees delivered/read; the reader's other devices
// clear their unread state).
func (h *Hub) Receipt(ctx context.Context, a Actor, conv, kind string, seq uint64) error {
	rk := storage.ReceiptKind(kind)
	if rk != storage.ReceiptDelivered && rk != storage.ReceiptRead {
		return errInvalid("kind must be delivered or read")
	}
	st, err := h.member(ctx, a, conv)
	if err != nil {
		return err
	}
	// The cached end answers for every seq it covers; only a seq past it
	// (another node's message not yet seen here) asks the shared store.
	last := st.lastSeq.Load()
	if seq > last {
		if last, err = h.lastSeq(ctx, st); err != nil {
			return err
		}
	}
	if seq == 0 || seq > last {
		return errInvalid("seq %d is not a message of %s", seq, conv)
	}
	raised, err := h.store.SetWatermark(ctx, conv, a.User, rk, seq)
	if err == nil {
		// Per device, even when the user's watermark did not move: the
		// push planner asks whether this device has the message.
		h.publishConfirm(a.User, a.Device, conv, seq)
	}
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return errNotMember(conv)
	case err != nil:
		return h.storageErr("set_watermark", err)
	case !raised:
		return nil // the watermark does not move: nothing to tell anyone
	}
	if rk == storage.ReceiptRead {
		// Read implies delivered (a no-op when delivered is ahead already).
		if _, err := h.store.SetWatermark(ctx, conv, a.User, storage.ReceiptDelivered, seq); err != nil {
			return h.storageErr("set_watermark", err)
		}
	}
	frame := protocol.Marshal(protocol.Receipt{Type: "receipt", Conv: conv, User: a.User, Device: a.Device, Kind: kind, Seq: seq})
	h.publish(&delivery{
		flags:   flagEphemeral,
		conv:    conv,
		exclude: a.Session,
		key:     "r:" + conv + "\x00" + a.User + "\x00" + kind,
		frame:   frame,
	})
	h.m.receipts.WithLabelValues(kind).Inc()
	return nil
}

// Typing forwards an ephemeral typing indicator to the other members.
func (h *Hub) Typing(ctx context.Context, a Actor, conv, state string) error {
	if state == "" {
		state = "start"
	}
	if state != "start" && state != "stop" {
		return errInvalid("state must be start or stop")
	}
	if _, err := h.member(ctx, a, conv); err != nil {
		return err
	}
	frame := protocol.Marshal(protocol.Typing{Type: "typing", Conv: conv, User: a.User, Device: a.Device, State: state})
	h.publish(&delivery{
		flags:       flagEphemeral | flagExcludeUser,
		conv:        conv,
		excludeUser: a.User,
		key:         "t:" + conv + "\x00" + a.User,
		frame:       frame,
	})
	return nil
}

// durableOnly drops messages past the conversation's acked position: the
// embedded store makes a batch readable a moment before its sync returns,
// and a message must not be shown before it is durable (a crash in that
// window would reuse its seq).
func durableOnly(ms []storage.Message, last uint64) []storage.Message {
	for len(ms) > 0 && ms[len(ms)-1].Seq > last {
		ms = ms[:len(ms)-1]
	}
	return ms
}
