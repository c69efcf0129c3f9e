package hub

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// NATS subjects. Conversation traffic goes out once per event on one
// broadcast subject that every node subscribes to; each node then fans out to
// its own sessions, so a message to a 10,000-member group costs one NATS
// message per node, not one per member. Live topics use one subject per topic
// (subjTopicPrefix + topic) so NATS only routes them to nodes with
// subscribers. Broadcast kinds share one subject so that a node sees one
// origin's membership changes and messages in the order they were published.
const (
	subjBroadcast   = SubjectBroadcast
	subjTopicPrefix = "parley.topic."
)

// SubjectBroadcast is the subject every node's conversation deliveries,
// membership changes, presence and heartbeats travel on. A slow-consumer
// drop on it means local sessions may have missed deliveries: the node
// makes them resync (gateway.Server.Resync).
const SubjectBroadcast = "parley.bcast"

// Broadcast kinds (first byte of a parley.bcast payload).
const (
	kindDeliver   byte = 1
	kindMembers   byte = 2
	kindPresence  byte = 3
	kindHeartbeat byte = 4
	kindConfirm   byte = 5 // a device confirmed delivery (push.go)
)

// Deliver flags.
const (
	flagEphemeral   byte = 1 << 0 // Offer with key instead of Deliver
	flagExcludeUser byte = 1 << 1 // skip every session of excludeUser
)

// delivery is a decoded kindDeliver payload.
type delivery struct {
	origin      uint64
	flags       byte
	conv        string
	exclude     uint64   // session id that must not get the frame
	excludeUser string   // with flagExcludeUser
	extra       []string // recipients that are not (or no longer) members
	key         string   // ephemeral key
	ts          int64    // publish time (unix ns) for the latency histogram; 0 if none
	seq         uint64   // the message's seq (durable deliveries), 0 otherwise
	frame       []byte
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (d *delivery) encode() []byte {
	b := make([]byte, 0, 48+len(d.conv)+len(d.key)+len(d.frame))
	b = append(b, kindDeliver)
	b = binary.BigEndian.AppendUint64(b, d.origin)
	b = append(b, d.flags)
	b = appendStr(b, d.conv)
	b = binary.AppendUvarint(b, d.exclude)
	b = appendStr(b, d.excludeUser)
	b = binary.AppendUvarint(b, uint64(len(d.extra)))
	for _, u := range d.extra {
		b = appendStr(b, u)
	}
	b = appendStr(b, d.key)
	b = binary.AppendVarint(b, d.ts)
	b = binary.AppendUvarint(b, d.seq)
	return append(b, d.frame...)
}

var errShort = errors.New("hub: short bus payload")

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errShort
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) byte1() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errShort
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func decodeDelivery(b []byte) (delivery, error) {
	r := reader{b: b}
	var d delivery
	d.origin = r.u64()
	d.flags = r.byte1()
	d.conv = r.str()
	d.exclude = r.uvarint()
	d.excludeUser = r.str()
	n := r.uvarint()
	if n > 100000 {
		return d, errShort
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		d.extra = append(d.extra, r.str())
	}
	d.key = r.str()
	d.ts = r.varint()
	d.seq = r.uvarint()
	d.frame = r.b
	return d, r.err
}

// publish sends a delivery to every node. It fails only when the NATS
// connection is closed or its reconnect buffer is full; while NATS
// reconnects, deliveries are buffered.
func (h *Hub) publish(d *delivery) error {
	d.origin = h.nodeID
	b := d.encode()
	if err := h.nc.Publish(subjBroadcast, b); err != nil {
		h.m.busErrors.Inc()
		h.log.Warn("nats publish failed", "err", err)
		return err
	}
	if d.seq > 0 {
		h.recent.add(h.now(), b)
	}
	return nil
}

// Republish sends again the message deliveries this node published since
// since (at most recentMax of them). The node calls it when its NATS link
// comes back: what it published just before the link broke may have died
// in the lost server's buffers, and members connected to other nodes would
// not see those messages until their next reconnect. Devices drop the
// copies by seq.
func (h *Hub) Republish(since time.Time) int {
	n := 0
	for _, b := range h.recent.since(since) {
		if err := h.nc.Publish(subjBroadcast, b); err != nil {
			h.m.busErrors.Inc()
			break
		}
		n++
	}
	h.m.republished.Add(float64(n))
	return n
}

// recentMax bounds the deliveries kept for Republish (a few seconds of a
// busy node; about 300 bytes each).
const recentMax = 8192

