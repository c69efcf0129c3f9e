package hub

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parley-im/parley/protocol"
)

// Live-topic last values across the cluster. A topic's last value lives on
// the nodes that published it or fanned it out. A node whose first local
// subscriber of a topic finds no last value here asks every node on
// subjLastPrefix + topic (one wildcard subscription per node, so NATS holds
// nothing per topic); each node answers with its last value or an empty
// reply, and the newest by its server timestamp wins. The answer is offered
// to the subscriber unless a newer event of the topic arrived meanwhile.

const subjLastPrefix = "parley.last."

// lastWait bounds the wait for the other nodes' answers.
const lastWait = 100 * time.Millisecond

func (h *Hub) startTopicLast() error {
	sub, err := h.nc.Subscribe(subjLastPrefix+">", h.answerLast)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.subs = append(h.subs, sub)
	h.mu.Unlock()
	return nil
}

// answerLast replies with this node's last value of the topic, or nothing
// (an empty reply) if it has none.
func (h *Hub) answerLast(msg *nats.Msg) {
	defer h.recoverHandler("topic last")
	if msg.Reply == "" {
		return
	}
	last := h.topics.last(strings.TrimPrefix(msg.Subject, subjLastPrefix))
	if err := h.nc.Publish(msg.Reply, last); err != nil {
		h.m.busErrors.Inc()
	}
}

// fetchLast asks the cluster for a topic's last value for s, off the
// caller's goroutine.
func (h *Hub) fetchLast(s Session, name string) {
	h.cl.mu.Lock()
	nodes := len(h.cl.peers)
	h.cl.mu.Unlock()
	if nodes <= 1 {
		return // nobody else could know it
	}
	h.cl.wg.Add(1)
	go func() {
		defer h.cl.wg.Done()
		frame := h.gatherLast(name, nodes)
		if frame == nil {
			return
		}
		// Keep it unless a newer value arrived meanwhile, and offer it
		// to s if s still subscribes.
		sh := h.topics.shard(name)
		sh.mu.Lock()
		t := sh.topics[name]
		subscribed := t != nil && t.subs[s.ID()] != nil
		if t != nil && eventTS(t.last) < eventTS(frame) {
			t.last = frame
		}
		fresh := t != nil && bytes.Equal(t.last, frame)
		sh.mu.Unlock()
		if subscribed && fresh {
			s.Offer(topicKey(name), frame)
			h.m.topicLastFetched.Inc()
		}
	}()
}

// gatherLast collects the nodes' answers for up to lastWait (or until all
// nodes answered) and returns the newest value, or nil.
func (h *Hub) gatherLast(name string, nodes int) []byte {
	sub := h.scatter(subjLastPrefix+name, nodes*(protocol.MaxData+1024))
	if sub == nil {
		return nil
	}
	defer func() { _ = sub.Unsubscribe() }()
	deadline := time.Now().Add(lastWait)
	var best []byte
	for got := 0; got < nodes; got++ {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		msg, err := sub.NextMsg(wait)
		if err != nil {
			break
		}
		if len(msg.Data) > 0 && (best == nil || eventTS(msg.Data) > eventTS(best)) {
			best = msg.Data
		}
	}
	return best
}

// eventTS reads the server timestamp that ends an event frame
// (protocol.AppendEvent writes ,"ts":<ms>} last); 0 if there is none.
func eventTS(frame []byte) int64 {
	i := bytes.LastIndex(frame, []byte(`,"ts":`))
	if i < 0 || len(frame) < i+7 || frame[len(frame)-1] != '}' {
		return 0
	}
	ts, err := strconv.ParseInt(string(frame[i+6:len(frame)-1]), 10, 64)
	if err != nil {
		return 0
	}
	return ts
}
