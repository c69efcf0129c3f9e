package hub

import (
	"hash/maphash"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/parley-im/parley/protocol"
)

const topicShards = 64

// maxLastValues bounds the last-value cache of topics per shard.
const maxLastValues = 100000 / topicShards

// topicMap holds live-topic subscriptions of local sessions and the last
// value of each topic seen here. A node subscribes to a topic's NATS subject
// only while it has local subscribers, so NATS routes events only to nodes
// that want them.
type topicMap struct {
	seed   maphash.Seed
	shards [topicShards]topicShard
}

type topicShard struct {
	mu     sync.Mutex
	topics map[string]*topic   // guarded by mu
	bySess map[uint64][]string // session id → its topics; guarded by mu
}

type topic struct {
	// subs is the set of local subscribers; list is a snapshot of it for
	// fan-out, rebuilt on the first fan-out after a change (nil = stale),
	// so that subscribing and unsubscribing are O(1) and a fan-out is
	// never done under the lock. All guarded by the shard's mu.
	subs map[uint64]Session
	list []Session
	last []byte             // the newest event frame; guarded by the shard's mu
	ns   *nats.Subscription // non-nil while subs is non-empty
}

// snapshotLocked returns the subscribers, rebuilding the snapshot if stale.
// The returned slice is never modified.
func (t *topic) snapshotLocked() []Session {
	if t.list == nil && len(t.subs) > 0 {
		t.list = make([]Session, 0, len(t.subs))
		for _, s := range t.subs {
			t.list = append(t.list, s)
		}
	}
	return t.list
}

func (m *topicMap) init() {
	m.seed = maphash.MakeSeed()
	for i := range m.shards {
		m.shards[i].topics = make(map[string]*topic)
		m.shards[i].bySess = make(map[uint64][]string)
	}
}

func (m *topicMap) shard(name string) *topicShard {
	return &m.shards[maphash.String(m.seed, name)%topicShards]
}

func (m *topicMap) closeAll() {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, t := range sh.topics {
			if t.ns != nil {
				_ = t.ns.Unsubscribe()
				t.ns = nil
			}
		}
		sh.mu.Unlock()
	}
}

// sessionTopics shards sessions' topic lists by session id.
func (m *topicMap) sessShard(id uint64) *topicShard { return &m.shards[id%topicShards] }

// Subscribe adds s to a live topic. The caller then offers the topic's last
// value with OfferLast (after answering the request). Permission checks (JWT
// topic patterns) are the caller's.
func (h *Hub) Subscribe(s Session, name string) error {
	ss := h.topics.sessShard(s.ID())
	ss.mu.Lock()
	mine := ss.bySess[s.ID()]
	for _, t := range mine {
		if t == name {
			ss.mu.Unlock()
			return nil
		}
	}
	if len(mine) >= h.cfg.MaxTopics {
		ss.mu.Unlock()
		return protocol.Errorf(protocol.CodeLimit, "at most %d topics per session", h.cfg.MaxTopics)
	}
	ss.bySess[s.ID()] = append(mine, name)
	ss.mu.Unlock()

	sh := h.topics.shard(name)
	sh.mu.Lock()
	t := sh.topics[name]
	if t == nil {
		t = &topic{}
		sh.topics[name] = t
	}
	if t.subs == nil {
		t.subs = make(map[uint64]Session)
	}
	t.subs[s.ID()] = s
	t.list = nil
	var err error
	if t.ns == nil {
		key := topicKey(name)
		t.ns, err = h.nc.Subscribe(subjTopicPrefix+name, func(msg *nats.Msg) {
			// Latest value wins already here: when newer events of
			// this topic wait behind this one, only keep it as the
			// last value and let the newest be fanned out.
			// (Pending counts this message until the handler returns.)
			if n, _, err := msg.Sub.Pending(); err == nil && n > 1 {
				h.setLast(name, msg.Data, true)
				h.m.topicCoalesced.Inc()
				return
			}
			h.onTopic(name, key, msg.Data)
		})
		if err == nil {
			_ = t.ns.SetPendingLimits(1<<16, 64<<20)
		}
	}
	sh.mu.Unlock()
	if err != nil {
		h.Unsubscribe(s, name)
		h.log.Error("nats subscribe failed", "topic", name, "err", err)
		return errUnavailable("subscribe failed, retry")
	}
	h.m.topicSubs.Inc()
	return nil
}