// recentRing keeps the last recentMax published message deliveries.
type recentRing struct {
	mu   sync.Mutex
	at   [recentMax]time.Time // guarded by mu
	b    [recentMax][]byte    // guarded by mu
	next int                  // guarded by mu
}

func (r *recentRing) add(at time.Time, b []byte) {
	r.mu.Lock()
	r.at[r.next], r.b[r.next] = at, b
	r.next = (r.next + 1) % recentMax
	r.mu.Unlock()
}

// since returns the kept deliveries published at or after t, oldest first.
func (r *recentRing) since(t time.Time) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for i := 0; i < recentMax; i++ {
		k := (r.next + i) % recentMax
		if r.b[k] != nil && !r.at[k].Before(t) {
			out = append(out, r.b[k])
		}
	}
	return out
}

func (h *Hub) publishMembersChanged(conv string) {
	b := make([]byte, 0, 16+len(conv))
	b = append(b, kindMembers)
	b = binary.BigEndian.AppendUint64(b, h.nodeID)
	b = appendStr(b, conv)
	if err := h.nc.Publish(subjBroadcast, b); err != nil {
		h.m.busErrors.Inc()
		h.log.Warn("nats publish failed", "err", err)
	}
}

// onBroadcast runs on the subscription's goroutine, one message at a time.
func (h *Hub) onBroadcast(msg *nats.Msg) {
	defer h.recoverHandler("broadcast")
	b := msg.Data
	if len(b) < 9 {
		h.m.busErrors.Inc()
		return
	}
	switch b[0] {
	case kindDeliver:
		d, err := decodeDelivery(b[1:])
		if err != nil {
			h.m.busErrors.Inc()
			h.log.Warn("bad bus payload", "err", err)
			return
		}
		h.deliverLocal(&d)
	case kindMembers:
		r := reader{b: b[1:]}
		origin := r.u64()
		conv := r.str()
		if r.err != nil {
			h.m.busErrors.Inc()
			return
		}
		if origin != h.nodeID {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			h.invalidate(ctx, conv)
			cancel()
		}
	case kindConfirm:
		r := reader{b: b[1:]}
		_ = r.u64() // origin
		user, device, conv := r.str(), r.str(), r.str()
		seq := r.uvarint()
		if r.err != nil {
			h.m.busErrors.Inc()
			return
		}
		h.confirms.add(user, device, conv, seq, h.now())
	case kindPresence, kindHeartbeat:
		r := reader{b: b[1:]}
		origin := r.u64()
		if b[0] == kindPresence {
			h.onPresence(origin, &r)
		} else {
			h.onHeartbeat(origin, &r)
		}
	default:
		h.m.busErrors.Inc()
	}
}

// recoverHandler keeps a bug in handling one bus message from taking the
// node down: it logs the panic with its stack and counts it.
func (h *Hub) recoverHandler(what string) {
	if r := recover(); r != nil {
		h.m.busErrors.Inc()
		h.m.busPanics.Add(1)
		h.log.Error("panic handling a bus message", "subject", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}

// deliverLocal hands a delivery to this node's sessions: every member of the
// conversation plus the extra recipients.
func (h *Hub) deliverLocal(d *delivery) {
	var users []string
	if d.conv != "" {
		st := h.convs.peek(d.conv)
		if st == nil || st.members.Load() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			st, err = h.state(ctx, d.conv)
			cancel()
			if err != nil {
				h.log.Warn("delivery without members", "conv", d.conv, "err", err)
				return
			}
		}
		users = st.members.Load().users
		// Another node's message moves this node's view of the
		// conversation's end (its sends start after it; resume sees it).
		st.raiseLastSeq(d.seq)
		if d.seq > 0 {
			st.markRouted(d.seq)
		}
	}
	if d.ts > 0 {
		h.m.deliveryLatency.Observe(float64(h.now().UnixNano()-d.ts) / 1e9)
	}
	send := func(user string) {
		if d.flags&flagExcludeUser != 0 && user == d.excludeUser {
			return
		}
		for _, s := range h.sessions.get(user) {
			if s.ID() == d.exclude {
				continue
			}
			if d.flags&flagEphemeral != 0 {
				s.Offer(d.key, d.frame)
			} else {
				s.Deliver(d.frame)
				h.m.delivered.Inc()
			}
		}
	}
	for _, u := range users {
		send(u)
	}
	for _, u := range d.extra {
		send(u)
	}
}