// topicKey is the key of a topic's pending value in a session: one pending
// event per topic, the newest.
func topicKey(name string) string { return "e:" + name }

// OfferLast offers s the topic's last value, if there is one here; if not,
// it asks the other nodes of the cluster and offers their newest answer
// when it arrives (topiclast.go).
func (h *Hub) OfferLast(s Session, name string) {
	if last := h.topics.last(name); last != nil {
		s.Offer(topicKey(name), last)
		return
	}
	h.fetchLast(s, name)
}

// last returns the topic's last value kept here, or nil.
func (m *topicMap) last(name string) []byte {
	sh := m.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if t := sh.topics[name]; t != nil {
		return t.last
	}
	return nil
}

// Unsubscribe removes s from a topic.
func (h *Hub) Unsubscribe(s Session, name string) {
	ss := h.topics.sessShard(s.ID())
	ss.mu.Lock()
	mine := ss.bySess[s.ID()]
	found := false
	for i, t := range mine {
		if t == name {
			mine = append(mine[:i:i], mine[i+1:]...)
			found = true
			break
		}
	}
	if len(mine) == 0 {
		delete(ss.bySess, s.ID())
	} else {
		ss.bySess[s.ID()] = mine
	}
	ss.mu.Unlock()
	if found {
		h.removeSub(s, name)
	}
}

func (h *Hub) removeSub(s Session, name string) {
	sh := h.topics.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.topics[name]
	if t == nil {
		return
	}
	if _, ok := t.subs[s.ID()]; !ok {
		return
	}
	delete(t.subs, s.ID())
	t.list = nil
	h.m.topicSubs.Dec()
	if len(t.subs) == 0 && t.ns != nil {
		_ = t.ns.Unsubscribe()
		t.ns = nil
		if t.last == nil {
			delete(sh.topics, name)
		}
	}
}

func (h *Hub) unsubscribeAll(s Session) {
	ss := h.topics.sessShard(s.ID())
	ss.mu.Lock()
	mine := ss.bySess[s.ID()]
	delete(ss.bySess, s.ID())
	ss.mu.Unlock()
	for _, name := range mine {
		h.removeSub(s, name)
	}
}

// Publish sends an ephemeral value to a live topic. data must be valid JSON
// (the gateway decoded it). Nothing is stored beyond the last value.
func (h *Hub) Publish(a Actor, name string, data []byte) error {
	if len(data) == 0 {
		return errInvalid("data is required")
	}
	if len(data) > protocol.MaxData {
		return protocol.Errorf(protocol.CodeTooLarge, "data exceeds %d bytes", protocol.MaxData)
	}
	frame := protocol.AppendEvent(make([]byte, 0, 64+len(name)+len(data)), name, data, a.User, h.now().UnixMilli())
	// Keep the last value here too, so a later first subscriber on this
	// node gets it even if nobody was subscribed when it was published.
	h.setLast(name, frame, false)
	if err := h.nc.Publish(subjTopicPrefix+name, frame); err != nil {
		h.m.busErrors.Inc()
		return errUnavailable("publish failed, retry")
	}
	h.m.topicPublishes.Inc()
	return nil
}

// setLast stores the newest frame of a topic, bounded in the number of
// topics without subscribers.
func (h *Hub) setLast(name string, frame []byte, fromBus bool) []Session {
	sh := h.topics.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.topics[name]
	if t == nil {
		if fromBus {
			return nil // a late message after the last unsubscribe
		}
		if len(sh.topics) >= maxLastValues {
			for k, x := range sh.topics {
				if len(x.subs) == 0 {
					delete(sh.topics, k)
					break
				}
			}
		}
		t = &topic{}
		sh.topics[name] = t
	}
	t.last = frame
	return t.snapshotLocked()
}

// onTopic fans a topic event out to the local subscribers. Offer never
// blocks: a slow subscriber keeps only the newest value.
//
// key is topicKey(name), built once per subscription, not per recipient.
func (h *Hub) onTopic(name, key string, frame []byte) {
	defer h.recoverHandler("topic")
	for _, s := range h.setLast(name, frame, true) {
		s.Offer(key, frame)
	}
	h.m.topicEvents.Inc()
}
